"""Genie's latent action model (Genie §2.1): learns |A| discrete actions from pixels alone.

Encoder: an ST-transformer over the patches of frames 1..T (causal in time); the output tokens of
frame t+1 (which saw frames 1..t+1) are mean-pooled into one continuous latent per transition t,
quantised to one of `num_actions` codes. Decoder: an ST-transformer over the patches of frames
1..T-1 with the latent action a_t added to every token of frame t; causal in time, its output at
frame t predicts the change from frame t to frame t+1. The tiny codebook makes the latent carry only what changes.
"""

from __future__ import annotations

from einops import repeat
from torch import Tensor, nn

from genie.patches import check_patch, patchify, unpatchify
from genie.quantize import VectorQuantizer
from genie.st_transformer import STTransformer


class LatentActionModel(nn.Module):
    def __init__(
        self,
        frame_size: int = 64,
        channels: int = 3,
        patch_size: int = 16,
        d_model: int = 512,
        num_heads: int = 8,
        enc_layers: int = 8,
        dec_layers: int = 8,
        num_actions: int = 6,
        code_dim: int = 32,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.frame_size, self.patch_size, self.num_actions = frame_size, patch_size, num_actions
        grid = check_patch(frame_size, patch_size)
        patch_dim = patch_size * patch_size * channels
        self.enc_in = nn.Linear(patch_dim, d_model)
        self.encoder = STTransformer(d_model, enc_layers, num_heads, grid, mlp_ratio, dropout)
        self.to_action = nn.Linear(d_model, code_dim)
        self.quantizer = VectorQuantizer(num_actions, code_dim)
        self.dec_in = nn.Linear(patch_dim, d_model)
        self.action_in = nn.Linear(code_dim, d_model)
        self.decoder = STTransformer(d_model, dec_layers, num_heads, grid, mlp_ratio, dropout)
        self.patch_out = nn.Linear(d_model, patch_dim)

    def encode(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """frames (B, T, H, W, C) in [-1, 1] -> (z_q (B, T-1, code_dim), actions (B, T-1) long, vq loss, stats).

        actions[:, t] is the latent action of the transition from frame t to frame t+1.
        """
        h, _ = self.encoder(self.enc_in(patchify(frames, self.patch_size)))
        return self.quantizer(self.to_action(h[:, 1:].mean(2)))

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """frames (B, T, H, W, C) -> (prediction of frames 2..T (B, T-1, H, W, C), actions, vq loss, stats)."""
        z_q, actions, vq_loss, stats = self.encode(frames)
        n = (self.frame_size // self.patch_size) ** 2
        h = self.dec_in(patchify(frames[:, :-1], self.patch_size))
        h = h + repeat(self.action_in(z_q), "b t d -> b t n d", n=n)
        h, _ = self.decoder(h)
        delta = unpatchify(self.patch_out(h), self.patch_size, self.frame_size)
        return frames[:, :-1] + delta, actions, vq_loss, stats
