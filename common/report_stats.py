"""Statistics over seeds for the report: mean ± std, intervals, and verdicts read from intervals.

Intervals are two-sided at LEVEL = 90%, the level of ΔtPSNR's bootstrap interval (5th-95th percentile,
common/delta_psnr.py): a lower end above 0 is a one-sided test of "> 0" at the 5% level.

- Over n >= 2 seeds: Student's t-interval of the mean, mean ± t(0.95, n-1) · s / sqrt(n) (s: sample
  standard deviation, ddof=1; scipy.stats.t). It measures how much training varies between seeds.
- One seed: the bootstrap interval over test clips that the run logged as `<metric>_low` and
  `<metric>_high`, when it did; otherwise there is no interval and the verdict is "undetermined".

A verdict never reads the point value: a model 0.1 dB above copy-last with an interval of [-0.3, 0.5]
"does not beat copy-last".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

LEVEL = 0.90


@dataclass(frozen=True)
class Estimate:
    """Values of one metric, one per seed that has it (n = len(values) >= 1)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1); None for one value (there is no spread to show)."""
        return statistics.stdev(self.values) if self.n > 1 else None


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    source: str  # "seeds" (t-interval over seeds) or "bootstrap" (over test clips, one seed)

    def __str__(self) -> str:
        return f"[{self.low:.3g}, {self.high:.3g}] ({self.source})"


def t_interval(values: tuple[float, ...] | list[float], level: float = LEVEL) -> Interval | None:
    """Student's t-interval of the mean of `values` (None for fewer than 2)."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return Interval(mean - half, mean + half, "seeds")


def interval(estimate: Estimate, bootstrap: tuple[float, float] | None = None) -> Interval | None:
    """The interval a verdict reads: over seeds when n >= 2, else the run's bootstrap interval, else None."""
    if estimate.n >= 2:
        return t_interval(estimate.values)
    if bootstrap is not None:
        return Interval(bootstrap[0], bootstrap[1], "bootstrap")
    return None


def beats_baseline(iv: Interval | None, baseline: str = "copy-last") -> str:
    """Verdict in words on a difference model - baseline."""
    if iv is None:
        return f"undetermined vs {baseline} (no interval: one seed, no bootstrap)"
    if iv.low > 0:
        return f"beats {baseline}"
    if iv.high < 0:
        return f"does not beat {baseline} (worse)"
    return f"does not beat {baseline} (interval includes 0)"


def responds_to_actions(iv: Interval | None) -> str:
    """Verdict in words on ΔtPSNR (real minus random actions)."""
    if iv is None:
        return "undetermined whether it responds to actions (no interval: one seed, no bootstrap)"
    if iv.low > 0:
        return "responds to actions"
    return (
        "does not respond to actions (interval includes 0)"
        if iv.high >= 0
        else ("does not respond to actions (random actions score higher)")
    )


def fmt(x: float) -> str:
    """4 significant digits, no exponent below 1e6 in magnitude."""
    return f"{x:.4g}" if abs(x) < 1e6 else f"{x:.3e}"


def fmt_estimate(e: Estimate, sign: bool = False) -> str:
    """`mean ± std` (the std to 2 significant digits, the mean to the same decimal place); the value alone
    for one seed, never "± 0" for it, and "(all seeds)" after a value every seed has (a copy-last score on
    the same test data). sign: a leading + on positive values (differences)."""
    plus = "+" if sign else ""
    if e.std is None or e.std == 0:
        text = f"{e.mean:{plus}.4g}"
        return text if e.std is None else f"{text} (all seeds)"
    std = float(f"{e.std:.2g}")  # rounded first: 0.0999999 shows as 0.10, not 0.100
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{e.mean:{plus}.{decimals}f} ± {std:.{decimals}f}"
