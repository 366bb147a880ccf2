"""Reproducibility report: curves across seeds and final metrics against paper figures.

    python -m common.report RUN_OR_SWEEP_DIR [RUN_OR_SWEEP_DIR ...] [--out DIR]

A run directory is a folder holding `config.yaml` (the resolved config train.py saved) and `csv/`
(Lightning CSVLogger files `csv/<stage>/metrics.csv`); `metrics.json` holds its final test metrics.
Runs whose configs differ only in `seed` (and in paths / run-specific keys) form one group. For every
metric the report draws the mean over a group's seeds against step with a shaded ±1 std band
(`plots/*.png`), and `report.md` tabulates the final metrics (mean ± sample std, n seeds) beside the
paper figures of `common/paper_figures.csv` whose `experiment` pattern matches the group.

Bad input never stops the report: a run without metrics, runs that differ in more than the seed,
a metric missing in some seeds are each named in a "Messages" section, and the rest is reported.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PAPER_FIGURES = Path(__file__).with_name("paper_figures.csv")

# Config keys that may differ between seeds of one experiment: the seed, paths, logging and display
# settings, checkpoint paths (flattened, dotted; fnmatch patterns).
IGNORED_KEYS = (
    "seed",
    "*.seed",
    "tags",
    "paths.*",
    "hydra.*",
    "logger.*",
    "print_config",
    "data.progress",
    "*.enable_progress_bar",
    "*.enable_model_summary",
    "ckpt_path",
    "*_ckpt",
    "*.save_dir",
    "*.dirpath",
    "*.video_dir",
    "*.default_root_dir",
)


@dataclass
class Run:
    """One run directory: its config, curves {(stage, metric): [(step, value)]} and final metrics."""

    path: Path
    config: dict
    curves: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    final_source: str = "metrics.json"

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def seed(self):
        return self.config.get("seed")


@dataclass
class Group:
    key: str
    runs: list[Run]
    label: str = ""

    @property
    def name(self) -> str:
        return self.runs[0].name


# ---------------------------------------------------------------------------------------------- reading


def find_run_dirs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Run directories (config.yaml + csv/) at or below each path; messages for paths holding none."""
    found, messages = [], []
    for root in paths:
        if not root.exists():
            messages.append(f"{root}: no such file or directory")
            continue
        candidates = [root] if (root / "config.yaml").is_file() else []
        candidates += [p.parent for p in sorted(root.rglob("config.yaml")) if p.parent != root]
        runs = [c for c in candidates if (c / "csv").is_dir() and ".hydra" not in c.parts]
        if not runs:
            messages.append(f"{root}: no run directory (a folder with config.yaml and csv/) found")
        found += [r for r in runs if r not in found]
    return found, messages


def read_csv_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger file -> {metric: [(step, value), ...]}; empty cells are skipped."""
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if step in (None, ""):
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or key is None or value in (None, ""):
                    continue
                try:
                    curves[key].append((int(float(step)), float(value)))
                except ValueError:
                    continue
    return dict(curves)


def load_run(path: Path, messages: list[str]) -> Run:
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except yaml.YAMLError as e:
        messages.append(
            f"{path / 'config.yaml'}: unreadable YAML ({e.__class__.__name__}); run grouped alone"
        )
        config = {"name": path.name}
    run = Run(path=path, config=config if isinstance(config, dict) else {})
    for csv_file in sorted((path / "csv").rglob("metrics.csv")):
        stage = csv_file.parent.relative_to(path / "csv").as_posix()
        stage = "" if stage == "." else stage
        for metric, points in read_csv_metrics(csv_file).items():
            run.curves[(stage, metric)] = points
    metrics_json = path / "metrics.json"
    if metrics_json.is_file():
        try:
            data = json.loads(metrics_json.read_text())
            run.final = {k: float(v) for k, v in data.items() if _is_number(v)}
        except (json.JSONDecodeError, AttributeError):
            messages.append(
                f"{metrics_json}: not a JSON object of metrics; using the last test/ values in csv/"
            )
    if not run.final:
        # fall back on the last logged value of each test/ metric in the CSV files
        for (_, metric), points in run.curves.items():
            if metric.startswith("test/") and points:
                run.final[metric] = points[-1][1]
        run.final_source = "csv (last test/ values)"
        if not metrics_json.is_file() and run.final:
            messages.append(
                f"{path}: no metrics.json; final metrics taken from the last test/ values in csv/"
            )
    if not run.curves and not run.final:
        messages.append(f"{path}: no metrics (empty csv/ and no metrics.json); run listed but not plotted")
    return run


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


# --------------------------------------------------------------------------------------------- grouping


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def comparable_config(run: Run) -> dict[str, str]:
    """The run's flattened config without seed, paths and values naming the run's own directory."""
    run_dir = str(run.path.resolve())
    kept = {}
    for key, value in flatten(run.config).items():
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in IGNORED_KEYS):
            continue
        if isinstance(value, str) and (run_dir in value or str(run.path) in value):
            continue
        kept[key] = json.dumps(value, sort_keys=True, default=str)
    return kept


def group_runs(runs: list[Run], messages: list[str]) -> list[Group]:
    """Group runs whose configs differ only in seed; label groups and flag experiments split apart."""
    by_key: dict[str, list[Run]] = defaultdict(list)
    configs = {id(r): comparable_config(r) for r in runs}
    # keys interpolated from the seed (e.g. a callback's `seed: ${seed}`) equal it in every run
    seeded = [r for r in runs if r.seed is not None]
    if len({str(r.seed) for r in seeded}) > 1:
        for key in set().union(*(configs[id(r)] for r in seeded)):
            if all(configs[id(r)].get(key) == json.dumps(r.seed) for r in seeded):
                for r in runs:
                    configs[id(r)].pop(key, None)
    for run in runs:
        by_key[json.dumps(configs[id(run)], sort_keys=True)].append(run)
    groups = [Group(key=k, runs=sorted(v, key=lambda r: str(r.seed))) for k, v in by_key.items()]
    groups.sort(key=lambda g: (g.name, g.key))

    by_name: dict[str, list[Group]] = defaultdict(list)
    for g in groups:
        by_name[g.name].append(g)
    for name, same in by_name.items():
        if len(same) == 1:
            same[0].label = name
            continue
        differing = sorted(
            {
                k
                for g in same
                for k in set(configs[id(g.runs[0])]) | set(configs[id(same[0].runs[0])])
                if configs[id(g.runs[0])].get(k) != configs[id(same[0].runs[0])].get(k)
            }
        )
        for g in same:
            cfg = configs[id(g.runs[0])]
            g.label = name + " [" + ", ".join(f"{k}={_short(cfg.get(k))}" for k in differing[:4]) + "]"
        messages.append(
            f"runs named {name!r} differ in more than the seed ({', '.join(differing[:8])}"
            f"{', ...' if len(differing) > 8 else ''}): reported as {len(same)} separate groups, not mixed"
        )
    labels = [g.label for g in groups]
    for g in groups:
        if labels.count(g.label) > 1:
            g.label = f"{g.label} #{groups.index(g)}"
    for g in groups:
        seeds = [r.seed for r in g.runs]
        dupes = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        if dupes:
            messages.append(
                f"group {g.label!r}: seed {', '.join(dupes)} appears more than once (runs counted apart)"
            )
    return groups


def _short(value: str | None) -> str:
    text = "missing" if value is None else str(value).strip('"')
    return text if len(text) <= 24 else text[:21] + "..."


# ------------------------------------------------------------------------------------------ statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def curve_stats(runs: list[Run], key: tuple[str, str]) -> tuple[list[int], list[float], list[float]]:
    """Per step over the runs that logged it: steps, mean, std (the last value logged at a step counts)."""
    per_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        last_at_step = dict(run.curves.get(key, []))
        for step, value in last_at_step.items():
            per_step[step].append(value)
    steps = sorted(per_step)
    stats = [mean_std(per_step[s]) for s in steps]
    return steps, [m for m, _ in stats], [s for _, s in stats]


def final_table(group: Group, messages: list[str]) -> list[tuple[str, float, float, int, int]]:
    """(metric, mean, std, n with the metric, n runs) for every final metric of the group."""
    names = sorted({m for r in group.runs for m in r.final})
    rows = []
    for metric in names:
        values = [r.final[metric] for r in group.runs if metric in r.final]
        missing = [str(r.seed) for r in group.runs if metric not in r.final]
        if missing:
            messages.append(
                f"group {group.label!r}: {metric} missing in seed {', '.join(missing)}; "
                f"mean ± std over the {len(values)} seeds that have it"
            )
        mean, std = mean_std(values)
        rows.append((metric, mean, std, len(values), len(group.runs)))
    return rows


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


def figures_for(figures: list[dict[str, str]], experiment: str, metric: str) -> list[dict[str, str]]:
    return [f for f in figures if f["metric"] == metric and fnmatch.fnmatchcase(experiment, f["experiment"])]


# ------------------------------------------------------------------------------------------- plotting


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_") or "metric"


def plot_metric(groups: list[Group], key: tuple[str, str], out: Path) -> Path | None:
    """One PNG: every group's mean curve with a shaded ±1 std band. None when no group has the metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stage, metric = key
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for group in groups:
        steps, mean, std = curve_stats(group.runs, key)
        if not steps:
            continue
        n = sum(1 for r in group.runs if r.curves.get(key))
        line = ax.plot(steps, mean, marker="o" if len(steps) < 3 else None, label=f"{group.label} (n={n})")[0]
        lo = [m - s for m, s in zip(mean, std)]
        hi = [m + s for m, s in zip(mean, std)]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_title(f"{stage} / {metric}" if stage else metric)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------- markdown


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


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(paths: list[Path], out: Path, figures_path: Path = PAPER_FIGURES) -> tuple[Path, list[str]]:
    """Read the runs below `paths`, write plots and report.md into `out`. Returns (report path, messages)."""
    run_dirs, messages = find_run_dirs(paths)
    runs = [load_run(p, messages) for p in run_dirs]
    groups = group_runs(runs, messages)
    figures = load_paper_figures(figures_path)
    out.mkdir(parents=True, exist_ok=True)

    # test/ metrics are logged once at the end: they belong to the table, not to curves
    keys = sorted({k for r in runs for k in r.curves if not k[1].startswith("test/")})
    plots = {}
    for key in keys:
        stage, metric = key
        png = plot_metric(
            groups, key, out / "plots" / f"{_slug(stage) + '__' if stage else ''}{_slug(metric)}.png"
        )
        if png is not None:
            plots[key] = png

    lines = ["# worldplay reproducibility report", ""]
    lines += [
        f"Inputs: {', '.join(f'`{p}`' for p in paths)}  ",
        f"Runs found: {len(runs)} in {len(groups)} group(s).",
        "",
    ]
    lines += [
        "Mean ± sample standard deviation (ddof=1) over seeds; n = seeds that have the metric / runs in",
        f"the group. Paper figures come from `{figures_path.name}` (one row per figure, with its citation",
        "and whether the setting is comparable); a figure marked *no* is context, not a target.",
        "",
    ]
    tables = []
    for group in groups:
        rows = final_table(group, messages)
        tables.append((group, rows))
    if messages:
        lines += ["## Messages", ""] + [f"- {m}" for m in messages] + [""]

    for group, rows in tables:
        seeds = ", ".join(str(r.seed) for r in group.runs)
        lines += [f"## {group.label}", "", f"Seeds: {seeds} (n={len(group.runs)})  "]
        lines += [f"Runs: {', '.join(f'`{r.path}`' for r in group.runs)}", ""]
        if group.name.endswith("_tiny"):
            lines += [
                "*Tiny settings (CPU minutes): no paper figure is comparable; they are shown for context.*",
                "",
            ]
        if not rows:
            lines += ["No final metrics in this group (no metrics.json and no test/ values in csv/).", ""]
        else:
            lines += [
                "| metric | mean ± std | n | paper figure | source | comparable |",
                "|---|---|---|---|---|---|",
            ]
            for metric, mean, std, n, total in rows:
                figs = figures_for(figures, group.name, metric)
                paper = "<br>".join(_cell(f"{f['value']} ({f['setting']})") for f in figs) or "—"
                source = (
                    "<br>".join(_cell(f"{f['paper']} {f['source']}, {f['citation']}") for f in figs) or "—"
                )
                comp = "<br>".join(_cell(f"{f['comparable']}: {f['why']}") for f in figs) or "—"
                lines.append(
                    f"| {metric} | {_fmt(mean)} ± {_fmt(std)} | {n}/{total} | {paper} | {source} | {comp} |"
                )
            lines.append("")
        other = sorted(
            {f["metric"] for f in figures if fnmatch.fnmatchcase(group.name, f["experiment"])}
            - {r[0] for r in rows}
        )
        if other:
            lines += [f"Paper figures for metrics these runs do not report: {', '.join(other)}.", ""]
        videos = sample_videos(group, out)
        if videos:
            lines += ["Sample videos (real | generated, last test video per stage): " + ", ".join(videos), ""]

    if plots:
        lines += ["## Curves", "", "Mean over seeds (line) and ±1 std (band) per group.", ""]
        for (stage, metric), png in plots.items():
            title = f"{stage} / {metric}" if stage else metric
            lines += [f"### {title}", "", f"![{title}]({png.relative_to(out).as_posix()})", ""]

    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report, messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "paths", nargs="+", type=Path, help="run directories or sweep directories holding them"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first path>/report)")
    parser.add_argument("--figures", type=Path, default=PAPER_FIGURES, help="paper figures CSV")
    args = parser.parse_args(argv)
    out = args.out or (args.paths[0] / "report" if args.paths[0].is_dir() else Path("report"))
    run_dirs, _ = find_run_dirs(args.paths)
    if not run_dirs:
        print(
            f"error: no run directory (config.yaml + csv/) under {', '.join(map(str, args.paths))}",
            file=sys.stderr,
        )
        return 2
    report, messages = write_report(args.paths, out, args.figures)
    for m in messages:
        print(f"note: {m}")
    print(f"wrote {report} and {len(list((out / 'plots').glob('*.png')))} plot(s) in {out / 'plots'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
