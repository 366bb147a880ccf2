"""Frame metrics and family-agnostic rollout evaluation (DESIGN.md "Metrics").

PSNR / SSIM compare frames scaled to [0, 1]. `rollout_metrics` drives any WorldModel from real
context frames with real (or given) actions and reports, beside every prediction metric, the
copy-last-frame baseline on the same frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def to_unit(frames: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] frames (..., H, W, C) -> float32 in [0, 1]."""
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    return frames.float().clamp(0.0, 1.0)


def psnr(pred: Tensor, target: Tensor, eps: float = 1e-10) -> Tensor:
    """Per-image PSNR in dB. pred, target: (..., H, W, C) uint8 or [0,1] float -> (...,)."""
    mse = (to_unit(pred) - to_unit(target)).pow(2).flatten(-3).mean(-1)
    return 10.0 * torch.log10(1.0 / (mse + eps))


def ssim(pred: Tensor, target: Tensor, window: int = 7) -> Tensor:
    """Per-image SSIM (uniform window, constants of Wang et al. 2004). (..., H, W, C) -> (...,)."""
    lead = pred.shape[:-3]
    x = rearrange(to_unit(pred), "... h w c -> (...) c h w")
    y = rearrange(to_unit(target), "... h w c -> (...) c h w")
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda t: F.avg_pool2d(t, window, stride=1)
    mx, my = pool(x), pool(y)
    vx = pool(x * x) - mx * mx
    vy = pool(y * y) - my * my
    cxy = pool(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(lead)


@torch.inference_mode()
def rollout(world_model, frames: Tensor, actions: Tensor, context: int, horizon: int) -> Tensor:
    """Autoregressive generation from real context.

    frames: uint8 (B, T, H, W, C) with T >= context + horizon; actions: long (B, T), action t leads
    from frame t to t+1. Returns uint8 (B, horizon, H, W, C): predictions of frames context..context+horizon-1.
    """
    world_model.reset(frames[:, :context], actions[:, :context])
    out = []
    for k in range(horizon):
        out.append(world_model.step(actions[:, context - 1 + k]).frames)
    return torch.stack(out, dim=1)


def rollout_metrics(
    world_model, frames: Tensor, actions: Tensor, context: int, horizon: int, prefix: str
) -> tuple[dict[str, float], Tensor]:
    """PSNR/SSIM of a rollout and of the copy-last-frame baseline, named as DESIGN.md says.

    Returns ({f"{prefix}/psnr_next", f"{prefix}/psnr_copy_last", f"{prefix}/ssim_next",
    f"{prefix}/rollout_psnr_k{k}", f"{prefix}/rollout_copy_last_k{k}" for k = 1..horizon}, generated).
    psnr_next is step 1 of the rollout: the next frame predicted from real context and real action.
    """
    generated = rollout(world_model, frames, actions, context, horizon)
    target = frames[:, context : context + horizon]
    last = frames[:, context - 1 : context].expand_as(target)
    p_gen = psnr(generated, target).mean(0)  # (horizon,)
    p_copy = psnr(last, target).mean(0)
    out = {
        f"{prefix}/psnr_next": p_gen[0].item(),
        f"{prefix}/psnr_copy_last": p_copy[0].item(),
        f"{prefix}/ssim_next": ssim(generated[:, 0], target[:, 0]).mean().item(),
    }
    for k in range(1, horizon + 1):
        out[f"{prefix}/rollout_psnr_k{k}"] = p_gen[k - 1].item()
        out[f"{prefix}/rollout_copy_last_k{k}"] = p_copy[k - 1].item()
    return out, generated


def f1_score(pred: Tensor, target: Tensor, positive: int = 1) -> float:
    """Binary F1 of integer predictions against integer targets for class `positive` (1.0 if both empty)."""
    p, t = pred == positive, target == positive
    tp = (p & t).sum().item()
    denom = p.sum().item() + t.sum().item()
    return 1.0 if denom == 0 else 2.0 * tp / denom
