"""The controllability metric ΔtPSNR (Genie §3), for any world model that takes discrete actions.

ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t): x̂_t is generated from the first real frame x_1 with the
actions that produced the real frames, x̂'_t from the same frame with actions drawn uniformly at
random. Genie's actions are the latent actions its LAM infers from the real frames; Oasis' are the
recorded environment actions. Frames are 1-based as in the paper: with x_1 as the prompt, frame x_t
is the (t-1)-th generated frame (t = 4: three generated frames). Higher means the actions control
the generation more; about 0 means the model ignores them. Over an evaluation set each PSNR is the
set PSNR of its images (common.metrics.SetPSNR), so ΔtPSNR = 10·log10(mean MSE with random / mean
MSE with the real actions).
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.metrics import mse, psnr_of_mse


@torch.inference_mode()
def delta_psnr_errors(
    world_model, frames: Tensor, actions: Tensor, t: int = 4, generator=None
) -> tuple[Tensor, Tensor]:
    """Per-clip MSEs of x̂_t (real actions) and x̂'_t (random actions) against x_t. frames uint8
    (B, T, H, W, C) with T >= t; actions long (B, >= t-1) of those frames (action i leads from frame i
    to i+1, 0-based), each in [0, world_model.num_actions). Returns two (B,) float tensors."""
    if frames.shape[1] < t or actions.shape[1] < t - 1:
        raise ValueError(f"ΔtPSNR at t={t} needs clips of >= {t} frames, got {frames.shape[1]}")
    b = frames.shape[0]
    random = torch.randint(world_model.num_actions, (b, t - 1), generator=generator)
    results = []
    for acts in (actions[:, : t - 1], random.to(actions.device)):
        world_model.reset(frames[:, :1])
        for i in range(t - 1):
            frame = world_model.step(acts[:, i]).frames
        results.append(frame)
    target = frames[:, t - 1].to(results[0].device)
    return mse(results[0], target), mse(results[1], target)


def delta_psnr(world_model, frames: Tensor, actions: Tensor, t: int = 4, generator=None) -> Tensor:
    """ΔtPSNR of a batch of clips as one set (scalar); arguments as `delta_psnr_errors`."""
    inferred, random = delta_psnr_errors(world_model, frames, actions, t, generator)
    return psnr_of_mse(inferred.mean()) - psnr_of_mse(random.mean())


def add_delta_psnr_errors(meter, name: str, errors: tuple[Tensor, Tensor]) -> None:
    """Add `delta_psnr_errors` output to a SetPSNR meter as `{name}/inferred` and `{name}/random`."""
    meter.add(f"{name}/inferred", errors[0])
    meter.add(f"{name}/random", errors[1])


def derive_delta_psnr(values: dict[str, float]) -> dict[str, float]:
    """Set PSNRs -> metrics: every `{name}/inferred` + `{name}/random` pair becomes `{name}` = their
    difference (the ΔtPSNR); the other entries pass through."""
    out = {k: v for k, v in values.items() if not k.endswith(("/inferred", "/random"))}
    for key in values:
        if key.endswith("/inferred"):
            base = key.removesuffix("/inferred")
            out[base] = values[key] - values[f"{base}/random"]
    return out
