"""Genie's controllability metric ΔtPSNR (Genie §3) for a GenieWorldModel.

ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t): x̂_t is generated from the first real frame x_1 with
the latent actions the LAM infers from the real frames, x̂'_t from the same frame with latent
actions drawn uniformly at random. Frames are 1-based as in the paper: with x_1 as the prompt,
frame x_t is the (t-1)-th generated frame (t = 4: three generated frames). Higher means the latent
actions control the generation more.
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.metrics import psnr


def delta_psnr(target: Tensor, inferred: Tensor, random: Tensor) -> Tensor:
    """PSNR(target, inferred) - PSNR(target, random), per image. Frames (..., H, W, C) -> (...,)."""
    return psnr(inferred, target) - psnr(random, target)


@torch.inference_mode()
def genie_delta_psnr(
    world_model, frames: Tensor, latent_actions: Tensor, t: int = 4, generator=None
) -> Tensor:
    """ΔtPSNR per clip. frames uint8 (B, T, H, W, C) with T >= t; latent_actions long (B, >= t-1) inferred
    from those frames (action i leads from frame i to i+1, 0-based). Returns (B,) float."""
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
    return delta_psnr(frames[:, t - 1].to(results[0].device), results[0], results[1])
