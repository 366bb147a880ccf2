"""The report's three kinds of plot (matplotlib, Agg, PNG), each line a mean over seeds with a ±1 std band:

- `rollout_<group>.png`, one per group: test PSNR at rollout step k (`test/rollout_psnr_k{K}`) against k,
  the copy-last baseline (`test/rollout_copy_last_k{K}`) dashed in the same colour.
- `curves_<stage>.png`, one per stage name: its training curves, one panel per loss (train solid, val
  with markers) and per validation PSNR (`val/psnr_recon`, `val/psnr_next` with `val/psnr_copy_last`
  dashed, `val/delta_psnr_t{T}`), every group holding that stage in its own colour.
- `compute.png`, one for all groups: next-frame PSNR - copy-last and ΔtPSNR against training CPU-minutes
  (GPU-minutes when every group has them), error bars ±1 std over seeds.

Each function returns what it drew and names what it could not (runs without curves, groups without a
metric or a training time), so the report lists them rather than skip them silently.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.report_headline import delta_t_keys, run_values
from common.report_runs import Group, Run
from common.report_stats import Estimate

_ROLLOUT = re.compile(r"^test/rollout_psnr_k(\d+)$")
MAX_LOSS_PANELS = 4


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_") or "group"


def _band(ax, xs, values: list[Estimate], color, style: str = "-", label: str | None = None, marker=None):
    means = [v.mean for v in values]
    line = ax.plot(xs, means, style, color=color, label=label, marker=marker)[0]
    spread = [v.std or 0.0 for v in values]
    if any(spread):
        ax.fill_between(xs, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)],
                        color=line.get_color(), alpha=0.2, linewidth=0)  # fmt: skip
    return line


def plot_rollout(group: Group, out: Path) -> Path | None:
    """Rollout PSNR against k for one group (see the module docstring); None when no k was logged."""
    values = [run_values(r) for r in group.runs]
    ks = sorted({int(m[1]) for v in values for key in v if (m := _ROLLOUT.match(key))})
    if not ks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_title(f"{group.label}: rollout", fontsize=9)
    for key, style, label in (("rollout_psnr", "-", "model"), ("rollout_copy_last", "--", "copy-last")):
        xs, est = [], []
        for k in ks:
            got = tuple(v[f"test/{key}_k{k}"] for v in values if f"test/{key}_k{k}" in v)
            if got:
                xs.append(k)
                est.append(Estimate(got))
        if xs:
            n = max(e.n for e in est)
            _band(ax, xs, est, "C0" if label == "model" else "C7", style, f"{label} (n={n})",
                  marker="o" if len(xs) < 12 else None)  # fmt: skip
    ax.set_xlabel("rollout step k (frames generated from real context)")
    ax.set_ylabel("test PSNR (dB)")
    if len(ks) > 1 and ks[-1] / max(ks[0], 1) >= 16:
        ax.set_xscale("log", base=2)
    if len(ks) <= 12:
        ax.set_xticks(ks, [str(k) for k in ks])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def curve_panels(groups: list[Group], stage: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(panel title, [(metric, style)])] for one stage: losses first, then validation PSNRs."""
    metrics = {m for g in groups for r in g.runs for (s, m), pts in r.curves.items() if s == stage and pts}
    losses = sorted({m.split("/", 1)[1] for m in metrics if "/" in m and "loss" in m.split("/", 1)[1]
                     and m.split("/", 1)[0] in ("train", "val")}, key=lambda n: (n != "loss", n))  # fmt: skip
    panels = []
    for name in losses[:MAX_LOSS_PANELS]:
        panels.append((name, [(f"{split}/{name}", style) for split, style in (("train", "-"), ("val", "o-"))
                              if f"{split}/{name}" in metrics]))  # fmt: skip
    if "val/psnr_recon" in metrics:
        panels.append(("val PSNR recon (dB)", [("val/psnr_recon", "o-")]))
    if "val/psnr_next" in metrics:
        panels.append(("val next-frame PSNR (dB), copy-last dashed",
                       [("val/psnr_next", "o-"), ("val/psnr_copy_last", "--")]))  # fmt: skip
    for key in sorted(m for m in metrics if re.match(r"^val/delta_psnr_t\d+$", m)):
        panels.append((f"val ΔtPSNR t={key.rsplit('t', 1)[1]} (dB)", [(key, "o-")]))
    return panels


def curve_stats(runs: list[Run], key: tuple[str, str]) -> tuple[list[int], list[Estimate]]:
    """Per step over the runs that logged it: steps and their Estimate (the last value logged at a step counts)."""
    per_step: dict[int, list[float]] = {}
    for run in runs:
        for step, value in dict(run.curves.get(key, [])).items():
            per_step.setdefault(step, []).append(value)
    steps = sorted(per_step)
    return steps, [Estimate(tuple(per_step[s])) for s in steps]


def plot_stage_curves(groups: list[Group], stage: str, out: Path) -> tuple[Path | None, list[str]]:
    """One figure of a stage's training curves (see the module docstring) and the runs drawn without
    curves in it: (path or None when no run has any, ["<run path> (seed S): no curves for <stage>"])."""
    holding = [g for g in groups if stage in g.stages]
    missing = [
        f"{r.path} (seed {r.seed}): no curves for stage {stage}"
        for g in holding
        for r in g.runs
        if not any(s == stage and pts for (s, _), pts in r.curves.items())
    ]
    panels = curve_panels(holding, stage)
    if not panels:
        return None, missing
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=9)
        for i, group in enumerate(holding):
            for metric, style in keys:
                steps, est = curve_stats(group.runs, (stage, metric))
                if not steps:
                    continue
                n = sum(1 for r in group.runs if r.curves.get((stage, metric)))
                marker = "o" if "o" in style else None
                _band(ax, steps, est, f"C{i % 10}", style.replace("o", "") or "-",
                      f"{group.label} {metric} (n={n})", marker if len(steps) < 30 else None)  # fmt: skip
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"stage {stage}: mean over seeds, ±1 std band", fontsize=10)
    return _save(fig, out), missing


def compute_points(group: Group, metric: str, kind: str) -> tuple[Estimate, Estimate] | None:
    """(training minutes, metric) over the seeds that have both; None when none has."""
    pairs = [
        (v[f"time/train_{kind}"] / 60, v[metric])
        for v in map(run_values, group.runs)
        if f"time/train_{kind}" in v and metric in v
    ]
    if not pairs:
        return None
    return Estimate(tuple(p[0] for p in pairs)), Estimate(tuple(p[1] for p in pairs))


def plot_compute(groups: list[Group], out: Path) -> tuple[Path | None, list[str]]:
    """The cross-group compute plot (see the module docstring) and the groups it could not place."""
    kind = (
        "gpu_s"
        if groups and all(any("time/train_gpu_s" in r.final for r in g.runs) for g in groups)
        else "cpu_s"
    )
    unit = "GPU" if kind == "gpu_s" else "CPU"
    delta_keys = sorted({k for g in groups for k in delta_t_keys(g)})
    metrics = [("test/psnr_next_minus_copy_last", "next-frame PSNR - copy-last (dB)")]
    metrics += [(k, f"ΔtPSNR t={k.rsplit('t', 1)[1]} (dB)") for k in delta_keys[:1]]
    notes, panels = [], []
    for metric, title in metrics:
        points = {g.label: p for g in groups if (p := compute_points(g, metric, kind)) is not None}
        for g in groups:
            if g.label not in points:
                values = [run_values(r) for r in g.runs]
                why = (f"no time/train_{kind} (no time/<stage>_{kind} in metrics.json)"
                       if not any(f"time/train_{kind}" in v for v in values) else f"no {metric}")  # fmt: skip
                notes.append(f"{title}: {g.label} not drawn ({why})")
        if points:
            panels.append((title, points))
    if not panels:
        return None, notes
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, points) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=9)
        for i, (label, (x, y)) in enumerate(points.items()):
            ax.errorbar([x.mean], [y.mean], xerr=[x.std or 0], yerr=[y.std or 0], fmt="o", color=f"C{i % 10}",
                        capsize=3, label=f"{label} (n={y.n})")  # fmt: skip
        ax.axhline(0.0, color="0.5", linestyle="--", linewidth=1)
        ax.set_xlabel(f"training {unit}-minutes (sum over stages)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return _save(fig, out), notes


def _save(fig, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
