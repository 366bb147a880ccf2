"""Diffusion forcing for Oasis: sigmoid beta schedule, per-frame-noise training loss, DDIM frame sampler.

Training (Chen et al. 2024, "Diffusion Forcing"): every frame of a clip gets its own noise level
t ~ U{0, ..., timesteps - 1}; the causal DiT predicts v = sqrt(a) * eps - sqrt(1 - a) * x0 for all
frames at once; the MSE is weighted by min-SNR, min(snr, snr_clip) / (snr + 1), or (`fused_snr`, the DF
video config) by the *fused* SNR, which also counts the signal the preceding frames carry: a noisy frame
after clean ones is predictable from them, so it keeps a large weight where plain min-SNR gives ~0.

Sampling (open-oasis generate.py): one new frame at a time. The new frame starts from N(0, 1) noise
clamped to +-noise_abs_max; the context frames are clean latents labelled with noise level
stabilization_level - 1; `ddim_steps` deterministic DDIM steps walk the new frame's level down
linspace(-1, timesteps - 1, ddim_steps + 1) (the last step lands on x0). At most max_frames frames
(context + new) are fed to the model (sliding window).

With `use_cache=True` the context frames go through the network once per generated frame
(`DiT.context_kv`) and each DDIM step runs only the new frame against their cached temporal keys /
values; without it the whole window is recomputed at every step, as open-oasis does. Both give the
same result.

Shapes: latents (B, T, C, H, W); noise levels (B, T) long; conditions (B, T, A) float.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sigmoid_beta_schedule(timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> Tensor:
    """Betas (timesteps,) float64 of the sigmoid schedule (Jabri et al. 2022), clipped to [0, 0.999]."""
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.tensor(start / tau, dtype=torch.float64).sigmoid()
    v_end = torch.tensor(end / tau, dtype=torch.float64).sigmoid()
    alphas_cumprod = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, 0.999)


def _bcast(a: Tensor, x: Tensor) -> Tensor:
    """(B, T) -> (B, T, 1, 1, 1) to broadcast against x (B, T, C, H, W)."""
    return a.reshape(*a.shape, *([1] * (x.dim() - a.dim())))


class DiffusionForcing(nn.Module):
    """The noise schedule, the diffusion-forcing loss and the DDIM sampler (no learnable weights)."""

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

    def ddim_levels(self) -> Tensor:
        """(ddim_steps + 1,) long: -1, ..., timesteps - 1 (open-oasis' noise_range)."""
        return torch.linspace(-1, self.timesteps - 1, self.ddim_steps + 1).long()

    @torch.no_grad()
    def sample_next(
        self,
        model: nn.Module,
        context: Tensor,
        context_cond: Tensor | None,
        cond: Tensor | None,
        max_frames: int,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Generate the latent frame after `context`.

        context (B, T, C, H, W) clean latents (T >= 1); context_cond (B, T, A) their conditions;
        cond (B, A) the new frame's condition (the action that leads to it). Returns (B, C, H, W).
        """
        b = context.shape[0]
        if cond is not None and context_cond is None:  # unconditioned context frames
            context_cond = cond.new_zeros(*context.shape[:2], cond.shape[-1])
        keep = max_frames - 1
        context = context[:, -keep:]
        context_cond = None if context_cond is None else context_cond[:, -keep:]
        n = context.shape[1]
        dev = context.device
        x = torch.randn(context[:, :1].shape, generator=generator, device=dev if generator is None else None)
        x = x.to(dev).clamp(-self.noise_abs_max, self.noise_abs_max)
        t_ctx = torch.full((b, n), self.stabilization_level - 1, dtype=torch.long, device=dev)
        new_cond = None if cond is None else cond[:, None]
        schedule = self.ddim_schedule()
        t_steps = torch.tensor([level for level, _, _ in schedule], device=dev).expand(b, -1)  # (B, S)
        if use_cache:  # the context runs once; each step's conditioning is computed up front
            past = model.context_kv(context, t_ctx, context_cond, spare=1)  # the new frame's slot
            prepared = model.prepare_steps(t_steps, new_cond, past)
        else:
            full_cond = None if cond is None else torch.cat((context_cond, new_cond), dim=1)
        for j, (_, cx, cv) in enumerate(schedule):
            t_now = t_steps[:, j : j + 1]
            if use_cache:
                v = model.forward_cached(x, t_now, new_cond, past, prepared[j])
            else:
                v = model(torch.cat((context, x), 1), torch.cat((t_ctx, t_now), 1), full_cond)[:, -1:]
            x = torch.add(x * cx, v, alpha=cv)
        return x[:, 0]

    def ddim_schedule(self) -> list[tuple[int, float, float]]:
        """Per DDIM step, noisiest first: (the step's noise level, cx, cv) with x_next = cx * x + cv * v
        (deterministic DDIM).

        With a = alphas_cumprod at the step's level and a' at the next: x0 = sqrt(a) x - sqrt(1 - a) v and
        eps = sqrt(1 - a) x + sqrt(a) v, so x_next = sqrt(a') x0 + sqrt(1 - a') eps; the last step returns x0.
        """
        levels, ac = self.ddim_levels().tolist(), self.alphas_cumprod.tolist()
        out = []
        for i in reversed(range(1, self.ddim_steps + 1)):
            a = ac[levels[i]]
            a_next = ac[levels[i - 1]] if i > 1 else 1.0  # the last step returns x0
            cx = math.sqrt(a_next * a) + math.sqrt((1 - a_next) * (1 - a))
            cv = math.sqrt((1 - a_next) * a) - math.sqrt(a_next * (1 - a))
            out.append((levels[i], cx, cv))
        return out
