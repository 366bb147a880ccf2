"""Fixed sinusoidal positional embeddings: 1D for time, 2D (rows, columns) for a grid of patches."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """positions: (L,) float or long -> (L, dim) with sin on the first half, cos on the second."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=positions.device) / (dim // 2))
    angles = positions.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(height: int, width: int, dim: int) -> Tensor:
    """A (height, width) grid -> (height * width, dim), row-major: half the channels per axis."""
    if dim % 4:
        raise ValueError(f"2D sinusoidal embedding needs dim divisible by 4, got {dim}")
    rows = sincos_1d(torch.arange(height), dim // 2)  # (H, dim/2)
    cols = sincos_1d(torch.arange(width), dim // 2)  # (W, dim/2)
    grid = torch.cat([rows[:, None, :].expand(-1, width, -1), cols[None, :, :].expand(height, -1, -1)], -1)
    return grid.reshape(height * width, dim)
