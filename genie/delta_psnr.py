"""Genie's controllability metric ΔtPSNR (Genie §3) for a GenieWorldModel.

ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t): x̂_t is generated from the first real frame x_1 with
the latent actions the LAM infers from the real frames, x̂'_t from the same frame with latent
actions drawn uniformly at random. Frames are 1-based as in the paper: with x_1 as the prompt,
frame x_t is the (t-1)-th generated frame (t = 4: three generated frames). Higher means the latent
actions control the generation more. Over an evaluation set each PSNR is the set PSNR of its images
(common.metrics.SetPSNR), so ΔtPSNR = 10·log10(mean MSE with random / mean MSE with inferred actions).
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.metrics import mse, psnr_of_mse


@torch.inference_mode()
def delta_psnr_errors(
    world_model, frames: Tensor, latent_actions: Tensor, t: int = 4, generator=None
) -> tuple[Tensor, Tensor]:
    """Per-clip MSEs of x̂_t (inferred actions) and x̂'_t (random actions) against x_t. frames uint8
    (B, T, H, W, C) with T >= t; latent_actions long (B, >= t-1) inferred from those frames (action i
    leads from frame i to i+1, 0-based). Returns two (B,) float tensors."""
    if frames.shape[1] < t or latent_actions.shape[1] < t - 1:
        raise ValueError(f"ΔtPSNR at t={t} needs clips of >= {t} frames, got {frames.shape[1]}")
    b = frames.shape[0]
    random = torch.randint(world_model.num_actions, (b, t - 1), generator=generator)
    results = []
    for actions in (latent_actions[:, : t - 1], random):
        world_model.reset(frames[:, :1])
        for i in range(t - 1):
            frame = world_model.step(actions[:, i]).frames
        results.append(frame)
    target = frames[:, t - 1].to(results[0].device)
    return mse(results[0], target), mse(results[1], target)


def genie_delta_psnr(
    world_model, frames: Tensor, latent_actions: Tensor, t: int = 4, generator=None
) -> Tensor:
    """ΔtPSNR of a batch of clips as one set (scalar); arguments as `delta_psnr_errors`."""
    inferred, random = delta_psnr_errors(world_model, frames, latent_actions, t, generator)
    return psnr_of_mse(inferred.mean()) - psnr_of_mse(random.mean())
