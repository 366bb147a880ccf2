"""DIAMOND's sampler: Karras sigma schedule and Euler (order 1) or Heun (order 2) steps of the EDM ODE.

As in DIAMOND, the initial state is plain N(0, 1) noise (not scaled by sigma_max), the last sigma is
0, the final step is always Euler, and optional churn (s_churn > 0) re-injects noise. The sampler is
not a module: it holds no weights, only the schedule, and calls `Denoiser.denoise`.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from diamond.denoiser import Denoiser


def karras_sigmas(num_steps: int, sigma_min: float = 2e-3, sigma_max: float = 5.0, rho: float = 7) -> Tensor:
    """Karras et al. schedule, then a final 0: (num_steps + 1,) float32, decreasing.

    sigma_l = (sigma_max^(1/rho) + l * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, l in linspace(0, 1, n).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + torch.linspace(0, 1, num_steps) * (lo - hi)) ** rho
    return torch.cat((sigmas, sigmas.new_zeros(1)))


class DiffusionSampler:
    """Generates the next frame from past frames and actions with a few ODE steps."""

    def __init__(
        self,
        denoiser: Denoiser,
        num_steps: int = 3,
        sigma_min: float = 2e-3,
        sigma_max: float = 5.0,
        rho: float = 7,
        order: int = 1,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
    ) -> None:
        if order not in (1, 2):
            raise ValueError(f"sampler order must be 1 (Euler) or 2 (Heun), got {order}")
        self.denoiser = denoiser
        self.sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho)
        self.order = order
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = s_churn, s_tmin, s_tmax, s_noise

    @torch.no_grad()
    def sample(
        self,
        prev_obs: Tensor,
        prev_act: Tensor,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """prev_obs: (B, T, C, H, W) in [-1, 1], prev_act: (B, T) long -> (next (B, C, H, W), trajectory).

        The trajectory lists the initial noise then the state after each step (num_steps + 1 tensors).
        `noise` (B, C, H, W) replaces the initial N(0, 1) draw when given.
        """
        b, _, c, h, w = prev_obs.shape
        device = prev_obs.device
        obs = rearrange(prev_obs, "b t c h w -> b (t c) h w")
        sigmas = self.sigmas.to(device)
        s_in = torch.ones(b, device=device)
        x = torch.randn(b, c, h, w, generator=generator, device=device) if noise is None else noise
        gamma_max = min(self.s_churn / (len(sigmas) - 1), 2**0.5 - 1)
        trajectory = [x]
        for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:]):
            gamma = gamma_max if self.s_tmin <= sigma <= self.s_tmax else 0.0
            sigma_hat = sigma * (gamma + 1)
            if gamma > 0:
                eps = torch.randn(x.shape, generator=generator, device=device) * self.s_noise
                x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
            denoised = self.denoiser.denoise(x, sigma, obs, prev_act)
            d = (x - denoised) / sigma_hat
            dt = next_sigma - sigma_hat
            if self.order == 1 or next_sigma == 0:
                x = x + d * dt
            else:
                x_2 = x + d * dt
                denoised_2 = self.denoiser.denoise(x_2, next_sigma * s_in, obs, prev_act)
                d_2 = (x_2 - denoised_2) / next_sigma
                x = x + (d + d_2) / 2 * dt
            trajectory.append(x)
        return x, trajectory
