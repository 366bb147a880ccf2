"""The runs a report reads: run directories, their curves and final metrics, grouped by configuration.

A run directory is a folder holding `config.yaml` (the resolved config train.py saved) and `csv/`
(Lightning CSVLogger files `csv/<stage>/metrics.csv`); `metrics.json` holds its final metrics (test
metrics of every stage, `time/<stage>_*` and `params/<stage>*` of common/stage_clock.py, and the
derived headline values of common/report_metrics.py). Runs whose configs differ only in `seed` (and in
paths / run-specific keys) form one group: one experiment on one dataset, its seeds.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Config keys that may differ between seeds of one experiment: the seed, paths, logging and display
# settings, checkpoint paths, what W&B adds to a run's config (flattened, dotted; fnmatch patterns).
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
    "stage",
    "git_commit",
    "hparams*",
    "_wandb*",
)

FAMILIES = ("genie", "diamond", "oasis")


@dataclass
class Run:
    """One run: its config, curves {(stage, metric): [(step, value)]}, final metrics {metric: value} and
    the stage each final metric came from (`stage_of`; "" when not recorded). `source`: "run dir" or
    "wandb" (read from W&B's offline logs, common/report_wandb.py)."""

    path: Path
    config: dict
    curves: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    stage_of: dict[str, str] = field(default_factory=dict)
    final_source: str = "metrics.json"
    source: str = "run dir"

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def stages(self) -> list[str]:
        """The model's stages in training order (the keys of `config.model`), else those with curves."""
        model = self.config.get("model")
        if isinstance(model, dict) and model:
            return list(model)
        return list(dict.fromkeys(stage for stage, _ in self.curves))

    @property
    def dataset(self) -> str:
        """`data.name` (source, game and `_tiny`), else `data.source`_`data.game`, else "?"."""
        data = self.config.get("data") or {}
        if data.get("name"):
            return str(data["name"])
        parts = [str(data[k]) for k in ("source", "game") if data.get(k)]
        return "_".join(parts) or "?"

    @property
    def family(self) -> str:
        """`family` in the config when set, else the package of the last stage's module (`genie`, ...)."""
        return config_family(self.config, self.stages) or self.name


@dataclass
class Group:
    """Runs of one configuration (seeds apart). label: what the report calls it (experiment · dataset)."""

    key: str
    runs: list[Run]
    label: str = ""

    @property
    def name(self) -> str:
        return self.runs[0].name

    @property
    def dataset(self) -> str:
        return self.runs[0].dataset

    @property
    def family(self) -> str:
        return self.runs[0].family

    @property
    def stages(self) -> list[str]:
        return list(dict.fromkeys(s for r in self.runs for s in r.stages))


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


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


_STAGE_KEY = re.compile(r"^(?:time|params)/(.+?)(?:_wall_s|_cpu_s|_gpu_s|_steps|_trainable)?$")


def stage_of_metric(metric: str, stages: list[str], curves: dict[tuple[str, str], list]) -> str:
    """The stage a final metric belongs to: the stage whose csv logged it (the last such stage), the stage
    named in a `time/<stage>_...` or `params/<stage>...` key, or "" (not recorded)."""
    logged = [stage for stage in stages if curves.get((stage, metric))]
    if logged:
        return logged[-1]
    m = _STAGE_KEY.match(metric)
    if m and m.group(1) in stages:
        return m.group(1)
    return ""


def load_run(path: Path, messages: list[str]) -> Run:
    """A run directory -> Run; what cannot be read is named in `messages` and the rest kept."""
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
            run.final = {k: float(v) for k, v in data.items() if is_number(v)}
        except (json.JSONDecodeError, AttributeError):
            messages.append(
                f"{metrics_json}: not a JSON object of metrics; using the last test/ values in csv/"
            )
    if not any(k.startswith("test/") for k in run.final):
        # fall back on the last logged value of each test/ metric in the CSV files
        for (_, metric), points in run.curves.items():
            if metric.startswith("test/") and points:
                run.final[metric] = points[-1][1]
        if any(k.startswith("test/") for k in run.final):
            run.final_source = "csv (last test/ values)"
            if not metrics_json.is_file():
                messages.append(
                    f"{path}: no metrics.json; final metrics taken from the last test/ values in csv/"
                )
    stages = run.stages + [s for s, _ in run.curves if s not in run.stages]
    run.stage_of = {m: stage_of_metric(m, stages, run.curves) for m in run.final}
    if not run.curves and not run.final:
        messages.append(f"{path}: no metrics (empty csv/ and no metrics.json); run listed but not plotted")
    return run


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
    """Group runs whose configs differ only in seed, label each group `experiment · dataset` (`· family`
    added where one experiment holds several families on that dataset), and flag groups of one experiment,
    dataset and family that differ in more than the seed (labelled by those keys)."""
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
    groups.sort(key=lambda g: (g.name, g.dataset, g.key))

    # one experiment may train several families on a dataset (compare_tiny's cells): each family its own
    # group, named by it; only groups of one family that differ in more than the seed are flagged
    by_cell: dict[tuple[str, str, str], list[Group]] = defaultdict(list)
    families: dict[tuple[str, str], set[str]] = defaultdict(set)
    for g in groups:
        by_cell[(g.name, g.dataset, g.family)].append(g)
        families[(g.name, g.dataset)].add(g.family)
    for (name, dataset, family), same in by_cell.items():
        several = len(families[(name, dataset)]) > 1
        base = f"{name} · {dataset}" + (f" · {family}" if several else "")
        if len(same) == 1:
            same[0].label = base
            continue
        first = configs[id(same[0].runs[0])]
        differing = sorted(
            {
                k
                for g in same
                for k in set(configs[id(g.runs[0])]) | set(first)
                if configs[id(g.runs[0])].get(k) != first.get(k)
            }
        )
        for g in same:
            cfg = configs[id(g.runs[0])]
            g.label = base + " [" + ", ".join(f"{k}={_short(cfg.get(k))}" for k in differing[:4]) + "]"
        messages.append(
            f"runs named {name!r} on {dataset}{f' ({family})' if several else ''} differ in more than the seed ({', '.join(differing[:8])}"
            f"{', ...' if len(differing) > 8 else ''}): reported as {len(same)} separate groups, not mixed"
        )
    labels = [g.label for g in groups]
    for i, g in enumerate(groups):
        if labels.count(g.label) > 1:
            g.label = f"{g.label} #{i}"
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


def config_family(config: Mapping, stages: list[str]) -> str | None:
    """A run's family from its config: `family` when set, else the package of the module of the last of
    `stages` that has one (`genie.module.GenieDynamicsModule` -> `genie`); None when neither is there."""
    if config.get("family"):
        return str(config["family"])
    model = config.get("model") or {}
    for stage in reversed(stages):
        target = str((model.get(stage) or {}).get("_target_", ""))
        if target:
            return target.split(".")[0]
    return None
