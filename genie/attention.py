"""Multi-head self-attention on torch's `scaled_dot_product_attention`, with optional past keys/values.

Past keys/values let a causal sequence grow one chunk at a time (the temporal layers of an
ST-transformer at generation time): the new queries attend to the cached past plus themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

KV = tuple[Tensor, Tensor]  # keys, values: (B, heads, L, head_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention. x: (B, L, D) -> (B, L, D)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, causal: bool = False, past: KV | None = None) -> tuple[Tensor, KV]:
        """x: (B, L, D); past: keys/values of L0 earlier positions, or None.

        Returns (out (B, L, D), keys/values of all L0 + L positions). With `causal`, position i of x
        (absolute L0 + i) sees positions <= L0 + i.
        """
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        mask = None
        if causal and x.shape[1] > 1:
            length, total = x.shape[1], k.shape[2]
            query_pos = torch.arange(total - length, total, device=x.device)
            mask = query_pos[:, None] >= torch.arange(total, device=x.device)[None, :]  # (L, L0 + L)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(rearrange(out, "b h l d -> b l (h d)")), (k, v)
