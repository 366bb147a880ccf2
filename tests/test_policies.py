"""Collection policies (common/data/policies.py) and how a dataset records them: `sticky_random` holds each
uniformly drawn action for a uniform number of steps in [sticky.min, sticky.max], reproducibly from the
episode seed; `random` / `random_repeat` draw exactly as before (datasets resume and recollect the same);
shards store the policy with its parameters and the procgen options they were collected with."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.data.collect import collect
from common.data.envs import make_env
from common.data.policies import Policy, make_policy
from common.data.shards import MANIFEST, ShardDataset, check_shard
from tests.test_data_collect import _data_cfg


def runs(actions: list[int]) -> list[int]:
    """Lengths of the runs of equal consecutive actions."""
    lengths, n = [], 1
    for a, b in zip(actions, actions[1:]):
        if a == b:
            n += 1
        else:
            lengths.append(n)
            n = 1
    return lengths + [n]


def test_sticky_random_holds_each_action_for_a_length_in_min_max():
    policy = make_policy("sticky_random", num_actions=10**6, seed=3, sticky={"min": 3, "max": 7})
    actions = [policy() for _ in range(20000)]
    lengths = runs(actions)[:-1]  # the last run is cut by the end; 10**6 actions: no two draws alike
    assert set(lengths) == {3, 4, 5, 6, 7}  # every length of [min, max], no other
    counts = np.bincount(lengths)[3:]
    assert counts.min() > 0.8 * counts.mean()  # uniform over the lengths
    again = make_policy("sticky_random", num_actions=10**6, seed=3, sticky={"min": 3, "max": 7})
    assert [again() for _ in range(20000)] == actions  # reproducible from the seed
    other = make_policy("sticky_random", num_actions=10**6, seed=4, sticky={"min": 3, "max": 7})
    assert [other() for _ in range(100)] != actions[:100]


def test_sticky_random_with_min_equal_max_is_a_fixed_hold():
    policy = make_policy("sticky_random", num_actions=10**6, seed=0, sticky={"min": 4, "max": 4})
    assert set(runs([policy() for _ in range(400)])) == {4}


def test_random_and_random_repeat_draw_as_before():
    """The stream a dataset was collected with: numpy default_rng([seed, 7919]).integers(n) per draw."""
    rng = np.random.default_rng([5, 7919])
    expected = [int(rng.integers(15)) for _ in range(50)]
    policy = make_policy("random", num_actions=15, seed=5)
    assert [policy() for _ in range(50)] == expected
    policy = make_policy("random_repeat", num_actions=15, seed=5, action_repeat=3)
    assert [policy() for _ in range(30)] == [a for a in expected[:10] for _ in range(3)]


def test_bad_policy_settings_are_one_line_errors():
    with pytest.raises(
        ValueError, match=r"data.policy: unknown policy 'sticky' \(random, random_repeat, sticky_random\)"
    ):
        make_policy("sticky", num_actions=4, seed=0)
    with pytest.raises(ValueError, match=r"data.sticky: min=5 > max=2"):
        make_policy("sticky_random", num_actions=4, seed=0, sticky={"min": 5, "max": 2})
    with pytest.raises(ValueError, match=r"data.sticky: min=0"):
        make_policy("sticky_random", num_actions=4, seed=0, sticky={"min": 0, "max": 2})
    with pytest.raises(ValueError, match=r"data.sticky needs min and max"):
        make_policy("sticky_random", num_actions=4, seed=0, sticky=None)
    assert Policy.params("random_repeat", action_repeat=4, sticky={"min": 1, "max": 2}) == {
        "action_repeat": 4
    }
    assert Policy.params("sticky_random", action_repeat=1, sticky={"min": 1, "max": 2}) == {
        "min": 1,
        "max": 2,
    }
    assert Policy.params("random", action_repeat=4, sticky={"min": 1, "max": 2}) == {}


def test_shards_record_the_policy_and_procgen_options(tmp_path):
    data = _data_cfg("procgen", episodes=3, max_steps=40, policy="sticky_random")
    data.sticky = {"min": 5, "max": 9}
    data.env = {"distribution_mode": "easy", "use_backgrounds": False, "center_agent": False}
    root = collect(data, tmp_path, progress=False)
    manifest = json.loads((root / MANIFEST).read_text())
    for shard in manifest["shards"]:
        attrs = check_shard(root / shard["file"])
        assert attrs["policy"] == "sticky_random" and json.loads(attrs["policy_params"]) == {
            "min": 5,
            "max": 9,
        }
        assert json.loads(attrs["env_options"]) == {
            "distribution_mode": "easy", "use_backgrounds": False, "center_agent": False,
            "restrict_themes": False, "use_monochrome_assets": False, "paint_vel_info": False,
            "use_generated_assets": False,
        }  # fmt: skip
    assert manifest["policy_params"] == {"min": 5, "max": 9}
    assert manifest["collection"]["sticky"] == {"min": 5, "max": 9}
    ds = ShardDataset(root)
    for ref in ds.episodes():  # the recorded actions are the policy's for that episode seed
        policy = make_policy("sticky_random", 15, ref.seed, sticky={"min": 5, "max": 9})
        assert ds.read(ref)["actions"].tolist() == [policy() for _ in range(ref.length)]
    data.sticky = {"min": 5, "max": 12}  # another hold distribution is another dataset
    with pytest.raises(ValueError, match=r"collected with data.sticky=\{'min': 5, 'max': 9\}"):
        collect(data, tmp_path, progress=False)


def test_random_policy_datasets_ignore_the_sticky_settings(tmp_path):
    """sticky.{min,max} say nothing about a `random` dataset: changing them does not refuse it."""
    data = _data_cfg("procgen", episodes=2, max_steps=10)
    collect(data, tmp_path, progress=False)
    data.sticky = {"min": 2, "max": 3}
    collect(data, tmp_path, progress=False)


def test_procgen_options_reach_the_game_and_unknown_ones_are_refused():
    plain, mono = make_env("procgen", "coinrun"), make_env("procgen", "coinrun", use_monochrome_assets=True)
    try:
        assert not np.array_equal(plain.reset(7), mono.reset(7))  # the option changes what is drawn
        assert mono.options["use_monochrome_assets"] is True and plain.options["distribution_mode"] == "hard"
    finally:
        plain.close(), mono.close()
    with pytest.raises(
        ValueError, match=r"data.env.use_background: not a procgen option \(did you mean use_backgrounds\?"
    ):
        make_env("procgen", "coinrun", use_background=False)
    with pytest.raises(ValueError, match=r"data.env.distribution_mode='exploration'"):
        make_env("procgen", "coinrun", distribution_mode="exploration")
