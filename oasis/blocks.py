"""The two layers the Oasis ViT-VAE and DiT share, in open-oasis' (timm's) layout and parameter names."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, H / p, W / p, D): a strided convolution, one Linear over each p x p patch.
    `what` names the input in the error raised when p does not divide it ("image", "latent grid")."""

    def __init__(
        self, height: int, width: int, patch_size: int, in_chans: int, embed_dim: int, what: str = "input"
    ):
        super().__init__()
        if height % patch_size or width % patch_size:
            raise ValueError(f"{what} {height}x{width} is not divisible by patch_size {patch_size}")
        self.grid_size = (height // patch_size, width // patch_size)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.proj(x), "n d h w -> n h w d")


class Mlp(nn.Module):
    """(..., dim) -> fc1 -> GELU -> fc2 -> (..., dim); `approximate`: "none" (the VAE) or "tanh" (the DiT)."""

    def __init__(self, dim: int, hidden: int, approximate: str = "none"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))
