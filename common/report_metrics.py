"""Headline values derived from a run's final metrics, under the names metrics.json, W&B and the report share.

Derived from test metrics (DESIGN.md names) of one evaluation, in dB unless said:

- `test/psnr_next_minus_copy_last` = `test/psnr_next` - `test/psnr_copy_last`: > 0 when the model's next
  frame beats repeating the last real frame (both set PSNRs over the same test frames).
- `test/ssim_next_minus_copy_last` likewise, where `test/ssim_copy_last` is logged (SSIM, no unit).
- `test/rollout_psnr_k{K}_minus_copy_last` for K in HEADLINE_K where both `rollout_*_k{K}` are logged.

and from the training clock of each stage (common/stage_clock.py: `time/<stage>_wall_s`, `_cpu_s`, `_gpu_s`):

- `time/train_wall_s`, `time/train_cpu_s`, `time/train_gpu_s`: their sums over the stages recorded.

common/stages.py writes them into metrics.json and the stage's W&B run summary; common/report.py computes
them again from the raw metrics, so a run written before they existed reads the same.
"""

from __future__ import annotations

import re

HEADLINE_K = (1, 8, 16, 64)  # rollout steps the report's headline table shows, where logged

DIFFERENCES = {  # derived key -> (model key, copy-last key)
    "test/psnr_next_minus_copy_last": ("test/psnr_next", "test/psnr_copy_last"),
    "test/ssim_next_minus_copy_last": ("test/ssim_next", "test/ssim_copy_last"),
    **{
        f"test/rollout_psnr_k{k}_minus_copy_last": (f"test/rollout_psnr_k{k}", f"test/rollout_copy_last_k{k}")
        for k in HEADLINE_K
    },
}

CLOCK_KINDS = ("wall_s", "cpu_s", "gpu_s")
_STAGE_CLOCK = re.compile(r"^time/(?P<stage>.+)_(?P<kind>wall_s|cpu_s|gpu_s)$")


def differences(metrics: dict[str, float]) -> dict[str, float]:
    """{derived key: model - copy-last} for every pair of DIFFERENCES present in `metrics`."""
    return {
        key: metrics[a] - metrics[b] for key, (a, b) in DIFFERENCES.items() if a in metrics and b in metrics
    }


def stage_clocks(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """{stage: {"wall_s": ..., "cpu_s": ..., "gpu_s": ...}} from the `time/<stage>_<kind>` keys present
    (the totals `time/train_*` excluded)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        m = _STAGE_CLOCK.match(key)
        if m and m["stage"] != "train":
            out.setdefault(m["stage"], {})[m["kind"]] = value
    return out


def training_totals(metrics: dict[str, float]) -> dict[str, float]:
    """{`time/train_<kind>`: sum over stages} for each kind some stage recorded."""
    clocks = stage_clocks(metrics).values()
    return {
        f"time/train_{kind}": sum(c[kind] for c in clocks if kind in c)
        for kind in CLOCK_KINDS
        if any(kind in c for c in clocks)
    }


def derived_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Every derived headline value `metrics` allows: `differences` and `training_totals`."""
    return {**differences(metrics), **training_totals(metrics)}
