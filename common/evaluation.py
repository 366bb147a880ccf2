"""Evaluation draws that depend on the seed alone, and the one rollout evaluation every family's
LightningModule runs at validation and test (DESIGN.md Metrics), through the WorldModel interface only.

    metrics = evaluate_rollout(world_model, batch, generator, context=4, horizon=8, prefix="test", meter=self)
    self.log_dict(metrics, ...)

From `context` real frames it rolls the model out `horizon` steps with the clip's actions and adds, as
set-PSNR errors to `meter.set_psnr`, `{prefix}/psnr_next`, `psnr_copy_last`, `rollout_psnr_k{k}` and
`rollout_copy_last_k{k}` (common.metrics.rollout_metrics); with `shuffled`, `{prefix}/psnr_next_shuffled`
(the next frame with the batch's actions dealt to other clips: common.metrics.shuffled_next_errors); with
`delta_t`, ΔtPSNR at t = delta_t from the first real frame, the clip's actions against uniformly random
ones (`meter.add_delta_psnr`, common.delta_psnr). The per-clip next-frame errors also go to
`meter.add_paired_errors` as `{prefix}/psnr_next_minus_copy_last` (and `psnr_next_minus_shuffled`), so that
these differences are logged with bootstrap intervals over clips like ΔtPSNR. The clip's actions are `batch["actions"]`, or for a
model of latent actions (`WorldModel.latent_actions`: Genie) the ones `world_model.infer_actions` reads
from the clip's frames.

Seeded: the world model's sampling is seeded with `generator.initial_seed()` (`WorldModel.seed`) and every
other draw (the shuffle, the random actions) comes from `generator`, so the metrics are a function of the
weights, the batch and the generator's seed: two evaluations of one checkpoint agree, whatever the
global RNG, the batch order or the number of ranks. Modules pass `torch.Generator().manual_seed(batch_idx)`,
and compute their evaluation losses (random noise levels, masks) inside `seeded(batch_idx, device)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from common.delta_psnr import delta_psnr_errors
from common.metrics import rollout_metrics, shuffled_next_errors


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Inside it torch's global RNG (CPU, and `device` when it is a CUDA device) starts from `seed`; after
    it, the RNG is where it was before (torch.random.fork_rng): for draws of code that takes no generator
    (an evaluation loss's noise levels and masks), without moving the training run's RNG."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def clip_actions(world_model, batch: dict[str, Tensor]) -> Tensor:
    """long (B, T): the actions a rollout of this world model plays on the batch's clips. For a model of
    latent actions, the latent action from frame t to t + 1 that `infer_actions` reads (the last, which
    leads past the clip, 0); else `batch["actions"]`."""
    if not world_model.latent_actions:
        return batch["actions"]
    frames = batch["frames"]
    inferred = world_model.infer_actions(frames).to(frames.device)  # (B, T - 1)
    return torch.cat([inferred, inferred.new_zeros(inferred.shape[0], 1)], dim=1)


@torch.inference_mode()
def evaluate_rollout(
    world_model,
    batch: dict[str, Tensor],
    generator: torch.Generator,
    *,
    context: int,
    horizon: int,
    prefix: str,
    meter: Any,
    horizons: set[int] | None = None,
    shuffled: bool = True,
    delta_t: int | None = None,
) -> dict[str, float]:
    """Evaluate `world_model` (a WorldModel) on `batch` (frames uint8 (B, T, H, W, C), actions long (B, T),
    optional seeds (B,) of the clips' levels) with T >= context + horizon; see the module docstring.

    generator: a CPU torch.Generator; its seed seeds the world model, its draws the rest.
    meter: a common.set_psnr_logging.SetPSNRLogging (the module): its set_psnr, add_delta_psnr and
    add_paired_errors.
    horizons: the rollout steps k to record (None: 1..horizon). delta_t: None or a clip shorter than it
    skips ΔtPSNR. Returns the scalar metrics to log: {f"{prefix}/ssim_next": mean SSIM of step 1,
    f"{prefix}/ssim_copy_last": the copy-last baseline's}."""
    frames = batch["frames"]
    actions = clip_actions(world_model, batch)
    world_model.seed(generator.initial_seed())
    result = rollout_metrics(world_model, frames, actions, context, horizon, prefix, meter.set_psnr, horizons)
    # (B,) each, on one device: the per-clip errors behind psnr_next and psnr_copy_last
    e_next, e_copy = result.next_errors, result.copy_errors
    seeds = batch.get("seeds")
    meter.add_paired_errors(f"{prefix}/psnr_next_minus_copy_last", (e_next, e_copy), seeds)
    if shuffled:
        errors = shuffled_next_errors(world_model, frames, actions, context, generator)
        meter.set_psnr.add(f"{prefix}/psnr_next_shuffled", errors)  # the batch's actions across clips
        meter.add_paired_errors(
            f"{prefix}/psnr_next_minus_shuffled", (e_next, errors.to(e_next.device)), seeds
        )
    if delta_t is not None and frames.shape[1] >= delta_t:
        errors = delta_psnr_errors(world_model, frames, actions, delta_t, generator)
        meter.add_delta_psnr(f"{prefix}/delta_psnr_t{delta_t}", errors, seeds)
    return result.ssims


@torch.inference_mode()
def latent_action_video(world_model, starts: Tensor, steps: int = 8, seed: int = 0) -> Tensor:
    """Every latent action held from the same real frames: starts uint8 (R, H, W, C) -> uint8
    (R, A, steps, H, W, C), [r, a] the `steps` frames `world_model` (of latent actions) generates from
    starts[r] with latent action a at every step (A = num_actions; sampling seeded with `seed`)."""
    a = world_model.num_actions
    world_model.seed(seed)
    world_model.reset(starts.repeat_interleave(a, dim=0)[:, None])  # (R * A, 1, H, W, C), rows r-major
    actions = torch.arange(a, device=starts.device).repeat(starts.shape[0])
    frames = torch.stack([world_model.step(actions).frames for _ in range(steps)], dim=1)
    return frames.reshape(starts.shape[0], a, *frames.shape[1:])
