"""DIAMOND's actor-critic: fixture equivalence with DIAMOND's own code, the converter keeps it, the policy.

Reads ../shared/fixtures/diamond (agent.pt, io.pt; see the fixtures README); those tests skip only when
that folder is absent. The rest builds random actor-critics.
"""

from __future__ import annotations

import pytest
import torch

from common.world_model import Policy, WorldModel, load_world_model
from diamond.actor_critic import ActorCritic, ActorCriticPolicy, infer_actor_critic_hparams
from diamond.convert import convert, export, module_from_diamond, read_diamond_state_dict
from tests.conftest import FIXTURES

DIAMOND = FIXTURES / "diamond"
ATOL = RTOL = 1e-5
needs_fixture = pytest.mark.skipif(not DIAMOND.is_dir(), reason=f"fixture folder {DIAMOND} is absent")


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in torch.load(DIAMOND / "io.pt", weights_only=True).items()}


@pytest.fixture(scope="module")
def agent_sd() -> dict[str, torch.Tensor]:
    return read_diamond_state_dict(DIAMOND / "agent.pt")


def ac_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("actor_critic."): v for k, v in sd.items() if k.startswith("actor_critic.")}


@needs_fixture
def test_infer_hparams_from_fixture_shapes(agent_sd):
    hp = infer_actor_critic_hparams(agent_sd, frame_size=64, source="agent.pt", prefix="actor_critic.")
    assert hp == {"lstm_dim": 12, "channels": [16, 16, 32, 32], "down": [1, 1, 1, 1]}


@needs_fixture
@torch.no_grad()
def test_reproduces_diamond_predict_act_value(agent_sd, io):
    """3 successive predict_act_value calls, state carried: logits, values, final (hx, cx) within 1e-5."""
    net = ActorCritic(3, 64, 4, **infer_actor_critic_hparams(ac_state(agent_sd), 64)).eval()
    net.load_state_dict(ac_state(agent_sd), strict=True)
    state = (io["ac_hx0"], io["ac_cx0"])
    logits, values = [], []
    for t in range(io["ac_obs"].shape[1]):
        lg, v, state = net(io["ac_obs"][:, t], state)
        logits.append(lg)
        values.append(v)
    got = {
        "ac_logits_act": torch.stack(logits, 1),
        "ac_val": torch.stack(values, 1),
        "ac_hx": state[0],
        "ac_cx": state[1],
    }
    for key, value in got.items():
        assert value.shape == io[key].shape, key
        diff = (value - io[key]).abs().max().item()
        print(f"{key}: max abs diff {diff:.2e}")
        torch.testing.assert_close(value, io[key], atol=ATOL, rtol=RTOL, msg=key)


@needs_fixture
@torch.no_grad()
def test_converted_fixture_carries_the_agent(tmp_path, agent_sd, io):
    """diamond.convert keeps actor_critic.*: the world model's policy reproduces the fixture's logits."""
    out = convert(DIAMOND / "agent.pt", tmp_path / "agent.ckpt")
    wm = load_world_model(out)
    assert isinstance(wm, WorldModel) and isinstance(wm.policy, Policy)
    assert wm.policy.num_actions == 4
    ours = wm.policy.net
    for key, value in ac_state(agent_sd).items():
        assert torch.equal(ours.state_dict()[key], value), key
    # the policy's frames are uint8 (B, H, W, C): the fixture's frames sit on the 8-bit grid k / 255 * 2 - 1
    frames = io["ac_obs"][:, 0].add(1).div(2).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)
    wm.policy.reset()
    wm.policy.act(frames)
    lg, _, _ = ours(io["ac_obs"][:, 0], None)
    torch.testing.assert_close(wm.policy.last_logits, lg, atol=ATOL, rtol=RTOL)
    # and the export writes them back in DIAMOND's layout
    back = torch.load(export(out, tmp_path / "back.pt"), weights_only=True)
    assert set(back) == set(agent_sd)
    for key in back:
        assert torch.equal(back[key], agent_sd[key]), key


def tiny_net(num_actions: int = 3, seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    net = ActorCritic(3, 16, num_actions, lstm_dim=8, channels=[4, 8], down=[1, 1]).eval()
    with torch.no_grad():  # DIAMOND zero-inits the heads: randomise so the logits depend on the frames
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return net


@torch.no_grad()
def test_policy_state_and_reset():
    """act() carries the LSTM state; reset() zeroes it, so the same frames give the same logits again."""
    net = tiny_net()
    policy = ActorCriticPolicy(net, generator=torch.Generator().manual_seed(0))
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    first = []
    for t in range(3):
        a = policy.act(frames[:, t])
        assert a.dtype == torch.long and a.shape == (2,) and ((a >= 0) & (a < 3)).all()
        first.append(policy.last_logits.clone())
    assert not torch.allclose(first[0], first[2])  # the state moved on
    policy.reset()
    policy.act(frames[:, 0])
    torch.testing.assert_close(policy.last_logits, first[0])
    with pytest.raises(ValueError, match=r"act: frames must be \(B, 16, 16, 3\) uint8"):
        policy.act(frames[:, 0, :8])
    with pytest.raises(ValueError, match="batch of 1 frames, but the policy's state holds 2"):
        policy.act(frames[:1, 0])


@torch.no_grad()
def test_policy_samples_from_the_softmax_and_greedy_takes_the_argmax():
    net = tiny_net()
    frames = torch.randint(0, 256, (1, 16, 16, 3), dtype=torch.uint8).expand(4000, -1, -1, -1)
    policy = ActorCriticPolicy(net, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(policy.act(frames), minlength=3).float() / 4000
    probs = policy.last_logits[0].softmax(-1)
    assert (counts - probs).abs().max() < 0.03, (counts, probs)
    greedy = ActorCriticPolicy(net, greedy=True)
    assert (greedy.act(frames) == probs.argmax()).all()


@needs_fixture
def test_partial_actor_critic_keys_are_a_one_line_error(tmp_path, agent_sd):
    sd = dict(agent_sd)
    del sd["actor_critic.lstm.bias_hh"]
    path = tmp_path / "a.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"a\.pt: missing key 'actor_critic\.lstm\.bias_hh'"):
        module_from_diamond(read_diamond_state_dict(path), str(path))
    sd = dict(agent_sd)
    sd["actor_critic.actor_linear.weight"] = torch.zeros(6, 12)
    sd["actor_critic.actor_linear.bias"] = torch.zeros(6)
    torch.save(sd, path)
    with pytest.raises(ValueError, match="actor_critic.actor_linear.weight' has 6 actions, denoiser has 4"):
        module_from_diamond(read_diamond_state_dict(path), str(path))


def test_world_model_without_agent_has_no_policy(tmp_path):
    from diamond.convert import to_diamond
    from tests.test_diamond_convert import random_module

    path = tmp_path / "agent.pt"
    torch.save(to_diamond(random_module().state_dict()), path)
    wm = load_world_model(convert(path, tmp_path / "w.ckpt"))
    assert wm.policy is None
