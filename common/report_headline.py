"""The report's first table per group: headline metrics beside their baselines, over seeds, with verdicts.

Rows (each only where some seed logged it): next-frame PSNR and SSIM beside copy-last and their
difference, rollout PSNR at k in HEADLINE_K beside copy-last, reconstruction PSNR, ΔtPSNR with its
interval, reward / end F1 with their event counts ("no events" where the split has none: F1 is then
undefined and not logged), agent return beside a random policy's (one seed: the difference in standard
errors over episodes, and the human-normalised score), the imagined return beside the real rewards' signs
over the same steps, wall time, training CPU (GPU) minutes,
steps per stage and parameters. Values are mean ± std over the seeds that have them (common/report_stats.py);
differences are taken per seed, then averaged. Verdicts read intervals, never point values.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from common.report_metrics import HEADLINE_K, derived_metrics, stage_clocks
from common.report_runs import Group, Run
from common.report_stats import (
    Estimate,
    beats_baseline,
    fmt,
    fmt_estimate,
    interval,
    responds_to_actions,
)

COLUMNS = ("metric", "value", "baseline", "difference [90% interval]", "n", "verdict / notes")
_DELTA_T = re.compile(r"^test/delta_psnr_t(\d+)$")


@dataclass
class Row:
    metric: str
    value: str
    baseline: str = ""
    difference: str = ""
    n: str = ""
    verdict: str = ""

    def cells(self) -> list[str]:
        return [self.metric, self.value, self.baseline, self.difference, self.n, self.verdict]


def run_values(run: Run) -> dict[str, float]:
    """A run's final metrics with every derived headline value (common/report_metrics.py) recomputed."""
    return {**run.final, **derived_metrics(run.final)}


def estimate(group: Group, key: str) -> Estimate | None:
    values = tuple(v[key] for v in map(run_values, group.runs) if key in v)
    return Estimate(values) if values else None


def _n(e: Estimate, group: Group) -> str:
    return f"{e.n}/{len(group.runs)}"


def bootstrap(group: Group, key: str) -> tuple[float, float] | None:
    """The (low, high) interval the group's only run logged for `key` (`<key>_low`, `<key>_high`)."""
    if len(group.runs) != 1:
        return None
    v = run_values(group.runs[0])
    low, high = v.get(f"{key}_low"), v.get(f"{key}_high")
    return (low, high) if low is not None and high is not None else None


def copy_last_verdict(group: Group) -> str | None:
    """Whether the next frame beats copy-last, from the interval of psnr_next - psnr_copy_last."""
    key = "test/psnr_next_minus_copy_last"
    e = estimate(group, key)
    return None if e is None else beats_baseline(interval(e, bootstrap(group, key)))


def delta_t_keys(group: Group) -> list[str]:
    keys = {k for r in group.runs for k in r.final if _DELTA_T.match(k)}
    return sorted(keys, key=lambda k: int(_DELTA_T.match(k).group(1)))


def actions_verdict(group: Group) -> str | None:
    """Whether the model responds to actions, from the interval of ΔtPSNR (the smallest t logged)."""
    keys = delta_t_keys(group)
    if not keys:
        return None
    e = estimate(group, keys[0])
    return responds_to_actions(interval(e, bootstrap(group, keys[0])))


def verdicts(group: Group) -> list[str]:
    """The group's verdicts in words (copy-last, actions), those its metrics allow."""
    return [v for v in (copy_last_verdict(group), actions_verdict(group)) if v]


def difference_row(group: Group, label: str, model: str, base: str, diff: str, verdict: bool) -> Row | None:
    m = estimate(group, model)
    if m is None:
        return None
    row = Row(label, fmt_estimate(m), n=_n(m, group))
    b, d = estimate(group, base), estimate(group, diff)
    if b is not None:
        row.baseline = f"copy-last {fmt_estimate(b)}"
    if d is not None:
        iv = interval(d, bootstrap(group, diff))
        row.difference = fmt_estimate(d, sign=True) + (f" {iv}" if iv else "")
        if verdict:
            row.verdict = beats_baseline(iv)
    return row


def event_row(group: Group, label: str, name: str) -> Row | None:
    """F1 of reward / end events with the split's event counts; "no events" where F1 is undefined."""
    f1, events = estimate(group, f"test/{name}_f1"), estimate(group, f"test/{name}_events")
    predicted = estimate(group, f"test/{name}_predicted")
    if f1 is None and events is None:
        return None
    counts = []
    if events is not None:
        counts.append(f"{_count(events)} events in the test clips")
    if predicted is not None:
        counts.append(f"{_count(predicted)} predicted")
    if f1 is None:
        return Row(label, "no events", n=_n(events, group), verdict="; ".join(counts))
    return Row(label, fmt_estimate(f1), n=_n(f1, group), verdict="; ".join(counts))


def _count(e: Estimate) -> str:
    return f"{e.mean:.0f}" if e.std in (None, 0) else fmt_estimate(e)


def return_row(group: Group) -> Row | None:
    """Agent return (`test/return_mean`, one seed: ± its standard error) beside a random policy's."""
    ret = estimate(group, "test/return_mean")
    if ret is None:
        return None
    value = fmt_estimate(ret)
    sem = estimate(group, "test/return_sem")
    if ret.n == 1 and sem is not None:
        value += f" ± {fmt(sem.mean)} (s.e. over episodes)"
    row = Row("agent return", value, n=_n(ret, group))
    rnd = estimate(group, "test/random_return_mean")
    if rnd is not None:
        row.baseline = f"random policy {fmt_estimate(rnd)}"
        diffs = [
            v["test/return_mean"] - v["test/random_return_mean"]
            for v in map(run_values, group.runs)
            if "test/return_mean" in v and "test/random_return_mean" in v
        ]
        d = Estimate(tuple(diffs))
        iv = interval(d)
        row.difference = fmt_estimate(d, sign=True) + (f" {iv}" if iv else "")
        row.verdict = beats_baseline(iv, "a random policy")
        diff_sem = estimate(group, "test/return_diff_sem")
        if iv is None and ret.n == 1 and diff_sem is not None and diff_sem.mean > 0:
            # one seed: the episodes' standard error of the difference, sqrt(sem^2 + random sem^2)
            z = d.mean / diff_sem.mean
            row.difference += f" = {z:+.1f} s.e. of the difference"
            row.verdict = (
                f"{'beats' if z >= 3 else 'does not beat'} a random policy by >= 3 s.e. over episodes"
            )
    hns = estimate(group, "test/hns")
    if hns is not None:
        row.verdict = "; ".join(v for v in (row.verdict, f"human-normalised {fmt_estimate(hns)}") if v)
    return row


def imagined_row(group: Group) -> Row | None:
    """The agent's return in the world model from the real episodes' starts (predicted reward signs) beside
    the real rewards' signs over the same steps: the gap between dream and reality."""
    imag = estimate(group, "test/imagined_return_mean")
    if imag is None:
        return None
    row = Row("imagined return (reward signs)", fmt_estimate(imag), n=_n(imag, group))
    real = estimate(group, "test/imagined_real_return_mean")
    if real is not None:
        row.baseline = f"real, same steps {fmt_estimate(real)}"
    return row


def stage_steps(run: Run) -> dict[str, float]:
    """{stage: optimizer steps trained}: `time/<stage>_steps` (common/stage_clock.py), else the last step in
    csv/<stage>/ + 1 for runs written before the clock existed."""
    out = {}
    for stage in run.stages:
        if f"time/{stage}_steps" in run.final:
            out[stage] = run.final[f"time/{stage}_steps"]
        else:
            steps = [
                s
                for (st, m), pts in run.curves.items()
                if st == stage and m.startswith("train/")
                for s, _ in pts
            ]
            if steps:
                out[stage] = max(steps) + 1
    return out


def time_rows(group: Group) -> list[Row]:
    rows = []
    for kind, label in (
        ("wall_s", "wall time (min)"),
        ("cpu_s", "training CPU (min)"),
        ("gpu_s", "training GPU (min)"),
    ):
        total = estimate(group, f"time/train_{kind}")
        if total is None:
            continue
        per_stage = {}
        for stage in group.stages:
            values = [stage_clocks(r.final).get(stage, {}).get(kind) for r in group.runs]
            values = [v / 60 for v in values if v is not None]
            if values:
                per_stage[stage] = statistics.fmean(values)
        minutes = Estimate(tuple(v / 60 for v in total.values))
        notes = " + ".join(f"{s} {fmt(m)}" for s, m in per_stage.items()) if len(per_stage) > 1 else ""
        if kind == "cpu_s":
            notes = (notes + "; " if notes else "") + "fit only (collection and test excluded)"
        rows.append(Row(label, fmt_estimate(minutes), n=_n(total, group), verdict=notes))
    steps = [stage_steps(r) for r in group.runs]
    stages = [s for s in group.stages if any(s in st for st in steps)]
    if stages:
        parts = []
        for stage in stages:
            e = Estimate(tuple(st[stage] for st in steps if stage in st))
            parts.append(f"{stage} {_count(e)}")
        n = sum(1 for st in steps if st)
        rows.append(Row("steps", " · ".join(parts), n=f"{n}/{len(group.runs)}"))
    last = group.stages[-1] if group.stages else None
    params = estimate(group, f"params/{last}") if last else None
    if params is not None:
        trainable = estimate(group, f"params/{last}_trainable")
        note = f"{last} module (earlier stages' frozen weights included)"
        if trainable is not None:
            note += f"; {fmt_params(trainable.mean)} trainable"
        rows.append(Row("parameters", fmt_params(params.mean), n=_n(params, group), verdict=note))
    return rows


def fmt_params(n: float) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:.0f}"


def headline_rows(group: Group) -> list[Row]:
    """The group's headline table (COLUMNS), in the order the module docstring lists."""
    rows = [
        difference_row(group, "next-frame PSNR (dB)", "test/psnr_next", "test/psnr_copy_last",
                       "test/psnr_next_minus_copy_last", verdict=True),
        difference_row(group, "next-frame SSIM", "test/ssim_next", "test/ssim_copy_last",
                       "test/ssim_next_minus_copy_last", verdict=False),
    ]  # fmt: skip
    for k in HEADLINE_K:
        rows.append(
            difference_row(group, f"rollout PSNR k={k} (dB)", f"test/rollout_psnr_k{k}",
                           f"test/rollout_copy_last_k{k}", f"test/rollout_psnr_k{k}_minus_copy_last", verdict=False)
        )  # fmt: skip
    recon = estimate(group, "test/psnr_recon")
    if recon is not None:
        rows.append(Row("reconstruction PSNR (dB)", fmt_estimate(recon), n=_n(recon, group)))
    for key in delta_t_keys(group):
        e = estimate(group, key)
        iv = interval(e, bootstrap(group, key))
        t = _DELTA_T.match(key).group(1)
        rows.append(Row(f"ΔtPSNR t={t} (dB)", fmt_estimate(e, sign=True), "random actions",
                        str(iv) if iv else "no interval", _n(e, group), responds_to_actions(iv)))  # fmt: skip
    rows += [event_row(group, "reward F1", "reward"), event_row(group, "end F1", "end"), return_row(group)]
    rows.append(imagined_row(group))
    rows += time_rows(group)
    return [r for r in rows if r is not None]


HEADLINE_KEYS = re.compile(
    r"^test/(psnr_next|psnr_copy_last|ssim_next|ssim_copy_last|psnr_recon|delta_psnr_t\d+"
    r"|rollout_(psnr|copy_last)_k(" + "|".join(map(str, HEADLINE_K)) + r")|.*_minus_copy_last"
    r"|(reward|end)_(f1|events|predicted)|return_mean|return_sem|random_return_mean|return_diff_sem|hns"
    r"|imagined_return_mean|imagined_real_return_mean)$"
    r"|^time/|^params/"
)


def is_headline(metric: str) -> bool:
    """Whether `metric` is shown in the headline table (the rest go to the per-stage tables); a metric's
    bootstrap interval `<metric>_low` / `_high` goes with it."""
    return bool(HEADLINE_KEYS.match(re.sub(r"_(low|high)$", "", metric)))
