"""Genie's video tokenizer: an ST-ViViT VQ-VAE on patches, causal in time (Genie §2.1, App. F).

frames (B, T, H, W, C) in [-1, 1] -> patches -> ST-transformer encoder -> code_dim latents ->
quantizer (VQ or FSQ) -> tokens (B, T, N) -> ST-transformer decoder -> patches -> frames.
Both transformers are causal in time, so the tokens and reconstruction of frame t only depend on
frames <= t, and a generated frame is decoded with the cached keys/values of the earlier frames.
`encoder="patch"` replaces the encoder by a per-patch MLP (genie/patch_mlp.py): each token then depends on
its own patch only, so a static patch keeps its token from frame to frame.
"""

from __future__ import annotations

from torch import Tensor, nn

from genie.attention import KV
from genie.patch_mlp import PatchMLP
from genie.patches import check_patch, patchify, unpatchify
from genie.quantize import make_quantizer
from genie.st_transformer import STTransformer


class VideoTokenizer(nn.Module):
    def __init__(
        self,
        frame_size: int = 64,
        channels: int = 3,
        patch_size: int = 4,
        d_model: int = 512,
        num_heads: int = 8,
        enc_layers: int = 8,
        dec_layers: int = 8,
        num_codes: int = 1024,
        code_dim: int = 32,
        quantizer: str = "vq",
        fsq_levels: list[int] | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        encoder: str = "st",
    ):
        super().__init__()
        self.frame_size, self.patch_size, self.channels = frame_size, patch_size, channels
        grid = check_patch(frame_size, patch_size)
        self.num_patches = grid[0] * grid[1]
        patch_dim = patch_size * patch_size * channels
        self.patch_in = nn.Linear(patch_dim, d_model)
        if encoder == "st":
            self.encoder = STTransformer(d_model, enc_layers, num_heads, grid, mlp_ratio, dropout)
        elif encoder == "patch":
            self.encoder = PatchMLP(d_model, enc_layers, mlp_ratio, dropout)
        else:
            raise ValueError(
                f"tokenizer encoder {encoder!r}: expected 'st' (Genie's ST-transformer) or 'patch'"
            )
        self.to_code = nn.Linear(d_model, code_dim)
        self.quantizer = make_quantizer(quantizer, num_codes, code_dim, fsq_levels)
        self.num_codes = self.quantizer.num_codes
        self.from_code = nn.Linear(code_dim, d_model)
        self.decoder = STTransformer(d_model, dec_layers, num_heads, grid, mlp_ratio, dropout)
        self.patch_out = nn.Linear(d_model, patch_dim)

    def encode(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """frames (B, T, H, W, C) in [-1, 1] -> (z_q (B, T, N, code_dim), tokens (B, T, N), vq loss, stats)."""
        h, _ = self.encoder(self.patch_in(patchify(frames, self.patch_size)))
        return self.quantizer(self.to_code(h))

    def decode(self, z_q: Tensor, past: list[KV] | None = None) -> tuple[Tensor, list[KV]]:
        """z_q (B, T, N, code_dim) -> (frames (B, T, H, W, C) in about [-1, 1], decoder keys/values)."""
        h, kv = self.decoder(self.from_code(z_q), past)
        return unpatchify(self.patch_out(h), self.patch_size, self.frame_size), kv

    def decode_tokens(self, tokens: Tensor, past: list[KV] | None = None) -> tuple[Tensor, list[KV]]:
        """tokens (B, T, N) long -> (frames (B, T, H, W, C), decoder keys/values)."""
        return self.decode(self.quantizer.embed(tokens), past)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """frames (B, T, H, W, C) in [-1, 1] -> (reconstruction, tokens (B, T, N), vq loss, stats)."""
        z_q, tokens, vq_loss, stats = self.encode(frames)
        return self.decode(z_q)[0], tokens, vq_loss, stats
