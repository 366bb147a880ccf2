"""Learning-rate schedules shared by the families: LambdaLR factors of the base learning rate."""

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
