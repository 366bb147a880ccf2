"""Diffusion forcing for Oasis: sigmoid beta schedule, per-frame-noise training loss, DDIM steps.

Training (Chen et al. 2024, "Diffusion Forcing"): every frame of a clip gets its own noise level
t ~ U{0, ..., timesteps - 1}; the causal DiT predicts v = sqrt(a) * eps - sqrt(1 - a) * x0 for all
frames at once; the MSE is weighted by min-SNR, min(snr, snr_clip) / (snr + 1), or (`fused_snr`, the DF
video config) by the *fused* SNR, which also counts the signal the preceding frames carry: a noisy frame
after clean ones is predictable from them, so it keeps a large weight where plain min-SNR gives ~0.

Sampling (open-oasis generate.py): the schedule side only, network-agnostic as a diffusers scheduler.
A new frame starts from `initial_noise` (N(0, 1) clamped to +-noise_abs_max); `ddim_timesteps` walks its
level down linspace(-1, timesteps - 1, ddim_steps + 1), one `ddim_step` per pair (the last lands on x0);
context frames are labelled with `context_level` = stabilization_level - 1. The loop that calls the DiT
(sliding window, cached context keys / values) is `oasis.world_model.sample_next`.

Shapes: latents (B, T, C, H, W); noise levels (B, T) long; conditions (B, T, A) float.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sigmoid_beta_schedule(timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> Tensor:
    """Betas (timesteps,) float64 of the sigmoid schedule (Jabri et al. 2022), clipped to [0, 0.999]; on the
    CPU, also where a model is built under another default device (the meta device: a schedule is data)."""
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64, device="cpu") / timesteps
    v_start = torch.tensor(start / tau, dtype=torch.float64, device="cpu").sigmoid()
    v_end = torch.tensor(end / tau, dtype=torch.float64, device="cpu").sigmoid()
    alphas_cumprod = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, 0.999)


def _bcast(a: Tensor, x: Tensor) -> Tensor:
    """(B, T) -> (B, T, 1, 1, 1) to broadcast against x (B, T, C, H, W)."""
    return a.reshape(*a.shape, *([1] * (x.dim() - a.dim())))


class DiffusionForcing(nn.Module):
    """The noise schedule, the diffusion-forcing loss and the DDIM update (no learnable weights)."""

    def __init__(
        self,
        timesteps: int = 1000,
        snr_clip: float = 5.0,
        clip_noise: float = 20.0,
        ddim_steps: int = 10,
        stabilization_level: int = 15,
        noise_abs_max: float = 20.0,
        fused_snr: bool = False,
        cum_snr_decay: float = 0.96,
    ):
        super().__init__()
        if not 1 <= ddim_steps <= timesteps:
            raise ValueError(f"ddim_steps must be in [1, {timesteps}], got {ddim_steps}")
        if not 1 <= stabilization_level <= timesteps:
            raise ValueError(f"stabilization_level must be in [1, {timesteps}], got {stabilization_level}")
        self.timesteps = timesteps
        self.snr_clip = snr_clip
        self.clip_noise = clip_noise
        self.ddim_steps = ddim_steps
        self.stabilization_level = stabilization_level
        self.noise_abs_max = noise_abs_max
        self.fused_snr = fused_snr
        self.cum_snr_decay = cum_snr_decay
        alphas_cumprod = torch.cumprod(1.0 - sigmoid_beta_schedule(timesteps).float(), dim=0)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        # the same values as Python floats: a DDIM step's scalars without a device round trip
        self.sampling_alphas: list[float] = alphas_cumprod.tolist()

    # ---- training -------------------------------------------------------------------------------

    def sample_noise_levels(self, batch: int, frames: int, device=None, generator=None) -> Tensor:
        """(B, T) long: an independent level per frame (diffusion forcing)."""
        return torch.randint(0, self.timesteps, (batch, frames), device=device, generator=generator)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        a = _bcast(self.alphas_cumprod[t], x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def v_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        a = _bcast(self.alphas_cumprod[t], x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def loss_weight(self, t: Tensor) -> Tensor:
        """Loss weights (B, T) of v-prediction at noise levels t (B, T).

        min-SNR: min(snr, c) / (snr + 1) with c = snr_clip. Fused SNR (Diffusion Forcing's video config):
        with n = min(snr, c) / c and r = snr / c per frame, a running signal level over the frames
        before t, m_t = d m_{t-1} + (1 - d) n_{t-1} (m_1 = n_0, none before frame 0; d = cum_snr_decay),
        replaces n by 1 - (1 - d m_t)(1 - n) and r by 1 - (1 - d m_t)(1 - r), then weighs
        c n' / (c r' + 1). Without preceding signal (m = 0) this is min-SNR again.
        """
        a = self.alphas_cumprod[t]
        snr = a / (1 - a)
        if not self.fused_snr:
            return snr.clamp(max=self.snr_clip) / (snr + 1)
        c, d = self.snr_clip, self.cum_snr_decay
        n, r = snr.clamp(max=c) / c, snr / c
        m = [torch.zeros_like(n[:, 0])]  # m_0: no frame before frame 0
        for j in range(1, n.shape[1]):
            m.append(n[:, 0] if j == 1 else d * m[-1] + (1 - d) * n[:, j - 1])
        keep = 1 - d * torch.stack(m, dim=1)  # (B, T): the share of the frame's own noise left
        return c * (1 - keep * (1 - n)) / (c * (1 - keep * (1 - r)) + 1)

    def loss(self, model: nn.Module, x0: Tensor, cond: Tensor | None, t: Tensor | None = None) -> Tensor:
        """Diffusion-forcing loss of `model` (a DiT) on clean latents x0 (B, T, C, H, W)."""
        if t is None:
            t = self.sample_noise_levels(x0.shape[0], x0.shape[1], device=x0.device)
        noise = torch.randn_like(x0).clamp(-self.clip_noise, self.clip_noise)
        v = model(self.q_sample(x0, t, noise), t, cond)
        per_frame = F.mse_loss(v, self.v_target(x0, t, noise), reduction="none").flatten(2).mean(-1)
        return (per_frame * self.loss_weight(t)).mean()

    # ---- sampling -------------------------------------------------------------------------------

    @property
    def context_level(self) -> int:
        """The noise level clean context frames are labelled with while a frame is sampled."""
        return self.stabilization_level - 1

    def ddim_levels(self) -> Tensor:
        """(ddim_steps + 1,) long: -1, ..., timesteps - 1 (open-oasis' noise_range)."""
        return torch.linspace(-1, self.timesteps - 1, self.ddim_steps + 1, device="cpu").long()

    def ddim_step(self, x: Tensor, v: Tensor, t: int, t_next: int) -> Tensor:
        """One deterministic DDIM step (Song et al. 2021, eq. 12 with sigma = 0) from level t to t_next.

        x (..., C, H, W) the frame at noise level t, v the model's v-prediction for it (Salimans & Ho 2022),
        t_next < t; t_next = -1 is the clean frame (a' = 1: the step returns x0). With a = alphas_cumprod[t],
        a' = alphas_cumprod[t_next]:
            x0  = sqrt(a) x - sqrt(1 - a) v
            eps = sqrt(1 - a) x + sqrt(a) v
            x'  = sqrt(a') x0 + sqrt(1 - a') eps
        (open-oasis generate.py computes the same update, eps as (x / sqrt(a) - x0) / sqrt(1 / a - 1)).
        """
        a = self.sampling_alphas[t]
        a_next = self.sampling_alphas[t_next] if t_next >= 0 else 1.0
        x0 = math.sqrt(a) * x - math.sqrt(1 - a) * v
        eps = math.sqrt(1 - a) * x + math.sqrt(a) * v
        return math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps

    def ddim_timesteps(self) -> list[tuple[int, int]]:
        """(t, t_next) of each DDIM step, noisiest first: consecutive `ddim_levels`, the last t_next -1."""
        levels = self.ddim_levels().tolist()
        return [(levels[i], levels[i - 1]) for i in reversed(range(1, len(levels)))]

    def initial_noise(self, shape, device=None, generator: torch.Generator | None = None) -> Tensor:
        """N(0, 1) noise of `shape` clamped to +-noise_abs_max (open-oasis), drawn on the CPU when a
        generator is given (so a seed gives the same frame on any device)."""
        x = torch.randn(shape, generator=generator, device=device if generator is None else None)
        return x.to(device).clamp(-self.noise_abs_max, self.noise_abs_max)
