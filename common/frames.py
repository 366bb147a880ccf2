"""Frames between their stored form, uint8 in [0, 255], and the networks' form, float32 in [-1, 1].

Every family's networks see k / 127.5 - 1 for the byte k (bitwise the same float as DIAMOND's
k / 255 * 2 - 1), and generated frames come back rounded to the nearest byte after clamping to
[-1, 1], so that to_uint8(to_signed(frames)) == frames. Frames are stored channels-last,
(..., H, W, C); the convolutional networks (DIAMOND, Oasis) take (..., C, H, W): `channels_first`.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import Tensor


def to_signed(frames: Tensor, channels_first: bool = False) -> Tensor:
    """uint8 (..., H, W, C) in [0, 255] -> float32 in [-1, 1]: (..., H, W, C), or (..., C, H, W) with
    `channels_first` (a view of the layout, so a channels-last network keeps its memory format)."""
    if channels_first:
        frames = rearrange(frames, "... h w c -> ... c h w")
    return frames.float() / 127.5 - 1.0


def to_uint8(x: Tensor, channels_first: bool = False) -> Tensor:
    """float (..., H, W, C), or (..., C, H, W) with `channels_first`, nominally in [-1, 1] -> uint8
    (..., H, W, C): clamped to [-1, 1], then rounded to the nearest of the 256 levels."""
    frames = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(frames, "... c h w -> ... h w c") if channels_first else frames


def frame_batch(frame: np.ndarray) -> Tensor:
    """One env frame, uint8 (H, W, C), -> a policy's input batch, uint8 (1, H, W, C). The array is copied
    when it is read-only or not contiguous (an env may hand out a view of its own buffer, which torch would
    share with a warning), shared otherwise."""
    if not frame.flags.writeable or not frame.flags.c_contiguous:
        frame = np.array(frame)
    return torch.from_numpy(frame)[None]
