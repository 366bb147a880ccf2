"""The comparison matrix: world-model families (rows) × datasets (columns), one cell per pair.

A cell reads the group of runs (seeds) of one family on one dataset (common/report_runs.py: the family is
the package of the model's last stage, `genie`, `diamond`, `oasis`, or `family` in the config; the
dataset `data.name`). It shows, over seeds (mean ± std, 90% interval, common/report_stats.py):

- next-frame PSNR - copy-last (dB) and ΔtPSNR (dB), each with its interval;
- parameters of the last stage's module, training CPU-minutes (GPU-minutes where recorded), and play
  ms/frame (`play/ms_per_frame` in metrics.json, where a benchmark wrote it).

A pair without runs is named ("not run", or the reason given in `missing`), as is a pair whose runs hold
no test metrics, and a pair holding several configurations (the cell shows the one with most seeds).
"""

from __future__ import annotations

from common.report_headline import (
    actions_verdict,
    bootstrap,
    copy_last_verdict,
    delta_t_keys,
    estimate,
    fmt_params,
)
from common.report_runs import Group, config_family
from common.report_stats import Estimate, fmt_estimate, interval

PLAY_KEY = "play/ms_per_frame"


def compare_matrix(
    groups: list[Group],
    families: list[str] | None = None,
    datasets: list[str] | None = None,
    missing: dict[tuple[str, str], str] | None = None,
) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes): header ["family", dataset, ...], one row per family, cells as in the module
    docstring, lines joined by "<br>". families / datasets: the rows and columns to show, in order
    (default: those the groups hold, sorted); missing: {(family, dataset): why it has no runs}."""
    families = families or sorted({g.family for g in groups})
    datasets = datasets or sorted({g.dataset for g in groups})
    missing = missing or {}
    notes = []
    rows = []
    for family in families:
        row = [family]
        for dataset in datasets:
            cell = [g for g in groups if g.family == family and g.dataset == dataset]
            if not cell:
                row.append(
                    f"not run: {missing[(family, dataset)]}" if (family, dataset) in missing else "not run"
                )
                continue
            cell.sort(key=lambda g: -len(g.runs))
            if len(cell) > 1:
                notes.append(
                    f"{family} × {dataset}: {len(cell)} configurations ({'; '.join(g.label for g in cell)}); "
                    f"the cell shows {cell[0].label!r}"
                )
            row.append(cell_text(cell[0]))
        rows.append(row)
    return ["family", *datasets], rows, notes


def cell_text(group: Group) -> str:
    """One cell: the lines of the module docstring for one group."""
    n, tested = len(group.runs), sum(1 for r in group.runs if any(k.startswith("test/") for k in r.final))
    if tested == 0:
        return f"no test metrics ({n} run{'s' if n > 1 else ''}: failed or still running)"
    lines = []
    key = "test/psnr_next_minus_copy_last"
    d = estimate(group, key)
    if d is not None:
        iv = interval(d, bootstrap(group, key))
        lines.append(
            f"vs copy-last {fmt_estimate(d, sign=True)}{f' {_iv(iv)}' if iv else ''} dB: {_short(copy_last_verdict(group))}"
        )
    else:
        lines.append("vs copy-last: not measured")
    keys = delta_t_keys(group)
    if keys:
        e = estimate(group, keys[0])
        iv = interval(e, bootstrap(group, keys[0]))
        lines.append(
            f"ΔtPSNR {fmt_estimate(e, sign=True)}{f' {_iv(iv)}' if iv else ''} dB: {_short(actions_verdict(group))}"
        )
    else:
        lines.append("ΔtPSNR: not measured")
    extra = []
    last = group.stages[-1] if group.stages else None
    params = estimate(group, f"params/{last}") if last else None
    if params is not None:
        extra.append(f"{fmt_params(params.mean)} params")
    gpu, cpu = estimate(group, "time/train_gpu_s"), estimate(group, "time/train_cpu_s")
    if gpu is not None:
        extra.append(f"{fmt_estimate(_minutes(gpu))} GPU-min")
    elif cpu is not None:
        extra.append(f"{fmt_estimate(_minutes(cpu))} CPU-min")
    else:
        extra.append("training time not recorded")
    play = estimate(group, PLAY_KEY)
    extra.append(f"play {fmt_estimate(play)} ms/frame" if play is not None else "play ms/frame not measured")
    lines.append(", ".join(extra))
    lines.append(f"n={tested}" + (f" of {n} runs" if tested < n else ""))
    return "<br>".join(lines)


def _iv(iv) -> str:
    return str(iv).split(" (")[0]


def _short(verdict: str | None) -> str:
    """The verdict without its reason: "beats copy-last", "does not respond to actions", "undetermined"."""
    return "undetermined" if (verdict or "").startswith("undetermined") else (verdict or "").split(" (")[0]


def _minutes(e: Estimate) -> Estimate:
    return Estimate(tuple(v / 60 for v in e.values))


def sweep_cells(experiment: str = "compare_tiny") -> tuple[list[str], list[str]]:
    """(families, datasets) an experiment's Hydra sweep over `recipe` x `data` fills (conf/experiment/
    <experiment>.yaml, `hydra.sweeper.params`): each recipe composed with each source, the family read as
    the report reads it (the package of the last stage's module) and the dataset as `data.name`. Used so
    that a cell the sweep should have filled and did not is named, not left out. ValueError (one line)
    when the experiment has no such sweep."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from common.config import CONF_DIR

    path = CONF_DIR / "experiment" / f"{experiment}.yaml"
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}
    if "recipe" not in params or "data" not in params:
        raise ValueError(f"{path}: hydra.sweeper.params has no recipe and data sweep")
    recipes = [r.strip() for r in str(params["recipe"]).split(",")]
    sources = [d.strip() for d in str(params["data"]).split(",")]
    families, datasets = [], []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # a recipe fixes the family and a source the dataset: one row and one column of the matrix name them
        for recipe in recipes:
            cfg = compose("train", overrides=[f"recipe={recipe}", f"data={sources[0]}"])
            config = OmegaConf.to_container(cfg.model, resolve=False)
            family = config_family({"model": config}, list(config)) or recipe
            families += [family] if family not in families else []
        for data in sources:
            cfg = compose("train", overrides=[f"recipe={recipes[0]}", f"data={data}"])
            datasets += [cfg.data.name] if cfg.data.name not in datasets else []
    return families, datasets
