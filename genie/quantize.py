"""Quantizers for discrete latents: a VQ that does not collapse, and FSQ.

Both map z (..., dim) -> (z_q (..., dim) with straight-through gradients, indices (...) long,
loss scalar, stats {"usage", "perplexity"}), and `embed(indices)` -> z_q for generated indices.

- `VectorQuantizer` (van den Oord et al. 2017) with an L2-normalised codebook (cosine distances,
  Yu et al. 2022) and restarts of dead codes: a code unused for `restart_after` training steps is
  replaced by a random encoder output of the current batch.
- `FSQ` (Mentzer et al. 2023): each of len(levels) channels is bounded and rounded to `levels[i]`
  values; no codebook, no auxiliary loss, prod(levels) codes.

Both choose codes in float32 even inside a bf16 autocast region (`trainer.precision=bf16-mixed`):
rounding encoder outputs to bf16 would move them across code boundaries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def code_stats(indices: Tensor, num_codes: int) -> dict[str, Tensor]:
    """Fraction of the codebook used by `indices` and the perplexity of their distribution."""
    counts = torch.bincount(indices.flatten(), minlength=num_codes).float()
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    return {"usage": (counts > 0).float().mean(), "perplexity": entropy.exp()}


class VectorQuantizer(nn.Module):
    """VQ with an L2-normalised codebook, commitment loss and dead-code restarts. z: (..., dim)."""

    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        l2_normalize: bool = True,
        restart_after: int = 50,
    ):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.l2_normalize, self.restart_after = l2_normalize, restart_after
        self.codebook = nn.Parameter(torch.randn(num_codes, dim) / dim**0.5)
        self.register_buffer("idle_steps", torch.zeros(num_codes, dtype=torch.long))

    def _norm(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.l2_normalize else x

    def embed(self, indices: Tensor) -> Tensor:
        """indices (...) long -> code vectors (..., dim)."""
        return self._norm(self.codebook)[indices]

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer expects last dim {self.dim}, got shape {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):  # code choice in float32 under bf16 autocast
            flat = self._norm(z.float().reshape(-1, self.dim))
            codes = self._norm(self.codebook)
            dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)[None]
            indices = dist.argmin(1)
            quant = codes[indices]
            loss = F.mse_loss(quant, flat.detach()) + self.beta * F.mse_loss(flat, quant.detach())
            z_q = flat + (quant - flat).detach()  # straight-through
        stats = code_stats(indices, self.num_codes)
        if self.training and self.restart_after > 0:
            self._restart_dead(indices, flat.detach())
        return z_q.reshape(z.shape), indices.reshape(z.shape[:-1]), loss, stats

    @torch.no_grad()
    def _restart_dead(self, indices: Tensor, flat: Tensor) -> None:
        used = torch.zeros(self.num_codes, dtype=torch.bool, device=indices.device)
        used[indices] = True
        self.idle_steps.add_(1).masked_fill_(used, 0)
        dead = (self.idle_steps >= self.restart_after).nonzero().flatten()
        if len(dead):
            pick = torch.randint(len(flat), (len(dead),), device=flat.device)
            self.codebook.data[dead] = flat[pick] + 0.01 * torch.randn_like(flat[pick]) / self.dim**0.5
            self.idle_steps[dead] = 0


class FSQ(nn.Module):
    """Finite scalar quantization: dim -> len(levels) bounded channels rounded to levels[i] values -> dim."""

    def __init__(self, levels: list[int], dim: int):
        super().__init__()
        if any(level < 2 for level in levels):
            raise ValueError(f"FSQ levels must all be >= 2, got {levels}")
        self.dim = dim
        self.num_codes = int(torch.tensor(levels).prod())
        self.register_buffer("levels", torch.tensor(levels), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), 0)
        self.register_buffer("basis", basis, persistent=False)
        self.proj_in = nn.Linear(dim, len(levels))
        self.proj_out = nn.Linear(len(levels), dim)

    def _bound(self, z: Tensor) -> Tensor:
        half = (self.levels - 1) * (1 - 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def embed(self, indices: Tensor) -> Tensor:
        """indices (...) long -> (..., dim)."""
        digits = (indices[..., None] // self.basis) % self.levels
        return self.proj_out((digits - self.levels // 2).float() / (self.levels // 2))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        with torch.autocast(z.device.type, enabled=False):  # rounding in float32 under bf16 autocast
            bounded = self._bound(self.proj_in(z.float()))
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through
        indices = ((rounded.detach().round().long() + self.levels // 2) * self.basis).sum(-1)
        z_q = self.proj_out(rounded / (self.levels // 2))
        return z_q, indices, z.new_zeros(()), code_stats(indices, self.num_codes)


def make_quantizer(kind: str, num_codes: int, dim: int, fsq_levels: list[int] | None = None, **vq_kwargs):
    """ "vq" -> VectorQuantizer(num_codes, dim); "fsq" -> FSQ(fsq_levels, dim) (num_codes is then prod(levels))."""
    if kind == "vq":
        return VectorQuantizer(num_codes, dim, **vq_kwargs)
    if kind == "fsq":
        if not fsq_levels:
            raise ValueError("quantizer 'fsq' needs fsq_levels, e.g. [8, 5, 5, 5]")
        return FSQ(list(fsq_levels), dim)
    raise ValueError(f"unknown quantizer {kind!r} (use 'vq' or 'fsq')")
