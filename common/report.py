"""Reproducibility and comparison report: did a run reproduce, and which model is better here?

    python -m common.report RUN_OR_SWEEP_DIR [...] [--out DIR] [--from auto|dirs|wandb]

Reads run directories (common/report_runs.py) or W&B offline logs (common/report_wandb.py; `--from auto`
reads W&B logs where a path holds no run directory), groups runs that differ only in seed (one experiment
on one dataset), and writes into `--out` (default `<first path>/report`):

- `report.md`: first, when the runs span several families or datasets, the families × datasets matrix
  (common/report_compare.py) and an overview of the groups; then per group its headline table
  (common/report_headline.py: next-frame PSNR and SSIM beside copy-last, rollout PSNR, ΔtPSNR, reward /
  end F1, agent return, wall time, CPU time, steps, parameters; mean ± std over seeds, n shown) with its
  verdicts in words, read from intervals (common/report_stats.py); its rollout plot; the paper figures of
  `common/paper_figures.csv` beside our values; every other final metric, grouped by the stage that
  logged it. Then the training curves per stage and the compute plot (common/report_plots.py).
- `report.html`: the same in one file, plots embedded (common/report_html.py).
- `plots/`: `rollout_<group>.png`, `curves_<stage>.png`, `compute.png`.

Bad input never stops the report: a run without metrics, runs that differ in more than the seed, a metric
missing in some seeds, a run without curves are each named (a "Messages" section or a note by the plot),
and the rest is reported.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import os
import sys
from pathlib import Path

from common.report_compare import compare_matrix, sweep_cells
from common.report_headline import (
    COLUMNS,
    delta_t_keys,
    estimate,
    headline_rows,
    is_headline,
    run_values,
    verdicts,
)
from common.report_html import markdown_to_html
from common.report_plots import plot_compute, plot_rollout, plot_stage_curves, slug
from common.report_runs import Group, Run, find_run_dirs, group_runs, load_run
from common.report_stats import Estimate, fmt_estimate
from common.report_wandb import find_logs, load_wandb_runs

PAPER_FIGURES = Path(__file__).with_name("paper_figures.csv")
UNKNOWN_STAGE = "not recorded"


# ------------------------------------------------------------------------------------- paper figures


def load_paper_figures(path: Path = PAPER_FIGURES) -> list[dict[str, str]]:
    required = {
        "metric",
        "value",
        "experiment",
        "paper",
        "source",
        "setting",
        "citation",
        "comparable",
        "why",
    }
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return list(reader)


def figures_for(
    figures: list[dict[str, str]], experiment: str, metric: str, dataset: str = ""
) -> list[dict[str, str]]:
    """The figures of `metric` whose `experiment` pattern matches, and whose optional `dataset` pattern
    (a per-game figure: `atari_Breakout*`) matches `data.name`; an empty `dataset` matches any."""
    return [
        f
        for f in figures
        if f["metric"] == metric
        and fnmatch.fnmatchcase(experiment, f["experiment"])
        and fnmatch.fnmatchcase(dataset, f.get("dataset") or "*")
    ]


# ------------------------------------------------------------------------------------------- reading


def read_runs(paths: list[Path], source: str, messages: list[str]) -> list[Run]:
    """Runs below `paths`: run directories, W&B logs (`source` "wandb"), or either ("auto": W&B logs only
    where a path holds no run directory)."""
    runs: list[Run] = []
    for path in paths:
        dirs, notes = find_run_dirs([path]) if source != "wandb" else ([], [])
        if dirs:
            runs += [load_run(p, messages) for p in dirs]
        elif source == "dirs":
            messages += notes
        elif source == "wandb" or find_logs([path]):
            runs += load_wandb_runs([path], messages)
        else:
            messages += [n.replace("found", "or W&B log (*.wandb) found") for n in notes]
    return runs


# ------------------------------------------------------------------------------------------ markdown


def table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
        "",
    ]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def final_estimates(group: Group, messages: list[str]) -> dict[str, Estimate]:
    """{metric: Estimate over the seeds that have it} for every final metric; missing seeds named."""
    values = [run_values(r) for r in group.runs]
    out = {}
    for metric in sorted({m for r in group.runs for m in r.final}):
        missing = [str(r.seed) for r, v in zip(group.runs, values) if metric not in v]
        if missing:
            messages.append(
                f"group {group.label!r}: {metric} missing in seed {', '.join(missing)}; "
                f"mean ± std over the {len(group.runs) - len(missing)} seeds that have it"
            )
        out[metric] = Estimate(tuple(v[metric] for v in values if metric in v))
    return out


def stage_sections(group: Group, finals: dict[str, Estimate]) -> list[str]:
    """Every final metric not in the headline table, one table per stage that logged it."""
    by_stage: dict[str, list[str]] = {}
    for metric in finals:
        if is_headline(metric):
            continue
        stages = {r.stage_of.get(metric, "") for r in group.runs if metric in r.final}
        stage = next(iter(stages)) if len(stages) == 1 else ""
        by_stage.setdefault(stage or UNKNOWN_STAGE, []).append(metric)
    order = [s for s in group.stages if s in by_stage] + [s for s in by_stage if s not in group.stages]
    lines = []
    for stage in order:
        title = f"stage {stage}" if stage != UNKNOWN_STAGE else f"stage {UNKNOWN_STAGE}"
        lines += [f"### Other metrics: {title}", ""]
        if stage == UNKNOWN_STAGE:
            lines += ["Final metrics that no stage's csv/ logged (metrics.json only, or several stages).", ""]
        rows = [[m, fmt_estimate(finals[m]), f"{finals[m].n}/{len(group.runs)}"] for m in by_stage[stage]]
        lines += table(["metric", "mean ± std", "n"], rows)
    return lines


def paper_section(group: Group, finals: dict[str, Estimate], figures: list[dict[str, str]]) -> list[str]:
    rows = []
    for metric, e in finals.items():
        for f in figures_for(figures, group.name, metric, group.dataset):
            rows.append([
                metric,
                fmt_estimate(e),
                f"{f['value']} ({f['setting']})",
                f"{f['paper']} {f['source']}, {f['citation']}",
                f"{f['comparable']}: {f['why']}",
            ])  # fmt: skip
    lines = []
    if rows:
        lines += ["### Paper figures", ""]
        lines += table(["metric", "ours", "paper figure", "source", "comparable"], rows)
    other = sorted(
        {f["metric"] for f in figures if figures_for([f], group.name, f["metric"], group.dataset)}
        - set(finals)
    )
    if other:
        lines += [f"Paper figures for metrics these runs do not report: {', '.join(other)}.", ""]
    return lines


def sample_videos(group: Group, out: Path) -> list[str]:
    """Markdown links (relative to `out`) to each run's last test video per stage (common.callbacks)."""
    links = []
    for run in group.runs:
        for stage_dir in sorted(p for p in (run.path / "videos").glob("*") if p.is_dir()):
            tests = sorted(stage_dir.glob("test_step*.mp4"), key=lambda p: int(p.stem.split("step")[-1] or 0))
            if tests:
                rel = os.path.relpath(tests[-1].resolve(), out.resolve())
                links.append(f"[seed {run.seed} {stage_dir.name}]({Path(rel).as_posix()})")
    return links


def overview(groups: list[Group]) -> list[str]:
    """One row per group: its headline differences and verdicts (several groups only)."""
    rows = []
    for g in groups:
        d = estimate(g, "test/psnr_next_minus_copy_last")
        keys = delta_t_keys(g)
        delta = estimate(g, keys[0]) if keys else None
        cpu = estimate(g, "time/train_cpu_s")
        rows.append([
            g.label,
            str(len(g.runs)),
            fmt_estimate(d, sign=True) if d else "—",
            fmt_estimate(delta, sign=True) if delta else "—",
            "; ".join(verdicts(g)) or "—",
            fmt_estimate(Estimate(tuple(v / 60 for v in cpu.values))) if cpu else "—",
        ])  # fmt: skip
    header = [
        "group",
        "seeds",
        "next-frame PSNR − copy-last (dB)",
        "ΔtPSNR (dB)",
        "verdict",
        "training CPU (min)",
    ]
    return ["## At a glance", ""] + table(header, rows)


def _image(out: Path, png: Path, alt: str) -> str:
    return f"![{alt}]({png.relative_to(out).as_posix()})"


def write_report(
    paths: list[Path], out: Path, figures_path: Path = PAPER_FIGURES, source: str = "auto"
) -> tuple[Path, list[str]]:
    """Read the runs below `paths`, write report.md, report.html and plots/ into `out`.
    Returns (report.md path, messages)."""
    messages: list[str] = []
    runs = read_runs(paths, source, messages)
    groups = group_runs(runs, messages)
    figures = load_paper_figures(figures_path)
    out.mkdir(parents=True, exist_ok=True)
    plots = out / "plots"
    for old in plots.glob("*.png"):
        old.unlink()  # a report rewritten into its folder keeps no plot of an earlier reading

    finals = {id(g): final_estimates(g, messages) for g in groups}
    rollout = {id(g): plot_rollout(g, plots / f"rollout_{slug(g.label)}.png") for g in groups}
    stages = list(dict.fromkeys(s for g in groups for s in g.stages))
    curves = {s: plot_stage_curves(groups, s, plots / f"curves_{slug(s)}.png") for s in stages}
    compute, compute_notes = plot_compute(groups, plots / "compute.png")

    from_wandb = sum(r.source == "wandb" for r in runs)
    lines = ["# worldplay report", ""]
    lines += [
        f"Inputs: {', '.join(f'`{p}`' for p in paths)}  ",
        f"Runs found: {len(runs)} in {len(groups)} group(s)"
        + (f" (read from W&B logs: {from_wandb})" if from_wandb else "")
        + ".",
        "",
        "Per group (one experiment on one dataset, its seeds): mean ± sample standard deviation (ddof=1) over",
        "seeds, n = seeds with the metric / runs; one seed shows its value alone. Differences are taken per",
        "seed. Intervals are 90%: Student's t over seeds (n ≥ 2) or the run's bootstrap over test clips (one",
        "seed, where logged); verdicts read the interval, never the point value, and say *undetermined*",
        "without one.",
        "",
    ]  # fmt: skip
    families, datasets = {g.family for g in groups}, {g.dataset for g in groups}
    sweeps = sorted({g.name for g in groups if g.name == "compare_tiny"})
    if len(families) > 1 or len(datasets) > 1 or sweeps:
        # a compare_tiny sweep names every cell it should fill, run or not
        header, rows, notes = compare_matrix(groups, *(sweep_cells(sweeps[0]) if sweeps else (None, None)))
        lines += ["## Families × datasets", ""]
        lines += ["Cells: next-frame PSNR − copy-last and ΔtPSNR (mean ± std [90% interval]) with verdicts;"]
        lines += ["parameters, training CPU-minutes, play ms/frame; n seeds.", ""]
        lines += table(header, rows) + [f"- {n}" for n in notes] + ([""] if notes else [])
    if len(groups) > 1:
        lines += overview(groups)
    body: list[str] = []
    for group in groups:
        seeds = ", ".join(str(r.seed) for r in group.runs)
        body += [f"## {group.label}", "", f"Seeds: {seeds} (n={len(group.runs)})  "]
        where = "W&B logs of " if group.runs[0].source == "wandb" else ""
        body += [f"Runs: {where}{', '.join(f'`{r.path}`' for r in group.runs)}", ""]
        found = verdicts(group)
        if found:
            body += [f"**Verdict:** {'; '.join(found)}", ""]
        rows = headline_rows(group)
        body += (
            table(COLUMNS, [r.cells() for r in rows]) if rows else ["No headline metric in this group.", ""]
        )
        if group.name.endswith("_tiny"):
            body += [
                "*Tiny settings (CPU minutes): no paper figure is comparable; they are shown for context.*",
                "",
            ]
        if rollout[id(group)] is not None:
            body += [_image(out, rollout[id(group)], f"{group.label}: rollout PSNR against k"), ""]
        body += paper_section(group, finals[id(group)], figures)
        body += stage_sections(group, finals[id(group)])
        if not any(r.final for r in group.runs):
            body += ["No final metrics in this group (no metrics.json and no test/ values in csv/).", ""]
        videos = sample_videos(group, out)
        if videos:
            body += ["Sample videos (real | generated, last test video per stage): " + ", ".join(videos), ""]

    if messages:
        lines += ["## Messages", ""] + [f"- {m}" for m in messages] + [""]
    lines += body
    lines += [
        "## Training curves",
        "",
        "Per stage: mean over seeds (line), ±1 std (band); train solid, val with ",
    ]
    lines += ["markers; copy-last dashed.", ""]
    for stage, (png, missing) in curves.items():
        lines += [f"### Stage {stage}", ""]
        if png is not None:
            lines += [_image(out, png, f"stage {stage} training curves"), ""]
        else:
            lines += ["No run logged curves for this stage.", ""]
        lines += [f"- {m}" for m in missing] + ([""] if missing else [])
    lines += ["## Compute", ""]
    if compute is not None:
        lines += ["Headline metric against training compute (mean ± std over seeds per group).", ""]
        lines += [_image(out, compute, "headline metrics against training minutes"), ""]
    else:
        lines += ["No group has both a headline metric and a recorded training time.", ""]
    lines += [f"- {n}" for n in compute_notes] + ([""] if compute_notes else [])

    markdown = "\n".join(lines)
    report = out / "report.md"
    report.write_text(markdown)
    (out / "report.html").write_text(markdown_to_html(markdown, out, "worldplay report"))
    return report, messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, sweep directories or W&B logs")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first path>/report)")
    parser.add_argument("--figures", type=Path, default=PAPER_FIGURES, help="paper figures CSV")
    parser.add_argument(
        "--from", dest="source", choices=("auto", "dirs", "wandb"), default="auto",
        help="read run directories, W&B offline logs, or run directories and W&B logs where there are none",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = args.out or (args.paths[0] / "report" if args.paths[0].is_dir() else Path("report"))
    has_dirs = bool(find_run_dirs(args.paths)[0])
    if not (
        has_dirs if args.source == "dirs" else has_dirs or find_logs([p for p in args.paths if p.exists()])
    ):
        what = "config.yaml + csv/" if args.source == "dirs" else "config.yaml + csv/, or a W&B log"
        print(f"error: no run directory ({what}) under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    report, messages = write_report(args.paths, out, args.figures, args.source)
    for m in messages:
        print(f"note: {m}")
    pngs = len(list((out / "plots").glob("*.png")))
    print(f"wrote {report}, {out / 'report.html'} and {pngs} plot(s) in {out / 'plots'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
