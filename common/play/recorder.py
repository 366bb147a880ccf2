"""Headless play: drive a WorldModel with a policy for N steps and write the video (no display needed).

The policy starts on the context (`PlayPolicy.begin`) and then sees, each step, the frame on show: the
context's last frame, then the frame the model generated last (what an agent acts on).

With the dataset policy the real continuation of the held-out episode is tiled beside the generated
one (real | generated) and the rollout PSNR against the real frames is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.metrics import psnr
from common.play.context import Context
from common.play.policies import PlayPolicy, action_batch
from common.video import side_by_side, upscale, write_video


@dataclass
class Recording:
    """path: the video; frames: uint8 (steps, H, W', C) as written; psnr: per-step rollout PSNR (dataset)."""

    path: Path
    frames: np.ndarray
    psnr: np.ndarray | None = None
    returns: float | None = None


def check_writable(path: str | Path) -> Path:
    """Fail before any generation when the video cannot be written (bad suffix, unwritable folder)."""
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"record={path}: unsupported video format {path.suffix!r} (use .mp4 or .gif)")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not _can_write(folder):
        raise ValueError(f"record={path}: cannot write into {folder}")
    return path


def _can_write(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


@torch.inference_mode()
def record(
    world_model,
    context: Context,
    policy: PlayPolicy,
    steps: int,
    path: str | Path,
    fps: int = 15,
    with_real: bool = False,
    scale: int = 1,
    latent: bool = False,
    device: str | torch.device = "cpu",
) -> Recording:
    """Reset on the context, take `steps` policy actions, write the generated frames (real | generated)."""
    path = check_writable(path)
    if with_real:
        if context.future_frames is None or len(context.future_frames) == 0:
            raise ValueError(
                "policy=dataset needs the real continuation of a dataset episode (context=dataset)"
            )
        steps = min(steps, len(context.future_frames))
    frames = torch.from_numpy(context.frames).to(device)[None]
    actions = None if latent else torch.from_numpy(context.actions).to(device)[None]
    world_model.reset(frames, actions)
    policy.begin(context.frames)
    frame, generated, ret = context.frames[-1], [], None
    for k in range(steps):
        out = world_model.step(action_batch(policy(k, frame), device))
        frame = out.frames[0].cpu().numpy()
        generated.append(frame)
        if out.reward is not None:
            ret = (ret or 0.0) + float(out.reward[0])
    video = np.stack(generated)
    scores = None
    if with_real:
        real = context.future_frames[:steps]
        scores = psnr(torch.from_numpy(video), torch.from_numpy(real)).numpy()
        video = side_by_side(real, video)
    video = upscale(video, scale)
    write_video(path, video, fps=fps)
    return Recording(path, video, scores, ret)
