"""`common.bench play` times a world model's frame alone and with its agent acting on it (rows taking turns),
and builds the published-size DIAMOND with DIAMOND's published-size agent (random weights)."""

from __future__ import annotations

import pytest

from common import bench
from tests.test_play_fakes import FakeWorldModel


class CountingFake(FakeWorldModel):
    def __init__(self):
        super().__init__(agent=True)
        self.log: list[str] = []  # "act" / "step", in call order

    def step(self, actions):
        self.log.append("step")
        return super().step(actions)


def test_agent_rows_take_turns_and_time_act_plus_step():
    fake = CountingFake()
    act = fake.policy.act

    def counted(frames):
        fake.log.append("act")
        return act(frames)

    fake.policy.act = counted
    rows = bench.play_rows("fake", "fake_tiny", fake, frames=2, warmup=1, context=4, rounds=2)
    assert [r["agent"] for r in rows] == [False, True]
    for r in rows:
        assert tuple(r) == bench.PLAY_KEYS and r["ms_per_frame"] > 0
    # per round: 3 plain steps, then 3 frames on which the agent acts on the frame on show, then steps
    turn = ["step"] * 3 + ["act", "step"] * 3
    assert fake.log == turn * 2
    assert [r["agent"] for r in bench.play_rows("fake", "x", FakeWorldModel(), frames=1, warmup=0)] == [False]


@pytest.mark.parametrize("experiment", ["diamond_breakout"])
def test_published_size_diamond_gets_diamonds_published_agent(experiment, tmp_path):
    modules = bench.build_modules(bench.compose_experiment(experiment), tmp_path, agent=True)
    module = modules["world_model"]
    policy = module.world_model().policy
    assert policy is not None and policy.net.lstm_dim == 512  # config/agent/default.yaml actor_critic
    assert [b.f[2].out_channels for b in policy.net.encoder.encoder if hasattr(b, "f")] == [32, 32, 64, 64]
    plain = bench.build_modules(bench.compose_experiment(experiment), tmp_path / "plain")
    assert plain["world_model"].world_model().policy is None  # the train bench builds no agent
