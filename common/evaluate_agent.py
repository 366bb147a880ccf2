"""A checkpoint's agent: its return in the real environment and in its world model's imagination.

    python -m common.evaluate_agent pretrained=diamond/Breakout episodes=100     # DIAMOND's final evaluation
    python -m common.evaluate_agent checkpoint=PATH episodes=10 horizon=500 out=eval.json

Real episodes run the agent (the checkpoint's `WorldModel.policy`) in the environment the checkpoint
names, with its settings: for `diamond/<Game>`, DIAMOND's (common/hub.py DIAMOND_ATARI_ENV: frame skip
4 with a max over the last 2 frames, 1..30 no-ops, cv2-INTER_AREA 64x64 frames, minimal action set, no
sticky actions, no end on a life loss, 108,000 frames at most) and its test policy: actions sampled
from the softmax, epsilon 0 (config/trainer.yaml collection.test). Episode i resets the env on
`seed + i`. The return is mean ± standard error (sample std / sqrt(n)) over the episodes, and the
human-normalised score (return - random) / (human - random) with the Atari 100k table of
`common/atari_scores.csv` (random and human scores as IRIS / DIAMOND / SPR use them; DIAMOND's
published mean beside them).

Imagination starts from the same episodes: the world model is reset on each real episode's first
`context_length` frames (and the actions taken there), the agent burns its recurrent state in on those
frames and then acts on generated frames for up to `horizon` steps, until the world model predicts an
end, or for as many steps as the real episode had left. The imagined return sums the predicted rewards,
which are reward signs (-1, 0, 1) for DIAMOND, so the real return over the very same steps is given in
signs beside it. A uniformly random policy (`UniformPolicy`) plays the same seeds as the baseline
(`random_baseline=false` skips it). Writes JSON and prints a one-line summary.

`evaluate_policy` is the whole evaluation as one call, for any Policy, world model and env (the agent
stage's test calls it): it returns the metrics to log (`test/return_mean`, `test/return_sem`, `test/hns`,
`test/imagined_return_mean`, `test/random_return_mean`, `test/random_return_sem`, `test/return_diff_sem`).
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.frames import frame_batch

SCORES = Path(__file__).with_name("atari_scores.csv")


@dataclass
class Episode:
    """One real episode: its seed, rewards (T,), whether a step limit cut it, and its first frames
    uint8 (n, H, W, C) with the actions int64 (n,) taken at them (n = the `context` asked for, fewer
    when the episode was shorter)."""

    seed: int
    rewards: np.ndarray
    truncated: bool
    frames: np.ndarray
    actions: np.ndarray

    @property
    def return_(self) -> float:
        return float(self.rewards.sum())

    @property
    def length(self) -> int:
        return len(self.rewards)


@torch.no_grad()
def run_real_episodes(
    env,
    policy,
    episodes: int,
    seed: int = 0,
    epsilon: float = 0.0,
    max_steps: int | None = None,
    context: int = 0,
    rng: np.random.Generator | None = None,
) -> list[Episode]:
    """Play `episodes` episodes of `env` (a common.data.envs adapter) with `policy` (a Policy).

    Episode i resets on seed + i and the policy's state; each step the policy acts on the current frame
    and, with probability epsilon, a uniform action replaces its choice (DIAMOND's epsilon-greedy: the
    policy's state advances either way). An episode ends when the env says done or after `max_steps`.
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        frame = env.reset(seed + i)
        policy.reset()
        rewards, frames, actions, done, t = [], [], [], False, 0
        while not done and (max_steps is None or t < max_steps):
            action = int(policy.act(frame_batch(frame))[0])
            if epsilon > 0 and rng.random() < epsilon:
                action = int(rng.integers(env.num_actions))
            if t < context:
                frames.append(frame)
                actions.append(action)
            frame, reward, done = env.step(action)
            rewards.append(reward)
            t += 1
        truncated = not done or bool(env.truncated)
        shape = (0, *env.frame_shape)
        out.append(
            Episode(
                seed + i,
                np.asarray(rewards, dtype=np.float64),
                truncated,
                np.stack(frames) if frames else np.zeros(shape, np.uint8),
                np.asarray(actions, dtype=np.int64),
            )
        )
    return out


@torch.no_grad()
def imagine(
    world_model, policy, episodes: list[Episode], horizon: int | None, batch: int = 8
) -> list[dict | None]:
    """Run `policy` in `world_model` from each real episode's start (see the module docstring).

    Returns per episode {steps, return, ended, real_return} (returns in the world model's reward units,
    real_return the sum of sign(real reward) over the same steps), or None for an episode too short to
    give the world model its context plus one step.
    """
    n = world_model.context_length
    results: list[dict | None] = [None] * len(episodes)
    usable = [i for i, e in enumerate(episodes) if len(e.frames) >= n and e.length >= n]
    for c in range(0, len(usable), batch):
        chunk = usable[c : c + batch]
        frames = torch.from_numpy(np.stack([episodes[i].frames[:n] for i in chunk]))  # (B, n, H, W, C)
        actions = torch.from_numpy(np.stack([episodes[i].actions[:n] for i in chunk]))  # (B, n)
        left = [episodes[i].length - (n - 1) for i in chunk]  # real steps from the last context frame
        limit = torch.tensor([h if horizon is None else min(horizon, h) for h in left])
        world_model.reset(frames, actions)  # resets its policy too
        policy.reset()
        for t in range(n - 1):  # burn the agent's state in on the context, as in the real episode
            policy.act(frames[:, t])
        obs = frames[:, n - 1]
        b = len(chunk)
        ret, steps = torch.zeros(b, dtype=torch.float64), torch.zeros(b, dtype=torch.long)
        alive, ended = torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)
        for k in range(int(limit.max())):
            step = world_model.step(policy.act(obs))
            if step.reward is None:
                raise ValueError("this world model predicts no rewards: no imagined return to report")
            live = alive & (k < limit)
            done = step.done.cpu().bool() if step.done is not None else torch.zeros(b, dtype=torch.bool)
            ret += step.reward.cpu().double() * live
            steps += live.long()
            ended |= live & done
            alive = live & ~done
            obs = step.frames
            if not alive.any():
                break
        for j, i in enumerate(chunk):
            real = episodes[i].rewards[n - 1 : n - 1 + int(steps[j])]
            results[i] = {
                "steps": int(steps[j]),
                "return": float(ret[j]),
                "ended": bool(ended[j]),
                "real_return": float(np.sign(real).sum()),
            }
    return results


class UniformPolicy:
    """A uniformly random Policy (common/world_model.py), the real-game baseline: actions from its own
    generator seeded with `seed`, so a baseline is the same whenever it is run."""

    def __init__(self, num_actions: int, seed: int = 0) -> None:
        self.num_actions = num_actions
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        pass

    def act(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (B, H, W, C) -> long (B,) uniform in [0, num_actions)."""
        return torch.randint(self.num_actions, (frames.shape[0],), generator=self.generator)


def evaluate_policy(
    policy,
    world_model,
    env,
    game: str | None,
    episodes: int,
    seed: int = 0,
    epsilon: float = 0.0,
    max_steps: int | None = None,
    horizon: int | None = None,
    batch: int = 8,
    random_baseline: bool = True,
    prefix: str = "test",
) -> dict[str, Any]:
    """A policy's return in the real game beside a uniformly random policy's, and in the world model.

    policy: a Policy; world_model: a WorldModel predicting rewards (imagination from the same starts) or
    None; env: a common.data.envs adapter built with the settings to test under (DIAMOND's:
    common.hub.DIAMOND_ATARI_ENV, whose time limit is its episode limit), left open; game: the Atari name
    of the human-normalised score (None, or a game outside common/atari_scores.csv: no score).
    `episodes` real episodes on env seeds seed .. seed + episodes - 1 with `epsilon` (DIAMOND's test: 0),
    then (`random_baseline`) the same episodes with UniformPolicy(seed).

    Returns {"metrics", "real", "random", "imagination"}: metrics are floats to log, `{prefix}/`
    return_mean, return_sem, hns, imagined_return_mean, imagined_real_return_mean (the real rewards' signs
    over the imagined steps), random_return_mean, random_return_sem, return_diff_sem (sqrt(sem^2 +
    random sem^2): the standard error of the difference of the two means, independent episodes),
    return_minus_random_z and return_episodes; a value that is undefined (one episode: no standard
    error) is left out, not logged as NaN. The others hold the per-episode values (JSON).
    Raises ValueError (one line) when the policy's action count differs from the env's.
    """
    if policy.num_actions != env.num_actions:
        raise ValueError(
            f"the policy has {policy.num_actions} actions but the env has {env.num_actions}: "
            f"evaluate in the game the policy was trained on"
        )
    context = 0 if world_model is None else world_model.context_length
    start = time.perf_counter()
    played = run_real_episodes(env, policy, episodes, seed, epsilon, max_steps, context)
    real = summary([e.return_ for e in played], time.perf_counter() - start)
    real.update(lengths=[e.length for e in played], truncated=[e.truncated for e in played])
    p = f"{prefix}/"
    metrics: dict[str, float] = {f"{p}return_mean": real["mean"], f"{p}return_episodes": float(episodes)}
    if real["sem"] is not None:
        metrics[f"{p}return_sem"] = real["sem"]
    hns = None if game is None else human_normalized(game, real["mean"])
    if hns is not None:
        metrics[f"{p}hns"] = hns
    rand = None
    if random_baseline:
        start = time.perf_counter()
        baseline = run_real_episodes(
            env, UniformPolicy(env.num_actions, seed), episodes, seed, 0.0, max_steps
        )
        rand = summary([e.return_ for e in baseline], time.perf_counter() - start)
        metrics[f"{p}random_return_mean"] = rand["mean"]
        if rand["sem"] is not None:
            metrics[f"{p}random_return_sem"] = rand["sem"]
        if real["sem"] is not None and rand["sem"] is not None:
            diff_sem = math.hypot(real["sem"], rand["sem"])
            metrics[f"{p}return_diff_sem"] = diff_sem
            if diff_sem > 0:
                metrics[f"{p}return_minus_random_z"] = (real["mean"] - rand["mean"]) / diff_sem
    imag = None
    if world_model is not None:
        start = time.perf_counter()
        got = [r for r in imagine(world_model, policy, played, horizon, batch) if r is not None]
        if got:
            imag = {
                "horizon": horizon,
                "reward_units": "the world model's predicted rewards; DIAMOND predicts reward signs (-1, 0, 1)",
                "steps": [r["steps"] for r in got],
                "returns": [r["return"] for r in got],
                "ended": [r["ended"] for r in got],
                "real_returns": [r["real_return"] for r in got],
            }
            imag["mean"], imag["sem"] = mean_sem(imag["returns"])
            imag["real_mean"], imag["real_sem"] = mean_sem(imag["real_returns"])
            imag["seconds"] = round(time.perf_counter() - start, 2)
            metrics[f"{p}imagined_return_mean"] = imag["mean"]
            metrics[f"{p}imagined_real_return_mean"] = imag["real_mean"]
    return {"metrics": metrics, "real": real, "random": rand, "imagination": imag}


def summary(returns: list[float], seconds: float) -> dict[str, Any]:
    """{returns, mean, sem, seconds} of a list of episode returns."""
    mean, sem = mean_sem(returns)
    return {"returns": returns, "mean": mean, "sem": sem, "seconds": round(seconds, 2)}


def mean_sem(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (sample std / sqrt(n)); the error is None for one value."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), (float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None)


@cache
def scores_table(path: Path = SCORES) -> dict[str, dict[str, float]]:
    """{game: {random, human, diamond}} from common/atari_scores.csv (sources in its `source` column)."""
    with open(path, newline="") as f:
        return {
            r["game"]: {k: float(r[k]) for k in ("random", "human", "diamond")} for r in csv.DictReader(f)
        }


def human_normalized(game: str, score: float) -> float | None:
    """(score - random) / (human - random) for an Atari 100k game; None for a game outside the table."""
    row = scores_table().get(game)
    return None if row is None else (score - row["random"]) / (row["human"] - row["random"])


# --------------------------------------------------------------------------------------------- CLI
def _fmt(mean: float, sem: float | None, digits: int = 1) -> str:
    return f"{mean:.{digits}f} ± {'n/a' if sem is None else f'{sem:.{digits}f}'}"


def _environment(ckpt_path: Path, game: str | None, num_actions: int) -> tuple[Any, str, dict]:
    """The real env the checkpoint names (its datamodule hyperparameters), for `game` when given."""
    from common.checkpoint import read_checkpoint
    from common.data.envs import canonical_game, make_env

    hp = read_checkpoint(ckpt_path).get("datamodule_hyper_parameters") or {}
    source, options = hp.get("source"), dict(hp.get("env") or {})
    if source not in (None, "atari"):
        raise ValueError(f"{ckpt_path}: an agent of a {source} world model: evaluate_agent runs Atari agents")
    game = canonical_game("atari", game) if game else hp.get("game")
    if game is None:
        raise ValueError(f"{ckpt_path}: the checkpoint names no Atari game: pass game=GAME")
    if not options:  # no settings stored: DIAMOND's, which the agents here were trained with
        from common.hub import DIAMOND_ATARI_ENV

        options = dict(DIAMOND_ATARI_ENV)
    env = make_env("atari", game, **options)
    if env.num_actions != num_actions:
        raise ValueError(
            f"{ckpt_path}: the agent has {num_actions} actions but Atari {game} has {env.num_actions}: "
            f"pass the checkpoint's game with game=GAME"
        )
    return env, game, options


def evaluate(cfg) -> dict:
    """cfg: the composed conf/evaluate_agent.yaml. Returns the JSON it writes; prints the summary line."""
    from common.hub import resolve
    from common.world_model import load_world_model

    torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    if cfg.pretrained and cfg.checkpoint:
        raise ValueError("give pretrained=NAME or checkpoint=PATH, not both")
    if cfg.pretrained:
        path = resolve(str(cfg.pretrained), revision=cfg.revision, game=cfg.game)
    elif cfg.checkpoint:
        path = Path(str(cfg.checkpoint))
    else:
        raise ValueError("pretrained=NAME or checkpoint=PATH is required (e.g. pretrained=diamond/Breakout)")
    wm = load_world_model(path, device=str(cfg.device))
    if wm.policy is None:
        raise ValueError(
            f"{path}: the checkpoint carries no agent (policy): use one that does, e.g. pretrained=diamond/Breakout"
        )
    env, game, options = _environment(path, None if cfg.pretrained else cfg.game, wm.num_actions)
    label = str(cfg.pretrained or game)
    max_steps = None if cfg.max_steps is None else int(cfg.max_steps)
    horizon = None if cfg.horizon is None else int(cfg.horizon)
    got = evaluate_policy(
        wm.policy,
        wm if cfg.imagination else None,
        env,
        game,
        int(cfg.episodes),
        int(cfg.seed),
        float(cfg.epsilon),
        max_steps,
        horizon,
        int(cfg.batch),
        random_baseline=bool(cfg.random_baseline),
    )
    real, rand, imag = got["real"], got["random"], got["imagination"]
    mean, sem, returns = real["mean"], real["sem"], real["returns"]
    table = scores_table().get(game)
    if table:
        scale = table["human"] - table["random"]
        real.update(
            human_normalized_mean=human_normalized(game, mean),
            human_normalized_sem=None if sem is None else sem / scale,
            random=table["random"],
            human=table["human"],
            diamond_published=table["diamond"],
        )
    result = {
        "pretrained": cfg.pretrained,
        "checkpoint": str(path),
        "game": game,
        "env": options,
        "episodes": int(cfg.episodes),
        "seed": int(cfg.seed),
        "epsilon": float(cfg.epsilon),
        "max_steps": max_steps,
        "real": real,
        "random_policy": rand,
        "imagination": imag,
        "metrics": got["metrics"],
    }
    out = Path(str(cfg.out or f"evaluate_agent-{re.sub(r'[^A-Za-z0-9_.-]+', '-', label)}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    line = f"{label}: real return {_fmt(mean, sem)} (mean ± s.e., {len(returns)} episodes"
    if table:
        line += f"; human-normalised {_fmt(real['human_normalized_mean'], real['human_normalized_sem'], 3)}"
    line += ")"
    if rand:
        line += f"; uniform random policy {_fmt(rand['mean'], rand['sem'])}"
    if imag:
        steps = f"≤{horizon}" if horizon is not None else "up to the real episode's"
        line += (
            f"; imagination from the same starts, {steps} steps, in reward signs: "
            f"{_fmt(imag['mean'], imag['sem'], 2)} vs real {_fmt(imag['real_mean'], imag['real_sem'], 2)}"
        )
    print(f"{line} -> {out}")
    return result


def main() -> None:
    import hydra

    from common.cli import run_reporting_errors
    from common.config import CONF_DIR

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate_agent")
    def run(cfg) -> None:
        run_reporting_errors(evaluate, cfg)

    run()


if __name__ == "__main__":
    main()
