"""Env adapters are deterministic from (seed, actions) when they say so; play's replay lands on the context.

Crafter iterates each chunk's creatures in a `set` (ordered by object identity) when it despawns one, so
two runs of one world with the same actions diverged (measured before the fix: seeds 0 and 4 at frames
11 and 22, 22 and 44 pixels off at frames 16 and 32); the adapter iterates them in insertion order.
Crafter generates a world in ~3 s on this CPU, so these tests reset it as few times as they can.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from common.data.envs import SOURCES, Env, make_env
from common.play.context import Context, replay

GAMES = {"procgen": "coinrun", "atari": "Breakout", "crafter": None}
CRAFTER_SEEDS = (0, 4)  # both diverged within 32 steps before the fix


def _random_run(env: Env, seed: int, steps: int, repeat: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """-> frames uint8 (T+1, H, W, C), actions int64 (T,): a sticky random policy from `seed`, until done."""
    rng = np.random.default_rng([seed, 1])
    frames, actions = [env.reset(seed)], []
    for t in range(steps):
        if t % repeat == 0:
            action = int(rng.integers(env.num_actions))
        frame, _, done = env.step(action)
        actions.append(action)
        frames.append(frame)
        if done:
            break
    return np.stack(frames), np.array(actions, dtype=np.int64)


def _replay_all(env: Env, seed: int, actions: np.ndarray) -> np.ndarray:
    frames = [env.reset(seed)]
    frames += [env.step(int(a))[0] for a in actions]
    return np.stack(frames)


def _differing_pixels(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Pixels (any channel) that differ, per frame: a, b uint8 (T, H, W, C)."""
    return (a != b).any(-1).reshape(len(a), -1).sum(1).tolist()


def _assert_same_frames(recorded: np.ndarray, replayed: np.ndarray) -> None:
    diff = _differing_pixels(recorded, replayed)
    first = next((t for t, n in enumerate(diff) if n), None)
    assert first is None, (
        f"frame {first} of {len(diff)} differs first ({diff[first]} pixels; last {diff[-1]})"
    )


@pytest.fixture(scope="module")
def crafter_runs() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """seed -> (frames, actions) of a 96-step sticky random Crafter episode, recorded once."""
    env = make_env("crafter")
    return {seed: _random_run(env, seed, 96) for seed in CRAFTER_SEEDS}


def test_every_adapter_declares_determinism():
    for source in SOURCES:
        env = make_env(source, GAMES[source])
        assert isinstance(env.deterministic, bool), source
        env.close()


@pytest.mark.parametrize("seed", CRAFTER_SEEDS)
def test_crafter_replays_exactly(crafter_runs, seed):
    """The recorded episode, replayed in a fresh env (other objects at other addresses), frame by frame."""
    recorded, actions = crafter_runs[seed]
    assert len(actions) >= 64
    junk = [object() for _ in range(4096 + seed)]  # later creatures get other identities (set order)
    env = make_env("crafter")
    assert env.deterministic
    _assert_same_frames(recorded, _replay_all(env, seed, actions))
    del junk


@pytest.mark.parametrize(("source", "options"), [("procgen", {}), ("atari", {"sticky_actions": 0.25})])
def test_deterministic_sources_replay_exactly(source, options):
    env = make_env(source, GAMES[source], **options)
    assert env.deterministic
    recorded, actions = _random_run(env, 3, 64)
    _assert_same_frames(recorded, _replay_all(env, 3, actions))


def test_play_replay_lands_on_the_crafter_context(crafter_runs):
    """`replay` (play's path onto the real env) reaches the last context frame: 16 and 32 context frames
    (before the fix: 22 and 44 pixels off), and says nothing."""
    env = make_env("crafter")
    for seed, t in zip(CRAFTER_SEEDS, (16, 32)):
        frames, actions = crafter_runs[seed]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            frame = replay(env, Context(frames[:t], actions[:t], seed))
        assert _differing_pixels(frame[None], frames[t - 1][None]) == [0]


def test_replay_says_when_the_env_misses_the_context(crafter_runs):
    frames, actions = crafter_runs[0]
    frames = frames[:8].copy()
    frames[7, :2, :3] = 255 - frames[7, :2, :3]  # 6 pixels the real env will not show
    with pytest.warns(UserWarning, match=r"^crafter: replaying seed 0 over 8 context frames .* in 6 pixels"):
        frame = replay(make_env("crafter"), Context(frames, actions[:8], 0))
    assert _differing_pixels(frame[None], frames[7:]) == [6]
