"""common.evaluate_agent: an agent's return in the real env and in imagination; DIAMOND's env settings.

Fakes with known returns check the arithmetic (mean, standard error, human-normalised score, the
imagination's bookkeeping); one end-to-end run evaluates the converted shared DIAMOND fixture in the
real Breakout (skips only when ../shared/fixtures is absent).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.data.envs import AtariEnv, area_resize
from common.evaluate_agent import (
    human_normalized,
    imagine,
    mean_sem,
    run_real_episodes,
    scores_table,
)
from common.world_model import Step
from tests.conftest import FIXTURES, ROOT


class FakeEnv:
    """Episode `seed` lasts 5 + seed steps, each paying seed + 1: return (seed + 1) * (5 + seed).
    Frame t of an episode is filled with 10 * seed + t."""

    num_actions = 3
    frame_shape = (4, 4, 3)
    truncated = False

    def __init__(self):
        self.actions: list[int] = []

    def reset(self, seed: int) -> np.ndarray:
        self.seed, self.t = seed, 0
        return np.full(self.frame_shape, 10 * seed, dtype=np.uint8)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        self.actions.append(int(action))
        self.t += 1
        frame = np.full(self.frame_shape, 10 * self.seed + self.t, dtype=np.uint8)
        return frame, float(self.seed + 1), self.t >= 5 + self.seed


class FakePolicy:
    """Always action 1; records what it saw and how often it was reset."""

    num_actions = 3

    def __init__(self):
        self.resets = 0
        self.seen: list[torch.Tensor] = []

    def reset(self) -> None:
        self.resets += 1

    def act(self, frames: torch.Tensor) -> torch.Tensor:
        assert frames.dtype == torch.uint8 and frames.ndim == 4
        self.seen.append(frames[:, 0, 0, 0].clone())
        return torch.ones(frames.shape[0], dtype=torch.long)


class FakeWorldModel:
    """Context of 2 frames; each step pays reward 1 and ends the episode at its 4th step."""

    num_actions = 3
    frame_shape = (4, 4, 3)
    context_length = 2

    def __init__(self, policy):
        self.policy = policy

    def reset(self, frames, actions=None):
        assert frames.shape[1] == 2 and actions.shape == frames.shape[:2]
        self.t, self.b = 0, frames.shape[0]
        self.policy.reset()

    def step(self, actions):
        self.t += 1
        frames = torch.full((self.b, *self.frame_shape), 200 + self.t, dtype=torch.uint8)
        return Step(frames, torch.ones(self.b), torch.full((self.b,), self.t >= 4))


def test_real_returns_mean_and_standard_error():
    env, policy = FakeEnv(), FakePolicy()
    episodes = run_real_episodes(env, policy, episodes=4, seed=0, context=2)
    returns = [e.return_ for e in episodes]
    assert returns == [5.0, 12.0, 21.0, 32.0] and [e.length for e in episodes] == [5, 6, 7, 8]
    assert policy.resets == 4 and set(env.actions) == {1}
    mean, sem = mean_sem(returns)
    assert mean == 17.5 and sem == pytest.approx(np.std(returns, ddof=1) / 2)
    assert episodes[2].frames.shape == (2, 4, 4, 3) and episodes[2].frames[:, 0, 0, 0].tolist() == [20, 21]
    assert episodes[2].actions.tolist() == [1, 1]
    capped = run_real_episodes(env, policy, episodes=2, seed=1, max_steps=3)
    assert [e.return_ for e in capped] == [6.0, 9.0] and all(e.truncated for e in capped)
    assert mean_sem([4.0]) == (4.0, None)


def test_epsilon_replaces_actions_with_uniform_ones():
    env = FakeEnv()
    run_real_episodes(env, FakePolicy(), episodes=20, seed=0, epsilon=1.0, rng=np.random.default_rng(0))
    counts = np.bincount(env.actions, minlength=3) / len(env.actions)
    assert (np.abs(counts - 1 / 3) < 0.1).all(), counts


def test_imagination_from_the_real_starts():
    """Same starts: the policy burns in on the first context frame, acts from the last; returns stop at the
    predicted end (step 4) or at the real episode's remaining length, whichever comes first."""
    env, policy = FakeEnv(), FakePolicy()
    episodes = run_real_episodes(env, policy, episodes=3, seed=0, context=2)  # lengths 5, 6, 7
    policy.seen.clear()
    result = imagine(FakeWorldModel(policy), policy, episodes, horizon=3, batch=2)
    assert [r["steps"] for r in result] == [3, 3, 3]
    assert [r["return"] for r in result] == [3.0, 3.0, 3.0]
    # the real comparison: sign of the real rewards over the same steps (steps 1..3 of each episode)
    assert [r["real_return"] for r in result] == [3.0, 3.0, 3.0]
    first_batch = [s.tolist() for s in policy.seen[:2]]
    assert first_batch == [[0, 10], [1, 11]]  # burn-in on frame 0, then the last context frame 1
    result = imagine(FakeWorldModel(policy), policy, episodes, horizon=None, batch=8)
    assert [r["steps"] for r in result] == [4, 4, 4] and [r["ended"] for r in result] == [True] * 3
    assert [r["real_return"] for r in result] == [4.0, 4.0, 4.0]


def test_human_normalised_scores_table():
    table = scores_table()
    assert len(table) == 26 and table["Breakout"]["random"] == 1.7 and table["Breakout"]["human"] == 30.5
    assert human_normalized("Breakout", 16.1) == pytest.approx(0.5)
    assert human_normalized("Pong", -20.7) == 0.0
    assert human_normalized("Tennis", 1.0) is None  # not an Atari 100k game
    assert table["Breakout"]["diamond"] == pytest.approx(132.48)


# ----------------------------------------------------------------------------- DIAMOND's env settings
def exact_area_mean(frame: np.ndarray, size: int) -> np.ndarray:
    """Integer arithmetic: output pixel i covers input rows [i*H, (i+1)*H) in units of 1/size of a row."""
    h, w = frame.shape[:2]

    def overlaps(n: int) -> np.ndarray:
        i, j = np.arange(size)[:, None], np.arange(n)[None]
        return np.clip(np.minimum((i + 1) * n, (j + 1) * size) - np.maximum(i * n, j * size), 0, None)

    rows = np.tensordot(overlaps(h), frame.astype(np.int64), axes=(1, 0))  # (size, w, c)
    num = np.tensordot(overlaps(w), rows, axes=(1, 1)).transpose(1, 0, 2)  # (size, size, c)
    den = h * w
    return ((2 * num + den) // (2 * den)).astype(np.uint8)  # round half up


def test_area_resize_is_the_exact_area_mean():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
    assert np.array_equal(area_resize(frame, 64, 64), exact_area_mean(frame, 64))


def test_diamond_noops_and_resize_options():
    env = AtariEnv("Breakout", noop_min=3, noop_max=3, resize="area")
    env.reset(0)
    assert env._ale.getEpisodeFrameNumber() == 3
    noops = []
    diamond = AtariEnv("Breakout", noop_min=1, noop_max=30)
    for seed in range(12):
        diamond.reset(seed)
        noops.append(diamond._ale.getEpisodeFrameNumber())
    assert min(noops) >= 1 and max(noops) <= 30 and len(set(noops)) > 4, noops
    screen = env._ale.getScreenRGB()
    assert np.array_equal(env._observe([screen]), exact_area_mean(screen, 64))
    with pytest.raises(ValueError, match="atari resize='cubic': use 'box'"):
        AtariEnv("Breakout", resize="cubic")


# ----------------------------------------------------------------------------- end to end
needs_fixture = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixture folder {FIXTURES} is absent")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "common.evaluate_agent", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@needs_fixture
def test_cli_evaluates_the_fixture_agent_in_breakout(tmp_path, monkeypatch):
    from common.hub import resolve

    monkeypatch.setenv("WORLDPLAY_CACHE", str(tmp_path / "wp"))
    ckpt = resolve(FIXTURES / "diamond" / "agent.pt", game="Breakout", quiet=True)
    out = tmp_path / "eval.json"
    run = run_cli(f"checkpoint={ckpt}", "episodes=2", "max_steps=12", "horizon=3", f"out={out}", "threads=1")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Breakout: real return ") and str(out) in lines[0]
    result = json.loads(out.read_text())
    assert (
        result["game"] == "Breakout" and result["env"]["resize"] == "area" and result["env"]["noop_min"] == 1
    )
    real = result["real"]
    assert len(real["returns"]) == 2 and all(n <= 12 for n in real["lengths"])
    assert real["mean"] == pytest.approx(np.mean(real["returns"]))
    assert real["human_normalized_mean"] == pytest.approx((real["mean"] - 1.7) / (30.5 - 1.7))
    imag = result["imagination"]
    assert len(imag["returns"]) == 2 and all(s <= 3 for s in imag["steps"])
    assert math.isfinite(imag["mean"])
    rand, m = result["random_policy"], result["metrics"]
    assert len(rand["returns"]) == 2 and m["test/random_return_mean"] == pytest.approx(
        np.mean(rand["returns"])
    )
    assert m["test/return_mean"] == real["mean"] and m["test/imagined_return_mean"] == imag["mean"]
    assert "uniform random policy" in lines[0]


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("evaluate_agent", list(overrides))


@needs_fixture
def test_bad_input_is_one_line(tmp_path, monkeypatch):
    from common.evaluate_agent import evaluate
    from common.hub import resolve
    from diamond.convert import convert, to_diamond
    from tests.test_diamond_convert import random_module

    monkeypatch.setenv("WORLDPLAY_CACHE", str(tmp_path / "wp"))
    torch.save(to_diamond(random_module().state_dict()), tmp_path / "noagent.pt")
    no_agent = convert(tmp_path / "noagent.pt", tmp_path / "noagent.ckpt")
    breakout = resolve(FIXTURES / "diamond" / "agent.pt", game="Breakout", quiet=True)
    for overrides, message in (
        ((f"checkpoint={no_agent}",), "carries no agent"),
        ((), "pretrained=NAME or checkpoint=PATH is required"),
        (("pretrained=diamond/Nope",), "unknown pretrained model 'diamond/Nope'"),
        ((f"checkpoint={breakout}", "game=Pong"), "the agent has 4 actions but Atari Pong has 6"),
    ):
        with pytest.raises(ValueError, match=message) as e:
            evaluate(compose(*overrides))
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the agent stage's test
class ActionEnv(FakeEnv):
    """Episodes of 10 steps paying 1 for action 1 and 0 otherwise: policy 'always 1' returns 10, a uniform
    policy over 3 actions 10/3 on average."""

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        frame, _, _ = super().step(action)
        return frame, float(action == 1), self.t >= 10


def test_evaluate_policy_beside_a_random_policy_on_the_same_seeds():
    from common.evaluate_agent import UniformPolicy, evaluate_policy

    env, policy = ActionEnv(), FakePolicy()
    result = evaluate_policy(
        policy, FakeWorldModel(policy), env, "Breakout", episodes=6, seed=3, horizon=None
    )
    m = result["metrics"]
    # the random baseline, replayed by hand: the same seeds, a uniform policy seeded with `seed`
    rnd = UniformPolicy(3, seed=3)
    expected = [
        sum(int(rnd.act(torch.zeros(1, 4, 4, 3, dtype=torch.uint8))[0]) == 1 for _ in range(10))
        for _ in range(6)
    ]
    rmean, rsem = float(np.mean(expected)), float(np.std(expected, ddof=1) / math.sqrt(6))
    assert m["test/return_mean"] == 10.0 and m["test/return_sem"] == 0.0
    assert m["test/random_return_mean"] == pytest.approx(rmean) and m[
        "test/random_return_sem"
    ] == pytest.approx(rsem)
    assert m["test/return_diff_sem"] == pytest.approx(math.hypot(0.0, rsem))
    assert m["test/return_minus_random_z"] == pytest.approx((10.0 - rmean) / rsem)
    assert m["test/hns"] == pytest.approx((10.0 - 1.7) / (30.5 - 1.7))
    assert m["test/imagined_return_mean"] == 4.0 and m["test/imagined_real_return_mean"] == 4.0
    assert m["test/return_episodes"] == 6.0
    assert result["real"]["returns"] == [10.0] * 6 and result["random"]["returns"] == expected
    # DIAMOND's test settings: epsilon 0 (every action the policy's), episodes reset on seed + i
    assert policy.resets >= 6 and set(env.actions[:60]) == {1}
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())


def test_evaluate_policy_leaves_out_what_it_cannot_measure():
    from common.evaluate_agent import evaluate_policy

    policy = FakePolicy()
    m = evaluate_policy(policy, None, ActionEnv(), "NotAnAtariGame", episodes=1, seed=0)["metrics"]
    assert m["test/return_mean"] == 10.0 and "test/random_return_mean" in m
    for key in (
        "test/return_sem",
        "test/random_return_sem",
        "test/return_diff_sem",
        "test/hns",
        "test/imagined_return_mean",
    ):
        assert key not in m, key  # one episode: no standard error; no table row; no world model
    m = evaluate_policy(policy, None, ActionEnv(), None, episodes=2, seed=0, random_baseline=False)["metrics"]
    assert "test/random_return_mean" not in m and "test/return_diff_sem" not in m
    with pytest.raises(ValueError, match="the policy has 3 actions but the env has 4"):
        env = ActionEnv()
        env.num_actions = 4
        evaluate_policy(policy, None, env, None, episodes=1)
