"""Spatio-temporal (ST) transformer of Genie §2: per block, spatial attention over one frame's tokens,
then causal temporal attention over one token position's frames, then a single feed-forward.

Tokens are (B, T, N, D): T frames of N = grid_h * grid_w tokens. Fixed sinusoidal embeddings give
the position in the grid (2D) and in time (1D, offset by the number of cached past frames).
Causality in time is exact: outputs of frames <= t never depend on frames > t, so the temporal
keys/values of context frames can be cached and reused while a new frame is generated.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from genie.attention import KV, SelfAttention
from genie.posemb import sincos_1d, sincos_2d


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear. (..., D) -> (..., D)."""

    def __init__(self, d_model: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(d_model * mlp_ratio)
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class STBlock(nn.Module):
    """Spatial attention, causal temporal attention, feed-forward; pre-norm residuals. (B, T, N, D)."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm_s = nn.LayerNorm(d_model)
        self.attn_s = SelfAttention(d_model, num_heads, dropout)
        self.norm_t = nn.LayerNorm(d_model)
        self.attn_t = SelfAttention(d_model, num_heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, mlp_ratio, dropout)

    def forward(self, x: Tensor, past: KV | None = None) -> tuple[Tensor, KV]:
        """x: (B, T, N, D); past: temporal keys/values (B*N, heads, T0, head_dim) of T0 earlier frames."""
        b, t, n, _ = x.shape
        h = rearrange(self.norm_s(x), "b t n d -> (b t) n d")
        x = x + rearrange(self.attn_s(h)[0], "(b t) n d -> b t n d", b=b)
        h = rearrange(self.norm_t(x), "b t n d -> (b n) t d")
        h, kv = self.attn_t(h, causal=True, past=past)
        x = x + rearrange(h, "(b n) t d -> b t n d", n=n)
        return x + self.ff(self.norm_ff(x)), kv


class STTransformer(nn.Module):
    """A stack of ST blocks with space/time positional embeddings and a final LayerNorm.

    forward(x (B, T, N, D), past) -> (y (B, T, N, D), keys/values per layer covering T0 + T frames).
    `past` is what an earlier call returned for the T0 frames before x (or None: x starts at time 0).
    """

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        num_heads: int,
        grid: tuple[int, int],
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.d_model = d_model
        self.register_buffer("space_pos", sincos_2d(grid[0], grid[1], d_model), persistent=False)
        self.blocks = nn.ModuleList(
            STBlock(d_model, num_heads, mlp_ratio, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, past: list[KV] | None = None) -> tuple[Tensor, list[KV]]:
        t0 = 0 if not past else past[0][0].shape[2]
        time = sincos_1d(torch.arange(t0, t0 + x.shape[1], device=x.device), self.d_model)
        x = x + self.space_pos[None, None] + time[None, :, None]
        kvs = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, past[i] if past else None)
            kvs.append(kv)
        return self.norm(x), kvs
