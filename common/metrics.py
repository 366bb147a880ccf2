"""Frame metrics and family-agnostic rollout evaluation (DESIGN.md "Metrics").

PSNR / SSIM compare frames scaled to [0, 1]; SSIM is torchmetrics' (Gaussian 11x11 window). `rollout_metrics` drives any WorldModel from real
context frames with real (or given) actions and adds, beside every prediction error, the
copy-last-frame baseline's error on the same frames to a `SetPSNR`.

Evaluation PSNRs (psnr_recon, psnr_next, rollouts, ΔtPSNR) are *set* PSNRs: 10·log10(1 / MSE) of the
MSE averaged over every image of the evaluation epoch, as torchmetrics' PeakSignalNoiseRatio reduces by
default. The mean of per-image PSNRs is not used there: an exact copy scores 10·log10(1/eps) (100 dB),
so on video where many frames repeat (random-policy CoinRun, Breakout, Crafter) the copy-last baseline
was set by eps rather than by the frames that change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure


def to_unit(frames: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] frames (..., H, W, C) -> float32 in [0, 1]."""
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    return frames.float().clamp(0.0, 1.0)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image mean squared error on [0, 1]. pred, target: (..., H, W, C) uint8 or [0,1] float -> (...,)."""
    return (to_unit(pred) - to_unit(target)).pow(2).flatten(-3).mean(-1)


def psnr_of_mse(err: Tensor, eps: float = 1e-10) -> Tensor:
    """PSNR in dB of a mean squared error on [0, 1] (any shape)."""
    return 10.0 * torch.log10(1.0 / (err + eps))


def psnr(pred: Tensor, target: Tensor, eps: float = 1e-10) -> Tensor:
    """Per-image PSNR in dB. pred, target: (..., H, W, C) uint8 or [0,1] float -> (...,)."""
    return psnr_of_mse(mse(pred, target), eps)


class SetPSNR:
    """PSNR of a set of images per metric name: 10·log10(1 / mean of their per-image MSEs).

    `add(name, err)` adds per-image MSEs (any shape); `compute()` returns {name: dB}. Under DDP pass
    `reduce` (sums a tensor over ranks) so every rank reports the PSNR of the whole set. Over the same
    images this is torchmetrics' PeakSignalNoiseRatio(data_range=1) with its default reduction
    (tests/test_metrics.py); it takes per-image errors instead of images because the same errors feed
    ΔtPSNR's bootstrap intervals (common/delta_psnr.py) and come from frames decoded elsewhere.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}  # name -> float64 [sum of MSEs, number of images]

    def add(self, name: str, err: Tensor) -> None:
        err = err.detach().double().flatten()
        total = torch.stack([err.sum(), torch.tensor(float(err.numel()), dtype=torch.float64)])
        self.sums[name] = self.sums[name] + total.to(self.sums[name]) if name in self.sums else total

    def compute(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        out = {}
        for name in sorted(self.sums):
            total = reduce(self.sums[name]) if reduce else self.sums[name]
            out[name] = psnr_of_mse(total[0] / total[1].clamp(min=1)).item()
        return out

    def reset(self) -> None:
        self.sums = {}


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data
    range 1, at every pixel of the reflect-padded frame, mean over pixels and channels (torchmetrics'
    structural_similarity_index_measure). pred, target (..., H, W, C) uint8 or [0, 1] float, H and W
    above 5 -> (...,)."""
    lead = pred.shape[:-3]
    x = rearrange(to_unit(pred).float(), "... h w c -> (...) c h w")
    y = rearrange(to_unit(target).float(), "... h w c -> (...) c h w")
    # in float32 even inside a bf16 autocast region (a bf16-mixed stage's test): its variances are
    # differences of nearly equal means, which bfloat16's 8-bit mantissa cancels to noise
    with torch.autocast(device_type=x.device.type, enabled=False):
        return structural_similarity_index_measure(x, y, data_range=1.0, reduction="none").reshape(lead)


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


class Rollout(NamedTuple):
    """What `rollout_metrics` measured beside the errors it added to its meter.

    ssims: {f"{prefix}/ssim_next": mean SSIM of step 1, f"{prefix}/ssim_copy_last": the copy-last frame's};
    generated: uint8 (B, horizon, H, W, C); next_errors, copy_errors: float (B,), step 1's per-clip MSE of
    the model and of the copy-last baseline (the pairs behind psnr_next and psnr_copy_last)."""

    ssims: dict[str, float]
    generated: Tensor
    next_errors: Tensor
    copy_errors: Tensor


def rollout_metrics(
    world_model,
    frames: Tensor,
    actions: Tensor,
    context: int,
    horizon: int,
    prefix: str,
    meter: SetPSNR,
    horizons: set[int] | None = None,
) -> Rollout:
    """Roll `world_model` out and add its errors and the copy-last-frame baseline's to `meter`.

    Adds per-image MSEs under f"{prefix}/psnr_next", f"{prefix}/psnr_copy_last" (step 1: the next frame
    from real context and real action) and f"{prefix}/rollout_psnr_k{k}", f"{prefix}/rollout_copy_last_k{k}"
    for k in 1..horizon (or only those k in `horizons`). Returns a `Rollout`.
    """
    generated = rollout(world_model, frames, actions, context, horizon)
    target = frames[:, context : context + horizon]
    last = frames[:, context - 1 : context].expand_as(target)
    e_gen, e_copy = mse(generated, target), mse(last, target)  # (B, horizon)
    meter.add(f"{prefix}/psnr_next", e_gen[:, 0])
    meter.add(f"{prefix}/psnr_copy_last", e_copy[:, 0])
    for k in range(1, horizon + 1):
        if horizons is None or k in horizons:
            meter.add(f"{prefix}/rollout_psnr_k{k}", e_gen[:, k - 1])
            meter.add(f"{prefix}/rollout_copy_last_k{k}", e_copy[:, k - 1])
    ssims = {
        f"{prefix}/ssim_next": ssim(generated[:, 0], target[:, 0]).mean().item(),
        f"{prefix}/ssim_copy_last": ssim(last[:, 0], target[:, 0]).mean().item(),
    }
    return Rollout(ssims, generated, e_gen[:, 0], e_copy[:, 0])


def derangement(n: int, generator: torch.Generator) -> Tensor:
    """A seeded permutation of range(n) that moves every index when n > 1: long (n,), one n-cycle through
    a random order (perm[order[i]] = order[i + 1]); [0] for n = 1."""
    order = torch.randperm(n, generator=generator)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


@torch.inference_mode()
def shuffled_next_errors(world_model, frames: Tensor, actions: Tensor, context: int, generator) -> Tensor:
    """Per-clip MSE (B,) of the next frame generated with the actions shuffled across the batch's clips.

    As `rollout_metrics`' step 1 (`psnr_next`): real context frames[:, :context] with their recorded
    actions, then one step, but the action leading to the predicted frame (actions[:, context - 1]) is
    that of clip perm[b], perm a seeded `derangement` (no clip keeps its own; with B = 1 it does). A model
    that follows its actions scores lower here than on psnr_next; one that ignores them scores the same.
    frames uint8 (B, T, H, W, C), T > context; actions long (B, T); generator seeds the permutation."""
    perm = derangement(frames.shape[0], generator).to(actions.device)
    world_model.reset(frames[:, :context], actions[:, :context])
    predicted = world_model.step(actions[perm, context - 1]).frames
    return mse(predicted, frames[:, context].to(predicted.device))
