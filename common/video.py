"""Write uint8 frame sequences to .mp4 (PyAV through imageio) or .gif, and tile real | generated.

gym3 pins an imageio-ffmpeg too old for imageio v3, so mp4 goes through imageio's `pyav` plugin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def side_by_side(*videos: np.ndarray | torch.Tensor, gap: int = 2) -> np.ndarray:
    """Tile videos horizontally. Each (T, H, W, C) uint8 -> (T, H, sum(W) + gaps, C) uint8."""
    arrays = [v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in videos]
    t, h, _, c = arrays[0].shape
    sep = np.full((t, h, gap, c), 255, dtype=np.uint8)
    parts = []
    for i, a in enumerate(arrays):
        parts += [a] if i == 0 else [sep, a]
    return np.concatenate(parts, axis=2)


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (T, H, W, C) by an integer factor (players and small frames)."""
    return video.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else video


def write_video(path: str | Path, frames: np.ndarray | torch.Tensor, fps: int = 15) -> Path:
    """Write (T, H, W, C) uint8 frames to .mp4 or .gif; the parent folder is created. Returns the path."""
    import imageio.v3 as iio

    path = Path(path)
    video = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if video.ndim != 4 or video.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 (T, H, W, C) frames, got {video.dtype} {video.shape}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot write video {path}: {e.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        # yuv420p needs even sides: pad by one pixel where needed
        pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
        if pad_h or pad_w:
            video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        iio.imwrite(path, video, plugin="pyav", codec="libx264", fps=fps, out_pixel_format="yuv420p")
    elif suffix == ".gif":
        iio.imwrite(path, video, extension=".gif", duration=1000 / fps, loop=0)
    else:
        raise ValueError(f"{path}: unsupported video format {suffix!r} (use .mp4 or .gif)")
    return path


def read_video(path: str | Path) -> np.ndarray:
    """Read a video written by `write_video` back as (T, H, W, C) uint8."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() == ".mp4":
        return np.stack(list(iio.imiter(path, plugin="pyav")))
    return np.asarray(iio.imread(path, index=None))[..., :3]
