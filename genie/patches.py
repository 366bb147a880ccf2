"""Frames <-> non-overlapping square patches, the token grid of Genie's ViT-style models."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor


def check_patch(frame_size: int, patch_size: int) -> tuple[int, int]:
    """The (rows, cols) token grid of a square frame; a one-line error when the patch does not divide it."""
    if frame_size % patch_size:
        raise ValueError(f"patch_size={patch_size} does not divide frame_size={frame_size}")
    return frame_size // patch_size, frame_size // patch_size


def patchify(frames: Tensor, patch_size: int) -> Tensor:
    """(B, T, H, W, C) -> (B, T, N, P*P*C) with N = (H/P) * (W/P), row-major."""
    return rearrange(frames, "b t (h p) (w q) c -> b t (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(patches: Tensor, patch_size: int, height: int) -> Tensor:
    """(B, T, N, P*P*C) -> (B, T, H, W, C); `height` is H in pixels (frames are square or H given)."""
    return rearrange(
        patches, "b t (h w) (p q c) -> b t (h p) (w q) c", h=height // patch_size, p=patch_size, q=patch_size
    )
