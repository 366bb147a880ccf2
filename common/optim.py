"""Learning-rate schedules shared by the families (as LambdaLR factors of the base learning rate)."""

from __future__ import annotations

import math


def cosine_factor(step: int, start: int, total: int, lr: float, min_lr: float) -> float:
    """Factor of `lr` on a cosine from lr (at `start`) to min_lr (at `total` and after)."""
    progress = min(1.0, max(0, step - start) / max(1, total - start))
    return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))) / lr
