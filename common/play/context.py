"""Where the player's context frames come from: a held-out episode of the model's dataset, or the real env.

`DatasetContext` reads test-split episodes of the shard dataset the checkpoint was trained on (found
through `ckpt["datamodule_hyper_parameters"]`, or `data_dir=`); `env_context` resets the real environment
and steps it with no-ops until the model has its context. Both return a `Context`: the frames the model
is reset on, the actions taken at them, the level seed (so the real env can replay the same level),
and, from a dataset, the real continuation (for `policy=dataset` and its rollout PSNR).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Context:
    """frames: uint8 (T, H, W, C); actions: int64 (T,) taken at those frames; seed: level / env seed.

    future_frames: uint8 (F, H, W, C) real frames after the context; future_actions: int64 (F,) the real
    actions taken from the last context frame on (future_actions[k] leads to future_frames[k]).
    """

    frames: np.ndarray
    actions: np.ndarray
    seed: int
    future_frames: np.ndarray | None = None
    future_actions: np.ndarray | None = None


@dataclass
class DatasetInfo:
    """What a checkpoint says about its data: folder, env source / game / options, held-out seed range."""

    path: Path | None
    source: str | None
    game: str | None
    env_options: dict
    seeds: tuple[int, int] | None


def dataset_info(
    ckpt: dict[str, Any], checkpoint_path: str | Path, data_dir: str | None = None, split: str = "test"
) -> DatasetInfo:
    """From `ckpt["datamodule_hyper_parameters"]`: the dataset is Path(root) / name, a split a seed range."""
    from common.data.splits import split_ranges

    hp = ckpt.get("datamodule_hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "name" not in hp:
        raise ValueError(
            f"{checkpoint_path}: the checkpoint names no dataset: use context=env source=S game=G"
        )
    root = data_dir if data_dir is not None else hp.get("root")
    if root is None:
        raise ValueError(f"{checkpoint_path}: the datamodule has no data root; pass data_dir=DIR")
    ranges = split_ranges(hp.get("splits") or {"train": 1.0}, hp.get("seed_start", 0), hp.get("episodes", 0))
    if split not in ranges:
        raise ValueError(f"{checkpoint_path}: the dataset has no {split!r} split (has {', '.join(ranges)})")
    return DatasetInfo(
        Path(root) / str(hp["name"]),
        hp.get("source"),
        hp.get("game"),
        dict(hp.get("env") or {}),
        ranges[split],
    )


class DatasetContext:
    """Held-out episodes of a shard dataset (seeds in `seeds`, all when None), cycled through on reset."""

    def __init__(self, root: str | Path, context_length: int, seeds: tuple[int, int] | None = None) -> None:
        from common.data.shards import ShardDataset

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset not found: {self.root} (pass data_dir=DIR or context=env)")
        self.dataset = ShardDataset(self.root, verify=False)
        self.context_length = context_length
        self.episodes = [ep for ep in self.dataset.episodes(seeds) if ep.length > context_length]
        if not self.episodes:
            raise ValueError(f"{self.root}: no episode (seeds {seeds}) longer than {context_length} frames")
        manifest = self.dataset.manifest
        self.source: str | None = manifest.get("source")
        self.game: str | None = manifest.get("game")
        self.action_meanings: list[str] | None = manifest.get("action_meanings")
        self.fps: int = int(manifest.get("fps") or 15)

    def __call__(self, index: int) -> Context:
        ep = self.episodes[index % len(self.episodes)]
        data = self.dataset.read(ep)
        t = self.context_length
        actions = np.asarray(data["actions"], dtype=np.int64)
        return Context(
            frames=np.asarray(data["frames"][:t]),
            actions=actions[:t],
            seed=int(ep.seed),
            future_frames=np.asarray(data["frames"][t:]),
            future_actions=actions[t - 1 : -1],
        )


def env_context(env, seed: int, context_length: int, noop: int = 0, attempts: int = 10) -> Context:
    """Reset the real env on `seed` and step it with `noop` until there are `context_length` frames.

    An episode that ends inside the context is skipped for the next seed (up to `attempts` seeds).
    """
    for s in range(seed, seed + attempts):
        frames, done = [env.reset(s)], False
        while len(frames) < context_length and not done:
            frame, _, done = env.step(noop)
            frames.append(frame)
        if not done:
            actions = np.full(context_length, noop, dtype=np.int64)
            return Context(np.stack(frames).astype(np.uint8), actions, s)
    raise RuntimeError(
        f"{attempts} episodes from seed {seed} ended within the {context_length} context frames"
    )


def replay(env, context: Context) -> np.ndarray:
    """Bring the real env to the last context frame: reset on the context's seed, replay its actions."""
    frame = env.reset(context.seed)
    for a in context.actions[:-1]:
        frame, _, _ = env.step(int(a))
    return frame
