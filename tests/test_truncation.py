"""A time limit ends an episode as a truncation, never a terminal, in every source and in the collector.

`terminals` is what DIAMOND's end head and `end_f1` learn from: only the game's own rules (a death, a
level complete, game over) may set it. Procgen's time limit (1000 steps in CoinRun), ALE's
`max_num_frames_per_episode`, Crafter's `length` and the collector's `data.max_steps` are truncations.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.data.collect import Policy, collect
from common.data.envs import make_env
from common.data.shards import MANIFEST, ShardDataset
from tests.conftest import ROOT


def _data_cfg(source: str, **over):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        data = compose("collect", overrides=[f"data={source}"]).data
    data.progress, data.splits = False, {"train": 1.0}
    for key, value in over.items():
        data[key] = value
    return data


def _run(env, seed: int, policy=None, limit: int = 100_000) -> tuple[int, float, bool]:
    """Step until the episode ends: (steps, return, env.truncated at the end)."""
    env.reset(seed)
    steps, total = 0, 0.0
    while steps < limit:
        _, reward, done = env.step(policy() if policy else 0)
        steps, total = steps + 1, total + reward
        if done:
            return steps, total, env.truncated
    raise AssertionError(f"seed {seed}: no end within {limit} steps")


def test_procgen_time_limit_is_a_truncation():
    env = make_env("procgen", "coinrun")
    noop = env.action_meanings.index("NOOP")
    steps, total, truncated = _run(env, 0, lambda: noop)
    assert (steps, total) == (1000, 0.0), "CoinRun's own time limit is 1000 steps"
    assert truncated, "procgen ended the level at its time limit: a truncation"
    assert env.time_limit == 1000


@pytest.mark.parametrize("game, limit", [("maze", 500), ("bigfish", 6000)])
def test_procgen_time_limit_is_read_from_the_game(game, limit):
    assert make_env("procgen", game).time_limit == limit


def test_procgen_death_and_level_complete_are_terminals():
    env = make_env("procgen", "coinrun")
    # seeds whose random-policy episode ends by the coin (3) and by a death (4), measured
    steps, total, truncated = _run(env, 3, Policy("random", env.num_actions, 3))
    assert (steps, total, truncated) == (628, 10.0, False)
    steps, total, truncated = _run(env, 4, Policy("random", env.num_actions, 4))
    assert (steps, total, truncated) == (695, 0.0, False)


def test_atari_frame_limit_is_a_truncation_and_game_over_a_terminal():
    limited = make_env("atari", "Breakout", max_num_frames_per_episode=200, noop_max=0)
    steps, _, truncated = _run(limited, 0, Policy("random", limited.num_actions, 0))
    assert truncated and steps == 50, "200 ALE frames at frame-skip 4"
    env = make_env("atari", "Breakout")
    steps, _, truncated = _run(env, 0, Policy("random", env.num_actions, 0))
    assert not truncated and steps == 208, "Breakout's game over (all lives lost) is a terminal"


def test_crafter_length_is_a_truncation_and_death_a_terminal():
    env = make_env("crafter", length=20)
    env.reset(0)  # one world (a reset takes seconds): a death first, then the length limit
    health = env._env._player.health
    env._env._player.health = 0  # a death, by Crafter's own rule
    _, _, done = env.step(0)
    assert done and not env.truncated
    env._env._player.health = health
    ends = [env.step(0)[2] for _ in range(19)]
    assert ends == [False] * 18 + [True] and env.truncated, "Crafter's length (20 steps) is a truncation"


def test_collected_procgen_time_limit_ends_are_not_terminals(tmp_path):
    """The issue's measurement: with data.max_steps 1000 (the default) the time-limit episode ended
    terminal=True, with 999 terminal=False. Seeds 2, 3, 4: time limit, coin, death."""
    data = _data_cfg("procgen", episodes=3, seed_start=2, max_steps=1000, num_envs=1)
    root = collect(data, tmp_path, progress=False)
    ds = ShardDataset(root)
    ends = {}
    for ref in ds.episodes():
        ep = ds.read(ref)
        assert not ep["terminals"][:-1].any()
        ends[ref.seed] = (ref.length, bool(ep["terminals"][-1]))
    assert ends == {2: (1000, False), 3: (628, True), 4: (695, True)}
    assert json.loads((root / MANIFEST).read_text())["format_version"] == 2


def test_collector_cap_is_a_truncation(tmp_path):
    data = _data_cfg("atari", episodes=2, max_steps=30, num_envs=1)
    ds = ShardDataset(collect(data, tmp_path, progress=False))
    for ref in ds.episodes():
        assert ref.length == 30 and not np.any(ds.read(ref)["terminals"])


def _to_format_1(root) -> None:
    """Rewrite a collected dataset as format 1 wrote it (version attributes; checksums updated)."""
    import h5py

    from common.data.shards import sha256, write_json_atomic

    manifest = json.loads((root / MANIFEST).read_text())
    for shard in manifest["shards"]:
        path = root / shard["file"]
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = 1
        shard["bytes"], shard["sha256"] = path.stat().st_size, sha256(path)
    manifest["format_version"] = 1
    write_json_atomic(root / MANIFEST, manifest)


def test_complete_format_1_dataset_is_read_and_never_extended(tmp_path, caplog):
    import logging

    data = _data_cfg("procgen", episodes=2, max_steps=10, num_envs=1)
    root = collect(data, tmp_path, progress=False)
    _to_format_1(root)
    collect(data, tmp_path, progress=False)  # complete: train.py's prepare_data goes on to read it
    with caplog.at_level(logging.WARNING):
        assert len(ShardDataset(root).episodes()) == 2
    assert [r.getMessage() for r in caplog.records if "time limit" in r.getMessage()]
    data.episodes = 3
    with pytest.raises(ValueError, match=r"format_version 1 dataset .* delete .*procgen_coinrun") as e:
        collect(data, tmp_path, progress=False)
    assert "\n" not in str(e.value)
    assert len(ShardDataset(root).episodes()) == 2, "nothing collected is lost"
