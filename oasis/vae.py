"""Oasis' ViT-VAE: a transformer autoencoder with a diagonal-Gaussian bottleneck (AutoencoderKL-like).

Module structure and parameter names follow open-oasis `vae.py` (etched-ai/open-oasis), so the released
`vit-l-20.safetensors` loads as is: patch_embed.proj, encoder.{i}.{norm1,attn.qkv,attn.proj,norm2,
mlp.fc1,mlp.fc2}, enc_norm, quant_conv, post_quant_conv, decoder.{i}..., dec_norm, predictor.

Shapes: images (B, 3, H, W) in [-1, 1]; tokens (B, N = gh * gw, D) in row-major grid order;
latents (B, N, latent_dim). Attention rotates the leading 4 * (head_dim // 8) channels of each head (half
of them when head_dim is a multiple of 8) with a 2-D 'pixel' rotary table (max_freq = gh * gw), as
open-oasis' RotaryEmbedding(dim=head_dim // 4) does for any head width. The diffusion model sees latents
times `scaling_factor` (0.07843137255 = 1/12.75 for the released weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from oasis.blocks import Mlp, PatchEmbed
from oasis.init import init_vit_weights
from oasis.rotary import RotaryEmbedding, apply_rotary, rotation

OASIS_SCALING_FACTOR = 0.07843137255


class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) over latents (B, N, latent_dim); logvar clamped to [-30, 20]."""

    def __init__(self, moments: Tensor, deterministic: bool = False):
        self.mean, logvar = moments.chunk(2, dim=-1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.zeros_like(self.mean) if deterministic else torch.exp(0.5 * self.logvar)

    def sample(self) -> Tensor:
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per sample, summed over tokens and channels: (B,)."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2))


class Attention(nn.Module):
    """Full self-attention over a (gh, gw) token grid with 2-D rotary on the leading channels of each head.

    open-oasis builds RotaryEmbedding(dim=head_dim // 4): head_dim // 8 frequencies pi * linspace(1,
    gh * gw / 2, .), each turning one interleaved channel pair, rows then columns: 4 * (head_dim // 8)
    channels (a table of width 2 * (head_dim // 8) holds the same frequencies when head_dim // 4 is odd).
    """

    def __init__(self, dim: int, num_heads: int, grid_h: int, grid_w: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.grid_h, self.grid_w = grid_h, grid_w
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        rope = RotaryEmbedding(2 * (dim // num_heads // 8), kind="pixel", max_freq=grid_h * grid_w)
        angles = rearrange(rope.axial_angles(grid_h, grid_w).detach(), "h w r -> (h w) r")
        self.register_buffer("rotary_angles", angles, persistent=False)  # (N, 4 * (head_dim // 8))

    def forward(self, x: Tensor) -> Tensor:
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        q, k = apply_rotary(rotation(self.rotary_angles), qkv[:2])  # queries and keys rotated together
        out = F.scaled_dot_product_attention(q, k, qkv[2])
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, grid_h: int, grid_w: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, grid_h, grid_w)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AutoencoderKL(nn.Module):
    """ViT-VAE. encode: (B, 3, H, W) in [-1, 1] -> DiagonalGaussian over (B, N, latent_dim);
    decode: (B, N, latent_dim) -> (B, 3, H, W) (unclamped)."""

    def __init__(
        self,
        latent_dim: int = 16,
        input_height: int = 256,
        input_width: int = 256,
        patch_size: int = 16,
        enc_dim: int = 768,
        enc_depth: int = 6,
        enc_heads: int = 12,
        dec_dim: int = 768,
        dec_depth: int = 6,
        dec_heads: int = 12,
        mlp_ratio: float = 4.0,
        use_variational: bool = True,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.input_height, self.input_width = input_height, input_width
        self.patch_size = patch_size
        self.use_variational = use_variational
        self.patch_embed = PatchEmbed(input_height, input_width, patch_size, 3, enc_dim, what="image")
        self.seq_h, self.seq_w = self.patch_embed.grid_size
        gh, gw = self.seq_h, self.seq_w
        self.encoder = nn.ModuleList(
            [AttentionBlock(enc_dim, enc_heads, gh, gw, mlp_ratio) for _ in range(enc_depth)]
        )
        self.enc_norm = nn.LayerNorm(enc_dim, eps=1e-6)
        self.quant_conv = nn.Linear(enc_dim, (2 if use_variational else 1) * latent_dim)
        self.post_quant_conv = nn.Linear(latent_dim, dec_dim)
        self.decoder = nn.ModuleList(
            [AttentionBlock(dec_dim, dec_heads, gh, gw, mlp_ratio) for _ in range(dec_depth)]
        )
        self.dec_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.predictor = nn.Linear(dec_dim, 3 * patch_size**2)
        self._init_weights()

    def _init_weights(self) -> None:
        init_vit_weights(self, self.patch_embed.proj)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        h = rearrange(self.patch_embed(x), "b h w d -> b (h w) d")
        for blk in self.encoder:
            h = blk(h)
        moments = self.quant_conv(self.enc_norm(h))
        if not self.use_variational:
            moments = torch.cat((moments, torch.zeros_like(moments)), dim=-1)
        return DiagonalGaussian(moments, deterministic=not self.use_variational)

    def decode(self, z: Tensor) -> Tensor:
        h = self.post_quant_conv(z)
        for blk in self.decoder:
            h = blk(h)
        patches = self.predictor(self.dec_norm(h))  # (B, N, 3 * p * p), channel-major within a patch
        p = self.patch_size
        return rearrange(patches, "b (h w) (c p q) -> b c (h p) (w q)", h=self.seq_h, c=3, p=p, q=p)

    def forward(self, x: Tensor, sample_posterior: bool = True) -> tuple[Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
        z = posterior.sample() if (self.use_variational and sample_posterior) else posterior.mode()
        return self.decode(z), posterior
