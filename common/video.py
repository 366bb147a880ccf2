"""Write uint8 frame sequences to .mp4 (PyAV through imageio) or .gif, and tile real | generated.

gym3 pins an imageio-ffmpeg too old for imageio v3, so mp4 goes through imageio's `pyav` plugin.
GIF frame delays are whole centiseconds (GIF89a spec, "Delay Time"), so 15 fps (66.7 ms) cannot be one
delay: `gif_durations` alternates 70 / 60 ms so that the frames keep the real clock.
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


def gif_durations(frames: int, fps: float) -> list[int]:
    """Per-frame GIF delays in ms, each a multiple of 10 (centiseconds), whose running sum stays within 5 ms
    of frame k ending at k * 1000 / fps: frame k lasts round(100 (k+1) / fps) - round(100 k / fps) cs.

    15 fps -> 70, 60, 70, 70, 60, 70, ... (average 66.7 ms). Browsers show delays under 20 ms as 100 ms,
    so GIFs above 50 fps play slower there; mp4 has no such limit.
    """
    if not fps > 0:
        raise ValueError(f"fps={fps}: a video needs a positive frame rate")
    ends = [int(np.floor(100.0 * k / fps + 0.5)) for k in range(frames + 1)]
    return [10 * (b - a) for a, b in zip(ends, ends[1:])]


def write_video(path: str | Path, frames: np.ndarray | torch.Tensor, fps: int = 15) -> Path:
    """Write (T, H, W, C) uint8 frames to .mp4 or .gif at `fps` frames/s; the parent folder is created.

    A GIF's delays come from `gif_durations` (exact on average); a frame equal to the one before it is
    merged into it by the GIF writer (Pillow), so a GIF read back can have fewer frames, same duration.
    Returns the path."""
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
        durations = gif_durations(len(video), fps)  # Pillow takes one frame's delay as a number, not a list
        iio.imwrite(
            path, video, extension=".gif", duration=durations if len(video) > 1 else durations[0], loop=0
        )
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


def _label_font():
    from PIL import ImageFont

    return ImageFont.load_default(size=12)  # Pillow >= 10.1: a FreeType font shipped with Pillow


def labelled_grid(
    cells: np.ndarray,
    column_labels: list[str],
    row_labels: list[str] | None = None,
    upscale_factor: int = 1,
) -> np.ndarray:
    """Tile videos in a grid under a band of column labels; each row's label is drawn into its first cell.

    cells: uint8 (R, K, T, H, W, C) -> uint8 (T, band + R * H * f, K * W * f, C) with f = upscale_factor:
    cell [r, k] at rows band + r*H*f.., columns k*W*f.. (no gaps: a one-pixel white line is drawn over
    each inner cell border), and `band` (even, > 0) pixels of white above holding column_labels[k] (one or
    more lines split at "\\n") in black, centred over column k. row_labels[r], if given, is drawn in white
    on a black box in the top-left corner of cell [r, 0]."""
    from PIL import Image, ImageDraw

    cells = np.asarray(cells)
    if cells.ndim != 6 or cells.dtype != np.uint8 or len(column_labels) != cells.shape[1]:
        raise ValueError(
            f"labelled_grid: expected uint8 (R, K, T, H, W, C) cells and K column labels, got "
            f"{cells.dtype} {cells.shape} and {len(column_labels)} labels"
        )
    r, k, t, h, w, c = cells.shape
    font = _label_font()
    line = font.getbbox("Ag")[3] + 2
    lines = max(len(label.split("\n")) for label in column_labels)
    band = line * lines + 4
    band += band % 2  # yuv420p video needs even sides
    grid = cells.transpose(2, 0, 3, 1, 4, 5).reshape(t, r * h, k * w, c)  # (T, R*H, K*W, C)
    grid = upscale(grid, upscale_factor)
    cell_h, cell_w = h * upscale_factor, w * upscale_factor
    header = Image.new("RGB", (k * cell_w, band), "white")
    draw = ImageDraw.Draw(header)
    for i, label in enumerate(column_labels):
        for j, text in enumerate(label.split("\n")):
            width = draw.textlength(text, font=font)
            draw.text(
                (i * cell_w + max(0, (cell_w - width) / 2), 2 + j * line), text, fill="black", font=font
            )
    head = np.broadcast_to(np.asarray(header)[..., :c], (t, band, k * cell_w, c))
    out = np.concatenate([head, grid], axis=1)
    out[:, band + cell_h :: cell_h] = 255  # cell borders
    out[:, band:, cell_w::cell_w] = 255
    for i, label in enumerate(row_labels or []):
        box = np.zeros((line + 2, int(draw.textlength(label, font=font)) + 4, 3), dtype=np.uint8)
        image = Image.fromarray(box)
        ImageDraw.Draw(image).text((2, 1), label, fill="white", font=font)
        patch = np.asarray(image)[:cell_h, :cell_w, :c]
        top = band + i * cell_h
        out[:, top : top + patch.shape[0], : patch.shape[1]] = patch
    return out
