"""Building blocks shared by DIAMOND's U-Net and its reward/termination encoder.

Module and attribute names follow DIAMOND's `src/models/blocks.py` so that its `state_dict()` keys
land on ours unchanged (see diamond/convert.py). GroupNorm everywhere uses groups of 32 channels
(at least one group) and eps 1e-5. Images are (B, C, H, W) float; conditioning vectors (B, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

GROUP_SIZE = 32  # channels per GroupNorm group
GN_EPS = 1e-5
HEAD_DIM = 8  # self-attention head width


def num_groups(channels: int) -> int:
    return max(1, channels // GROUP_SIZE)


class GroupNorm(nn.Module):
    """Affine GroupNorm with DIAMOND's group count. Keys: `norm.weight`, `norm.bias`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups(channels), channels, eps=GN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


class AdaGroupNorm(nn.Module):
    """GroupNorm without affine parameters, then x * (1 + scale) + shift predicted from the conditioning.

    x: (B, C, H, W), cond: (B, D) -> (B, C, H, W).
    """

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.groups = num_groups(channels)
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        if x.shape[1] != self.channels:
            raise ValueError(f"AdaGroupNorm expects {self.channels} channels, got {x.shape[1]}")
        x = F.group_norm(x, self.groups, eps=GN_EPS)
        scale, shift = rearrange(self.linear(cond), "b (two c) -> two b c 1 1", two=2)
        return torch.addcmul(shift, x, 1 + scale)  # x * (1 + scale) + shift in one pass


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H*W positions (heads of width 8).

    As in DIAMOND, the residual is added to the *normalised* input: out = norm(x) + proj(attn(norm(x))).
    """

    def __init__(self, channels: int, head_dim: int = HEAD_DIM) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        if channels % self.heads:
            raise ValueError(f"attention: {channels} channels do not split into {self.heads} heads")
        self.norm = GroupNorm(channels)
        self.qkv_proj = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.out_proj = nn.Conv2d(channels, channels, kernel_size=1)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = self.norm(x)
        q, k, v = rearrange(self.qkv_proj(x), "b (three n d) h w -> three b n (h w) d", three=3, n=self.heads)
        y = F.scaled_dot_product_attention(q, k, v)
        y = rearrange(y, "b n (h w) d -> b (n d) h w", h=h, w=w)
        return x + self.out_proj(y)


class FourierFeatures(nn.Module):
    """Noise-level embedding [cos(2 pi s f), sin(2 pi s f)] with fixed random frequencies f.

    The frequencies are a saved *buffer* (`weight`, (1, D/2)): a checkpoint carries them. s: (B,) -> (B, D).
    """

    def __init__(self, cond_channels: int) -> None:
        super().__init__()
        if cond_channels % 2:
            raise ValueError(f"FourierFeatures needs an even width, got {cond_channels}")
        self.register_buffer("weight", torch.randn(1, cond_channels // 2))

    def forward(self, s: Tensor) -> Tensor:
        if s.ndim != 1:
            raise ValueError(f"FourierFeatures expects a 1-D noise level, got shape {tuple(s.shape)}")
        f = 2 * math.pi * s.unsqueeze(1) @ self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (orthogonal init). (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        nn.init.orthogonal_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 convolution. (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """Pre-norm residual block conditioned through AdaGroupNorm, optional self-attention after the sum.

    x: (B, C_in, H, W), cond: (B, D) -> (B, C_out, H, W). conv2 starts at zero (block = projection).
    """

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, attn: bool) -> None:
        super().__init__()
        self.proj = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.norm1 = AdaGroupNorm(in_channels, cond_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = AdaGroupNorm(out_channels, cond_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.attn = SelfAttention2d(out_channels) if attn else nn.Identity()
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        r = self.proj(x)
        x = self.conv1(F.silu(self.norm1(x, cond)))
        x = self.conv2(F.silu(self.norm2(x, cond)))
        return self.attn(x + r)


class ResBlocks(nn.Module):
    """A chain of ResBlocks; on the U-Net's way up each block first concatenates its skip tensor.

    Returns the final tensor and every block's output (the skips of the way down).
    """

    def __init__(
        self, in_channels: list[int], out_channels: list[int], cond_channels: int, attn: bool
    ) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError("ResBlocks: in_channels and out_channels differ in length")
        self.resblocks = nn.ModuleList(
            [ResBlock(i, o, cond_channels, attn) for i, o in zip(in_channels, out_channels)]
        )

    def forward(
        self, x: Tensor, cond: Tensor, skips: list[Tensor] | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        outputs = []
        for i, block in enumerate(self.resblocks):
            if skips is not None:
                x = torch.cat((x, skips[i]), dim=1)
            x = block(x, cond)
            outputs.append(x)
        return x, outputs
