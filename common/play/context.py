"""Where the player's context frames come from: a held-out dataset episode, the real env, or a file.

`DatasetContext` reads test-split episodes of the shard dataset the checkpoint was trained on (found
through `ckpt["datamodule_hyper_parameters"]`, or `data_dir=`); `env_context` resets the real environment
and steps it with no-ops until the model has its context; `FileContext` reads an image or a video
(`context=file:PATH`, e.g. a Minecraft screenshot for converted open-oasis weights). All return a
`Context`: the frames the model is reset on, the actions taken at them, the level seed (so the real env
can replay the same level), and, from a dataset, the real continuation (for `policy=dataset`).
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".gif", ".webm")


@dataclass
class Context:
    """frames: uint8 (T, H, W, C); actions: int64 (T,) taken at those frames (float32 (T, A) for models
    driven by action vectors, e.g. Oasis' 25-d Minecraft actions); seed: level / env seed.

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
    """What a checkpoint says about its data: folder, env source / game / options, held-out seed range.

    path is None when the checkpoint names no dataset to take contexts from (`missing` says why), e.g.
    converted DIAMOND weights, which name only the env they were trained in (with its options)."""

    path: Path | None
    source: str | None
    game: str | None
    env_options: dict
    seeds: tuple[int, int] | None
    missing: str = ""


def dataset_info(
    ckpt: dict[str, Any], checkpoint_path: str | Path, data_dir: str | None = None, split: str = "test"
) -> DatasetInfo:
    """From `ckpt["datamodule_hyper_parameters"]`: the dataset is Path(root) / name, a split a seed range;
    the env source, game and options. Without a dataset to take contexts from (none named, no data root,
    no such split) path is None and `missing` says why, in one line with the fix."""
    from common.data.splits import split_ranges

    hp = ckpt.get("datamodule_hyper_parameters") if isinstance(ckpt, dict) else None
    hp = hp or {}
    source, game, env = hp.get("source"), hp.get("game"), dict(hp.get("env") or {})
    if "name" not in hp:
        fix = "context=env" if source else "context=file:PATH, or context=env source=S game=G"
        why = f"{checkpoint_path}: the checkpoint names no dataset: use {fix}"
        return DatasetInfo(None, source, game, env, None, why)
    root = data_dir if data_dir is not None else hp.get("root")
    if root is None:
        why = f"{checkpoint_path}: the datamodule has no data root; pass data_dir=DIR"
        return DatasetInfo(None, source, game, env, None, why)
    ranges = split_ranges(hp.get("splits") or {"train": 1.0}, hp.get("seed_start", 0), hp.get("episodes", 0))
    if split not in ranges:
        why = f"{checkpoint_path}: the dataset has no {split!r} split (has {', '.join(ranges)}): pass split=NAME"
        return DatasetInfo(None, source, game, env, None, why)
    return DatasetInfo(Path(root) / str(hp["name"]), source, game, env, ranges[split])


class DatasetContext:
    """Held-out episodes of a shard dataset (seeds in `seeds`, all when None), cycled through on reset."""

    def __init__(self, root: str | Path, context_length: int, seeds: tuple[int, int] | None = None) -> None:
        from common.data.shards import ShardDataset

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset not found: {self.root} (pass data_dir=DIR or context=env)")
        self.dataset = ShardDataset(self.root, seeds=seeds)  # verifies the shards it reads
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


def check_context_file(path: str | Path) -> Path:
    """A readable-looking image / video path, checked before any model is loaded (one-line errors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"context file not found: {path}")
    if path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        known = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
        raise ValueError(f"{path}: unsupported context file {path.suffix!r} (use {known})")
    return path


def read_frames(path: str | Path, last: int) -> np.ndarray:
    """The last `last` frames of an image (one frame) or a video (imageio, pyav) -> uint8 (T, H, W, 3)."""
    import imageio.v3 as iio

    path = check_context_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in IMAGE_SUFFIXES:
            frames = [iio.imread(path)]
        else:
            plugin = "pyav" if suffix != ".gif" else None
            frames = list(deque(iio.imiter(path, plugin=plugin), maxlen=last))
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot read frames ({reason})") from None
    if not frames:
        raise ValueError(f"{path}: no frames in file")
    return np.stack([_rgb(np.asarray(f)) for f in frames])


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (T, h, w, 3) -> uint8 (T, height, width, 3): center-crop to the target aspect ratio, then
    bilinear resize with antialiasing (torch `F.interpolate`)."""
    t, h, w, _ = frames.shape
    if h * width > w * height:  # too tall: crop rows
        crop = round(w * height / width)
        frames = frames[:, (h - crop) // 2 : (h - crop) // 2 + crop]
    elif h * width < w * height:  # too wide: crop columns
        crop = round(h * width / height)
        frames = frames[:, :, (w - crop) // 2 : (w - crop) // 2 + crop]
    if frames.shape[1:3] == (height, width):
        return np.ascontiguousarray(frames)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class FileContext:
    """`context=file:PATH`: the last `context_length` frames of an image or a video, as the context.

    Frames are fitted to frame_shape (H, W, C) by `fit_frames`; an image (or a video shorter than the
    context) repeats its first frame. The actions taken at the context frames are `noop` (the keymap's
    default: an action index, or a zero vector (A,)). Every reset starts again from the same frames.
    """

    def __init__(
        self, path: str | Path, frame_shape: tuple[int, int, int], context_length: int,
        noop: int | np.ndarray = 0, seed: int = 0,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        height, width, channels = frame_shape
        if channels != 3:
            raise ValueError(f"{self.path}: the model takes {channels}-channel frames, files give RGB")
        frames = fit_frames(read_frames(self.path, context_length), height, width)
        pad = np.repeat(frames[:1], max(0, context_length - len(frames)), axis=0)
        self.frames = np.concatenate([pad, frames])[-context_length:]  # (T, H, W, 3)
        self.actions = np.repeat(np.asarray(noop)[None], context_length, axis=0)  # (T,) or (T, A)
        self.seed = seed

    def __call__(self, index: int) -> Context:
        return Context(self.frames, self.actions, self.seed + index)


def _rgb(frame: np.ndarray) -> np.ndarray:
    """A decoded frame (h, w) or (h, w, 1|2) gray, (h, w, 3|4) RGB(A), uint8 or uint16 -> uint8 (h, w, 3)."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] < 3:
        frame = np.repeat(frame[..., :1], 3, axis=-1)
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    return frame[..., :3].astype(np.uint8)


def replay(env, context: Context) -> np.ndarray:
    """Bring the real env to the last context frame: reset on the context's seed, replay its actions.

    Returns the env's frame, uint8 (H, W, C): the context's last frame when the env is deterministic from
    (seed, actions) (`env.deterministic`) and the context was recorded by this env with these options.
    Otherwise (e.g. a Crafter dataset collected before its adapter ordered creature updates) it warns
    with the number of pixels that differ, and the env goes on from where the replay took it.
    """
    frame = env.reset(context.seed)
    for a in context.actions[:-1]:
        frame, _, _ = env.step(int(a))
    target = context.frames[-1]
    differ = int((frame != target).any(-1).sum()) if frame.shape == target.shape else frame.size
    if differ:
        why = (
            "the env is not deterministic from (seed, actions)"
            if not env.deterministic
            else "the context was recorded by another version of the env or with other env options"
        )
        warnings.warn(
            f"{env.env_id}: replaying seed {context.seed} over {len(context.frames)} context frames reached a "
            f"frame that differs from the context's last frame in {differ} pixels ({why}); the real env "
            "goes on from its own frame",
            stacklevel=2,
        )
    return frame
