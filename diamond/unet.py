"""DIAMOND's denoising network: a conditional U-Net and the "inner model" that wraps it.

The inner model sees the noisy next frame concatenated on channels with the 4 past frames, and a
conditioning vector = MLP(Fourier(noise level) + embedding of the 4 past actions) that drives the
adaptive GroupNorm of every residual block. Attention lives only in the middle blocks (attn_depths
all false for Atari). Attribute names mirror DIAMOND's so its checkpoint keys map onto ours unchanged.

Atari configuration (the paper's): channels [64, 64, 64, 64], depths [2, 2, 2, 2], cond_channels 256.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diamond.blocks import Downsample, FourierFeatures, GroupNorm, ResBlocks, Upsample


class UNet(nn.Module):
    """x: (B, channels[0], H, W), cond: (B, D) -> (B, channels[0], H, W).

    Level i on the way down holds depths[i] ResBlocks; on the way up depths[i] + 1 (the last one
    also consumes the level's input). `u_blocks` are stored deepest level first, as DIAMOND does.
    """

    def __init__(
        self, cond_channels: int, depths: list[int], channels: list[int], attn_depths: list[bool]
    ) -> None:
        super().__init__()
        if not len(depths) == len(channels) == len(attn_depths):
            raise ValueError(
                f"UNet: depths {depths}, channels {channels}, attn_depths {attn_depths} differ in length"
            )
        self.num_down = len(channels) - 1
        d_blocks, u_blocks = [], []
        for i, n in enumerate(depths):
            c_prev, c = channels[max(0, i - 1)], channels[i]
            d_blocks.append(ResBlocks([c_prev] + [c] * (n - 1), [c] * n, cond_channels, bool(attn_depths[i])))
            u_blocks.append(
                ResBlocks([2 * c] * n + [c_prev + c], [c] * n + [c_prev], cond_channels, bool(attn_depths[i]))
            )
        self.d_blocks = nn.ModuleList(d_blocks)
        self.u_blocks = nn.ModuleList(reversed(u_blocks))
        self.mid_blocks = ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True)
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in channels[:-1]])
        self.upsamples = nn.ModuleList([nn.Identity()] + [Upsample(c) for c in reversed(channels[:-1])])

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2**self.num_down
        pad_h, pad_w = math.ceil(h / m) * m - h, math.ceil(w / m) * m - w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for block, down in zip(self.d_blocks, self.downsamples):
            x_down = down(x)
            x, outs = block(x_down, cond)
            skips.append([x_down, *outs])
        x, _ = self.mid_blocks(x, cond)
        for block, up, level_skips in zip(self.u_blocks, self.upsamples, reversed(skips)):
            x, _ = block(up(x), cond, level_skips[::-1])
        return x[..., :h, :w]


class InnerModel(nn.Module):
    """The network F of the EDM denoiser.

    noisy_next_obs: (B, C, H, W) already scaled by c_in; c_noise: (B,) or (1,); obs: (B, T*C, H, W)
    past frames (oldest first, channel = t*C + c) already scaled by 1/sigma_data; act: (B, T) long.
    Returns F: (B, C, H, W).
    """

    def __init__(
        self,
        img_channels: int,
        num_steps_conditioning: int,
        cond_channels: int,
        depths: list[int],
        channels: list[int],
        attn_depths: list[bool],
        num_actions: int,
    ) -> None:
        super().__init__()
        if cond_channels % num_steps_conditioning:
            raise ValueError(f"cond_channels {cond_channels} not divisible by {num_steps_conditioning} steps")
        self.num_steps_conditioning = num_steps_conditioning
        self.noise_emb = FourierFeatures(cond_channels)
        # one embedding per past action, flattened: (B, T) -> (B, T * cond/T)
        self.act_emb = nn.Sequential(
            nn.Embedding(num_actions, cond_channels // num_steps_conditioning), nn.Flatten()
        )
        self.cond_proj = nn.Sequential(
            nn.Linear(cond_channels, cond_channels), nn.SiLU(), nn.Linear(cond_channels, cond_channels)
        )
        self.conv_in = nn.Conv2d(
            (num_steps_conditioning + 1) * img_channels, channels[0], kernel_size=3, padding=1
        )
        self.unet = UNet(cond_channels, depths, channels, attn_depths)
        self.norm_out = GroupNorm(channels[0])
        self.conv_out = nn.Conv2d(channels[0], img_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)

    def forward(self, noisy_next_obs: Tensor, c_noise: Tensor, obs: Tensor, act: Tensor) -> Tensor:
        if act.ndim != 2 or act.shape[1] != self.num_steps_conditioning:
            raise ValueError(f"act must be (B, {self.num_steps_conditioning}), got {tuple(act.shape)}")
        cond = self.cond_proj(self.noise_emb(c_noise) + self.act_emb(act))
        x = self.conv_in(torch.cat((obs, noisy_next_obs), dim=1))
        x = self.unet(x, cond)
        return self.conv_out(F.silu(self.norm_out(x)))
