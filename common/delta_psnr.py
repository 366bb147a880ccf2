"""The controllability metric ΔtPSNR (Genie §3), for any world model that takes discrete actions.

ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t): x̂_t is generated from the first real frame x_1 with the
actions that produced the real frames, x̂'_t from the same frame with actions drawn uniformly at
random. Genie's actions are the latent actions its LAM infers from the real frames; Oasis' are the
recorded environment actions. Frames are 1-based as in the paper: with x_1 as the prompt, frame x_t
is the (t-1)-th generated frame (t = 4: three generated frames). Higher means the actions control
the generation more; about 0 means the model ignores them. Over an evaluation set each PSNR is the
set PSNR of its images (common.metrics.SetPSNR), so ΔtPSNR = 10·log10(mean MSE with random / mean
MSE with the real actions).

Its uncertainty: `bootstrap_delta_psnr` resamples the evaluation's clips with replacement and takes the
5th and 95th percentiles of the resampled ΔtPSNRs (the percentile bootstrap, Efron & Tibshirani 1993,
"An Introduction to the Bootstrap", ch. 13), each resample a difference of set PSNRs like the point
value; with the clips' level seeds it can resample whole levels instead (the cluster bootstrap).
`ClipErrors` keeps the per-clip errors of an evaluation epoch for it (and for reports).
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


BOOTSTRAP_RESAMPLES = 10_000  # >= 1,000; the 5th percentile of 10,000 moves by ~0.01 dB between seeds
BOOTSTRAP_SEED = 0


def bootstrap_delta_psnr(
    inferred: Tensor,
    random: Tensor,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    quantiles: tuple[float, float] = (0.05, 0.95),
    groups: Tensor | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ΔtPSNR, in dB: its (5th, 95th) percentiles by default.

    inferred, random: (N,) per-clip MSEs (`delta_psnr_errors`) of one evaluation set. Each of `resamples`
    resamples draws N clips with replacement and computes 10·log10(mean random MSE / mean inferred MSE)
    over the drawn clips, the set-PSNR difference the point value is. groups: (N,) a label per clip (its
    level seed): then each resample draws as many groups as there are, with replacement, and takes all
    their clips (the cluster bootstrap, Davison & Hinkley 1997, "Bootstrap Methods and their Application",
    §3.8): clips of one level are correlated, so resampling them one by one understates the spread over
    levels. Seeded by `seed` (torch.Generator): the same inputs give the same interval.
    ValueError for fewer than 1,000 resamples or no clips."""
    if resamples < 1000:
        raise ValueError(f"bootstrap_delta_psnr: resamples={resamples}; use at least 1000 resamples")
    inferred, random = inferred.detach().double().flatten().cpu(), random.detach().double().flatten().cpu()
    if inferred.numel() == 0 or inferred.shape != random.shape:
        raise ValueError(f"bootstrap_delta_psnr: needs equal, non-empty per-clip errors, got "
                         f"{tuple(inferred.shape)} and {tuple(random.shape)}")  # fmt: skip
    if groups is None:  # every clip its own group
        sums, counts = torch.stack([inferred, random]), torch.ones_like(inferred)
    else:
        labels = torch.unique(groups.flatten().cpu(), return_inverse=True)[1]
        sums = torch.zeros(2, int(labels.max()) + 1, dtype=torch.float64)
        sums.index_add_(1, labels, torch.stack([inferred, random]))
        counts = torch.bincount(labels).double()
    n = counts.numel()
    generator = torch.Generator().manual_seed(seed)
    values = []
    for chunk in range(0, resamples, 1000):  # (1000, n) indices at a time: bounded memory for large n
        idx = torch.randint(n, (min(1000, resamples - chunk), n), generator=generator)
        drawn = counts[idx].sum(1)
        values.append(psnr_of_mse(sums[0][idx].sum(1) / drawn) - psnr_of_mse(sums[1][idx].sum(1) / drawn))
    low, high = torch.quantile(torch.cat(values), torch.tensor(quantiles, dtype=torch.float64)).tolist()
    return low, high


class ClipErrors:
    """Per-clip ΔtPSNR errors of one evaluation epoch, per metric name: real-action MSE, random-action MSE
    and the clip's level seed (-1 when unknown). `gather` joins the ranks' lists under DDP."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Tensor]] = {}  # name -> [(3, B) float64: inferred, random, seed]

    def add(self, name: str, errors: tuple[Tensor, Tensor], seeds: Tensor | None = None) -> None:
        inferred, random = (e.detach().double().flatten().cpu() for e in errors)
        seeds = torch.full_like(inferred, -1) if seeds is None else seeds.detach().double().flatten().cpu()
        self.columns.setdefault(name, []).append(torch.stack([inferred, random, seeds]))

    def gather(self, gather=None) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """{name: (inferred (N,), random (N,), seeds (N,) long)} of this process, or of every rank when
        `gather` (an object -> the list of every rank's object, in rank order) is given."""
        parts = [{k: torch.cat(v, dim=1) for k, v in self.columns.items()}]
        if gather is not None:
            parts = gather(parts[0])
        names = sorted({k for part in parts for k in part})
        joined = {k: torch.cat([part[k] for part in parts if k in part], dim=1) for k in names}
        return {k: (v[0], v[1], v[2].long()) for k, v in joined.items()}

    def reset(self) -> None:
        self.columns = {}


def derive_delta_psnr(values: dict[str, float]) -> dict[str, float]:
    """Set PSNRs -> metrics: every `{name}/inferred` + `{name}/random` pair becomes `{name}` = their
    difference (the ΔtPSNR); the other entries pass through."""
    out = {k: v for k, v in values.items() if not k.endswith(("/inferred", "/random"))}
    for key in values:
        if key.endswith("/inferred"):
            base = key.removesuffix("/inferred")
            out[base] = values[key] - values[f"{base}/random"]
    return out
