"""The families' optimiser: AdamW with a learning-rate warm-up, then a cosine decay or a constant rate.

Schedules are LambdaLR factors of the base learning rate, stepped every optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch


def cosine_factor(step: int, start: int, total: int, lr: float, min_lr: float) -> float:
    """Factor of `lr` on a cosine from lr (at `start`) to min_lr (at `total` and after)."""
    progress = min(1.0, max(0, step - start) / max(1, total - start))
    return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))) / lr


def warmup_cosine(
    warmup_steps: int, total_steps: int, lr: float, min_lr: float, offset: int = 1
) -> Callable[[int], float]:
    """Factor of `lr`: (step + offset) / warmup_steps while step < warmup_steps (offset 1: the first
    step already trains; DIAMOND's warm-up starts from 0), then a cosine from lr to min_lr by
    total_steps (constant when min_lr == lr)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + offset) / warmup_steps
        return cosine_factor(step, warmup_steps, total_steps, lr, min_lr)

    return factor


def total_steps(module: L.LightningModule, warmup_steps: int) -> int:
    """The run's optimizer steps (at least one past the warm-up), for the end of a decay."""
    return max(int(module.trainer.estimated_stepping_batches), warmup_steps + 1)


def per_step(opt: torch.optim.Optimizer, factor: Callable[[int], float]) -> dict:
    """Lightning's configure_optimizers value: `opt` with a LambdaLR stepped every optimizer step."""
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def adamw_warmup_cosine(
    module: L.LightningModule,
    params,
    lr: float,
    betas,
    weight_decay: float,
    warmup_steps: int,
    min_lr: float | None = None,
    eps: float = 1e-8,
    offset: int = 1,
) -> dict:
    """Lightning's configure_optimizers value: AdamW over `params` (tensors, or param groups with their own
    weight_decay) and `warmup_cosine` stepped every optimizer step: the rate rises over warmup_steps, then
    falls on a cosine from lr to min_lr by the run's last step, or stays at lr (min_lr None or lr; the run's
    length is then not needed). Genie: min_lr below lr; Oasis: constant; DIAMOND: constant or a decay, with
    its warm-up from 0 (offset 0), its eps and no weight decay on biases and embeddings (param groups)."""
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    min_lr = lr if min_lr is None else min_lr
    total = warmup_steps + 1 if min_lr == lr else total_steps(module, warmup_steps)
    return per_step(opt, warmup_cosine(warmup_steps, total, lr, min_lr, offset))
