"""EDM preconditioning of DIAMOND's denoiser (Karras et al. 2022, with DIAMOND's offset noise).

With s = sqrt(sigma^2 + sigma_offset^2) (the noise level seen by the network, offset noise included):
    c_in = 1 / sqrt(s^2 + sigma_data^2)      c_skip = sigma_data^2 / (s^2 + sigma_data^2)
    c_out = s * sqrt(c_skip)                 c_noise = log(s) / 4
    D(x; sigma) = c_skip * x + c_out * F(c_in * x, c_noise, past / sigma_data, actions)
Training regresses F onto (x_0 - c_skip * x) / c_out at sigma ~ exp(N(loc, scale)) clipped to
[sigma_min, sigma_max]; the noisy input also carries an offset noise sigma_offset * N(0, 1) per (sample,
channel). At sampling time D is clamped to [-1, 1] and quantised to the 8-bit grid (truncation).
Frames are float in [-1, 1]: next frame (B, C, H, W), past frames merged (B, T*C, H, W), actions (B, T).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.frames import to_signed
from diamond.unet import InnerModel


@dataclass
class Conditioners:
    c_in: Tensor  # (B, 1, 1, 1) or (1, 1, 1, 1)
    c_out: Tensor
    c_skip: Tensor
    c_noise: Tensor  # (B,) or (1,)


def quantize(x: Tensor) -> Tensor:
    """Clamp to [-1, 1] and snap to DIAMOND's 8-bit grid k / 255 * 2 - 1 (truncating, like a uint8 cast)."""
    return to_signed(x.clamp(-1, 1).add(1).div(2).mul(255).to(torch.uint8))


def sample_sigma(
    n: int,
    loc: float,
    scale: float,
    sigma_min: float,
    sigma_max: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Training noise levels: log-normal(loc, scale) clipped to [sigma_min, sigma_max]. -> (n,)."""
    z = torch.randn(n, generator=generator, device=device)
    return (z * scale + loc).exp().clip(sigma_min, sigma_max)


class Denoiser(nn.Module):
    """EDM denoiser around an InnerModel. `inner_model` keeps DIAMOND's key prefix `inner_model.`."""

    def __init__(
        self, inner_model: InnerModel, sigma_data: float = 0.5, sigma_offset_noise: float = 0.3
    ) -> None:
        super().__init__()
        self.inner_model = inner_model
        self.sigma_data = sigma_data
        self.sigma_offset_noise = sigma_offset_noise

    def conditioners(self, sigma: Tensor) -> Conditioners:
        """sigma: (B,) or 0-dim -> preconditioners broadcastable against (B, C, H, W)."""
        s = (sigma**2 + self.sigma_offset_noise**2).sqrt()
        c_in = 1 / (s**2 + self.sigma_data**2).sqrt()
        c_skip = self.sigma_data**2 / (s**2 + self.sigma_data**2)
        c_out = s * c_skip.sqrt()
        c_noise = s.log() / 4
        as4d = lambda c: c.reshape(c.shape + (1,) * (4 - c.ndim))
        return Conditioners(as4d(c_in), as4d(c_out), as4d(c_skip), c_noise.reshape(-1))

    def model_output(self, noisy_next_obs: Tensor, obs: Tensor, act: Tensor, cs: Conditioners) -> Tensor:
        """The raw network output F (B, C, H, W)."""
        return self.inner_model(noisy_next_obs * cs.c_in, cs.c_noise, obs / self.sigma_data, act)

    @torch.no_grad()
    def denoise(self, noisy_next_obs: Tensor, sigma: Tensor, obs: Tensor, act: Tensor) -> Tensor:
        """D(x; sigma) clamped and quantised: (B, C, H, W) on the 8-bit grid of [-1, 1]."""
        cs = self.conditioners(sigma)
        out = self.model_output(noisy_next_obs, obs, act, cs)
        return quantize(cs.c_skip * noisy_next_obs + cs.c_out * out)

    def add_noise(self, x: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x + sigma_offset * N(0,1) per (sample, channel) + sigma * N(0,1) per pixel.

        x: (B, C, H, W), sigma: (B,).
        """
        b, c = x.shape[:2]
        offset = self.sigma_offset_noise * torch.randn(b, c, 1, 1, generator=generator, device=x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        return x + offset + noise * sigma.reshape(-1, 1, 1, 1)

    def loss(
        self,
        next_obs: Tensor,
        obs: Tensor,
        act: Tensor,
        sigma: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """MSE of F against the preconditioned target.

        next_obs (B, C, H, W), obs (B, T*C, H, W), act (B, T), sigma (B,) -> scalar.
        """
        noisy = self.add_noise(next_obs, sigma, generator)
        cs = self.conditioners(sigma)
        out = self.model_output(noisy, obs, act, cs)
        target = (next_obs - cs.c_skip * noisy) / cs.c_out
        return F.mse_loss(out, target)
