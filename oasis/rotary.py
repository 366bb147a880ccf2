"""Rotary position embeddings (RoPE, Su et al. 2021) in the two flavours open-oasis uses.

- kind="lang": 1-D positions 0, 1, 2, ... with frequencies 1 / theta^(2i/dim) (temporal attention).
- kind="pixel": positions spread over [-1, 1] along each axis of a grid, frequencies
  pi * linspace(1, max_freq / 2, dim / 2) (spatial attention; `axial_angles` gives a 2-D table
  whose first half rotates with the row and second half with the column).

Channels are rotated in interleaved pairs (x0, x1), (x2, x3), ...; when the angle table is narrower
than the features, only the leading channels rotate and the rest pass through.

API (small on purpose):
    rope = RotaryEmbedding(dim, kind="lang" | "pixel", theta=10000.0, max_freq=10.0)
    rope.angles(positions)          # (...,) float -> (..., dim)
    rope.rotate(x, offset=0)        # x (..., T, d>=dim), positions offset..offset+T-1 along dim -2
    rope.axial_angles(h, w)         # (h, w, 2*dim) for a grid (pixel or lang positions)
    apply_rotary(angles, x)         # rotate x (..., d) by angles (..., r<=d), broadcast;
                                    # angles may be a precomputed (cos, sin) pair or rotation(angles)
    rotation(angles)                # complex (..., r / 2) e^(i angle): the fastest form to apply

`freqs` is an nn.Parameter (not trained: requires_grad=False) so that state-dict keys match open-oasis.
"""

from __future__ import annotations

import math

import torch
from einops import repeat
from torch import Tensor, nn


def rotate_half(x: Tensor) -> Tensor:
    """(..., 2n) -> (..., 2n): each interleaved pair (a, b) becomes (-b, a)."""
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-b, a), dim=-1).flatten(-2)


def rotation(angles: Tensor) -> Tensor:
    """angles (..., r) (each frequency repeated for its channel pair) -> complex (..., r / 2): e^(i angle)."""
    half = angles[..., ::2].float()
    return torch.polar(torch.ones_like(half), half)


def _as_complex(x: Tensor) -> Tensor:
    """Real (..., 2n) -> complex view (..., n) of its interleaved pairs (copied only when the layout needs it)."""
    x = x.float()
    if x.stride(-1) != 1 or x.storage_offset() % 2 or any(s % 2 for s in x.stride()[:-1]):
        x = x.contiguous()
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def apply_rotary(angles: Tensor | tuple[Tensor, Tensor], x: Tensor) -> Tensor:
    """Rotate the first r channels of x (..., d) by `angles` (..., r), broadcast over leading dims.

    `angles` may also be precomputed once for many calls: the pair (angles.cos(), angles.sin()), or
    `rotation(angles)` (complex (..., r / 2); each channel pair is multiplied as one complex number).
    """
    if isinstance(angles, Tensor) and angles.is_complex():
        r = 2 * angles.shape[-1]
        if r > x.shape[-1]:
            raise ValueError(f"rotary table has {r} channels but features have only {x.shape[-1]}")
        head = torch.view_as_real(_as_complex(x[..., :r]) * angles).flatten(-2).type(x.dtype)
        return head if r == x.shape[-1] else torch.cat((head, x[..., r:]), dim=-1)
    cos, sin = (angles.cos(), angles.sin()) if isinstance(angles, Tensor) else angles
    r = cos.shape[-1]
    if r > x.shape[-1]:
        raise ValueError(f"rotary table has {r} channels but features have only {x.shape[-1]}")
    if r == x.shape[-1]:
        return (x * cos + rotate_half(x) * sin).type(x.dtype)
    head, tail = x[..., :r], x[..., r:]
    return torch.cat((head * cos + rotate_half(head) * sin, tail), dim=-1).type(x.dtype)


def rotary_freqs(dim: int, kind: str = "lang", theta: float = 10000.0, max_freq: float = 10.0) -> Tensor:
    """The dim // 2 base frequencies of a rotary table of width `dim`."""
    if kind == "lang":
        return 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    if kind == "pixel":
        return torch.linspace(1.0, max_freq / 2, dim // 2) * math.pi
    raise ValueError(f"rotary kind must be 'lang' or 'pixel', got {kind!r}")


class RotaryEmbedding(nn.Module):
    """Rotary table of width `dim` (dim // 2 frequencies, each used for an interleaved channel pair)."""

    def __init__(self, dim: int, kind: str = "lang", theta: float = 10000.0, max_freq: float = 10.0):
        super().__init__()
        self.dim = dim
        self.kind = kind
        self.freqs = nn.Parameter(rotary_freqs(dim, kind, theta, max_freq), requires_grad=False)

    def angles(self, positions: Tensor) -> Tensor:
        """positions (...,) -> angles (..., dim): each frequency repeated for its channel pair."""
        ang = positions.to(self.freqs.dtype)[..., None] * self.freqs
        return repeat(ang, "... n -> ... (n r)", r=2)

    def rotate(self, x: Tensor, offset: int = 0) -> Tensor:
        """x (..., T, d): rotate by positions offset..offset+T-1 (sequence along dim -2)."""
        pos = torch.arange(x.shape[-2], device=x.device, dtype=x.dtype) + offset
        return apply_rotary(self.angles(pos), x)

    def axial_angles(self, h: int, w: int) -> Tensor:
        """(h, w, 2 * dim): rows rotate the first `dim` channels, columns the next `dim`.

        'pixel' places positions at linspace(-1, 1) along each axis, 'lang' at 0..n-1.
        """
        device = self.freqs.device
        if self.kind == "pixel":
            ph, pw = torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device)
        else:
            ph, pw = torch.arange(h, device=device), torch.arange(w, device=device)
        rows = self.angles(ph)[:, None, :].expand(h, w, self.dim)
        cols = self.angles(pw)[None, :, :].expand(h, w, self.dim)
        return torch.cat((rows, cols), dim=-1)
