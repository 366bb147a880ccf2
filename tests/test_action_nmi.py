"""Action NMI: does a latent action model find the game's controls? NMI = 1 for a bijective pairing, about
0 for independent ones and for the shuffled pairing; CoinRun's 15 procgen actions grouped by what they do."""

from __future__ import annotations

import pytest
import torch

from common.action_nmi import PROCGEN_ACTIONS, ActionProbe, control_groups


def test_bijective_pairing_scores_one_and_its_shuffle_about_zero():
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(6, (6000,), generator=g)
    relabel = torch.tensor([3, 0, 5, 1, 4, 2])  # latent action = a fixed permutation of the real one
    probe = ActionProbe(num_latent=6, env=None, num_env_actions=6)
    probe.add(relabel[actions].view(100, 60), actions.view(100, 60))
    out = probe.compute()
    assert out["nmi"] == pytest.approx(1.0, abs=1e-6)
    assert 0 <= out["nmi_shuffled"] < 0.01
    assert out["nmi_p"] == pytest.approx(1 / 101)  # no permutation reaches it
    assert out["transitions"] == 6000 and torch.tensor(out["table"]).sum() == 6000
    assert out["best_control"] == ["1", "3", "5", "0", "4", "2"]  # the inverse permutation
    assert out["best_share"] == [1.0] * 6 and all(4 < lift < 8 for lift in out["best_lift"])  # ~1 / P(c)
    assert probe.compute() == out, "the shuffled pairing is seeded"


def test_independent_pairing_scores_about_zero():
    g = torch.Generator().manual_seed(1)
    probe = ActionProbe(num_latent=6, env=None, num_env_actions=15)
    probe.add(torch.randint(6, (20000,), generator=g), torch.randint(15, (20000,), generator=g))
    out = probe.compute()
    assert out["nmi"] < 0.01 and out["nmi_shuffled"] < 0.01
    assert out["nmi_p"] > 0.05  # independent: as high as chance


def test_coinrun_actions_grouped_by_their_effect():
    names, group = control_groups("procgen:coinrun", 15)
    assert names == ["NOOP", "LEFT", "RIGHT", "JUMP", "LEFT+JUMP", "RIGHT+JUMP"]
    by_name = {a: names[group[i]] for i, a in enumerate(PROCGEN_ACTIONS)}
    assert by_name == {
        "LEFT_DOWN": "LEFT", "LEFT": "LEFT", "LEFT_UP": "LEFT+JUMP", "DOWN": "NOOP", "NOOP": "NOOP",
        "UP": "JUMP", "RIGHT_DOWN": "RIGHT", "RIGHT": "RIGHT", "RIGHT_UP": "RIGHT+JUMP",
        "D": "NOOP", "A": "NOOP", "W": "NOOP", "S": "NOOP", "Q": "NOOP", "E": "NOOP",
    }  # fmt: skip
    # a LAM that found CoinRun's controls (aliases land on one latent) scores 1 on the grouped actions
    actions = torch.arange(15).repeat(20)
    probe = ActionProbe(num_latent=6, env="procgen:coinrun", num_env_actions=15)
    probe.add(torch.tensor(group)[actions], actions)
    assert probe.compute()["nmi"] == pytest.approx(1.0, abs=1e-6)
    # other envs: every action its own group
    assert control_groups("atari:Breakout", 4) == (["0", "1", "2", "3"], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="procgen:coinrun has 15 actions, got 4"):
        control_groups("procgen:coinrun", 4)


def test_procgen_action_names_are_the_adapters():
    from common.data.envs import make_env

    env = make_env("procgen", "coinrun")
    try:
        assert tuple(env.action_meanings) == PROCGEN_ACTIONS
    finally:
        env.close()


def test_probe_sums_over_ranks_and_handles_no_transitions():
    probe = ActionProbe(num_latent=2, env=None, num_env_actions=2)
    assert probe.compute() is None  # nothing seen: no metric
    probe.add(torch.tensor([0, 1]), torch.tensor([0, 1]))
    out = probe.compute(reduce=lambda t: 2 * t)  # a stand-in for the sum over two ranks
    assert out["transitions"] == 4 and out["table"] == [[2, 0], [0, 2]]


def test_best_control_is_the_most_over_represented_not_the_most_frequent():
    """Latent 0 sees NOOP 60 times and RIGHT 40 times, latent 1 NOOP 100 times: RIGHT is 40% of latent 0
    but 20% of all transitions, NOOP 60% of latent 0 and 80% overall. Latent 0 matches RIGHT (lift 2)."""
    probe = ActionProbe(num_latent=2, env="procgen:coinrun", num_env_actions=15)
    noop, right = PROCGEN_ACTIONS.index("NOOP"), PROCGEN_ACTIONS.index("RIGHT")
    probe.add(torch.tensor([0] * 100 + [1] * 100), torch.tensor([noop] * 60 + [right] * 40 + [noop] * 100))
    out = probe.compute()
    assert out["best_control"] == ["RIGHT", "NOOP"]
    assert out["best_share"] == pytest.approx([0.4, 1.0]) and out["best_lift"] == pytest.approx([2.0, 1.25])


def test_play_legend_names_the_control_each_latent_action_matches(tmp_path):
    """A Genie checkpoint's keymap shows, beside each latent key, the control its run's probe matched."""
    import json

    from common.action_nmi import latent_legend
    from common.play.keymaps import keymap_for

    ckpt = tmp_path / "checkpoints" / "dynamics" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    assert latent_legend(ckpt, 3) is None  # no test record yet
    record = {"best_control": ["RIGHT", None, "JUMP"], "best_lift": [2.25, None, 3.0]}
    (tmp_path / "test_records.json").write_text(json.dumps({"test/action_nmi": record}))
    assert latent_legend(ckpt, 3) == ["RIGHT 2.2x", None, "JUMP 3.0x"]
    assert latent_legend(ckpt, 6) is None  # another model's record
    keymap = keymap_for("procgen", None, 3, latent=True, latent_matches=latent_legend(ckpt, 3))
    assert keymap.legend == [("1", "latent 0 ~ RIGHT 2.2x"), ("2", "latent 1 (never inferred)"),
                             ("3", "latent 2 ~ JUMP 3.0x")]  # fmt: skip
    assert keymap.action(["3"]) == 2
