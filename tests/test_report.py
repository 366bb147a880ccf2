"""common.report on synthetic run directories with known values: the headline table beside copy-last,
verdicts read from intervals, no "± 0" for one seed, other metrics by stage, one plot per kind, the
compare matrix (families × datasets), the self-contained HTML, and bad input."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from pathlib import Path

import pytest
import yaml

from common.report import find_run_dirs, load_paper_figures, main, write_report
from common.report_compare import compare_matrix
from common.report_runs import group_runs, load_run

GENIE = {"tokenizer": "genie.module.TokenizerModule", "dynamics": "genie.module.DynamicsModule"}
DIAMOND = {"world_model": "diamond.module.WorldModelModule"}
OASIS = {"vae": "oasis.module.VAEModule", "dit": "oasis.module.DiTModule"}
T90_2 = 2.919985580355516  # Student's t, 0.95 quantile, 2 degrees of freedom (90% two-sided interval, n=3)


def make_run(
    root: Path,
    seed: int,
    name: str = "genie_coinrun_tiny",
    dataset: str = "procgen_coinrun_tiny",
    stages: dict[str, str] = GENIE,
    lr: float = 1e-3,
    final: dict | None = None,
    curve_offset: float = 0.0,
    write_metrics_json: bool = True,
    write_csv: bool = True,
    stage_tests: dict[str, dict[str, float]] | None = None,
) -> Path:
    """A run dir as train.py writes it: config.yaml, csv/<stage>/metrics.csv (train/loss every step,
    val/psnr_recon at steps 1 and 3, and the stage's test metrics `stage_tests` at step 4), metrics.json."""
    run = root / f"{name}_{dataset}_lr{lr}_s{seed}"
    (run / ".hydra").mkdir(parents=True)
    model = {stage: {"_target_": target} for stage, target in stages.items()}
    first = next(iter(model))
    model[first]["lr"] = lr
    for later in list(model)[1:]:
        model[later][f"{first}_ckpt"] = str(run / "checkpoints")
    config = {
        "name": name,
        "seed": seed,
        "tags": [f"seed{seed}"],
        "paths": {"output_dir": str(run)},
        "data": {"name": dataset},
        "model": model,
        "trainer": {"max_steps": 4, "enable_progress_bar": seed % 2 == 0},
        "logger": {"wandb": {"name": f"{name}-seed{seed}", "save_dir": str(run)}},
        "print_config": seed == 0,
        "callbacks": {"seeds": {"seed": seed}, "other": {"offset": 100 + seed if name == "x" else seed}},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # stages in order, as train.py
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "csv").mkdir()
    if write_csv:
        for stage in stages:
            tests = (stage_tests or {}).get(stage, {})
            path = run / "csv" / stage / "metrics.csv"
            path.parent.mkdir(parents=True)
            with path.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["epoch", "step", "train/loss", "val/psnr_recon", *tests])
                for step in range(4):
                    w.writerow([0, step, 1.0 / (step + 1) + curve_offset, "", *[""] * len(tests)])
                    if step % 2 == 1:
                        w.writerow([0, step, "", 20.0 + step + curve_offset, *[""] * len(tests)])
                if tests:
                    w.writerow([0, 4, "", "", *tests.values()])
    if write_metrics_json:
        (run / "metrics.json").write_text(json.dumps(final or {}))
    return run


def rows_of(report: str, first_cell: str) -> list[list[str]]:
    """The cells of every table row whose first cell is `first_cell`."""
    out = []
    for line in report.splitlines():
        if line.startswith(f"| {first_cell} |"):
            out.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return out


def row_of(report: str, first_cell: str) -> list[str]:
    (row,) = rows_of(report, first_cell)
    return row


def section(report: str, heading: str) -> str:
    """The text from the line `heading` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    lines = report.splitlines()
    start = lines.index(heading)
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(rf"^#{{1,{len(level)}}} ", lines[i])), len(lines)
    )
    return "\n".join(lines[start:end])


# --------------------------------------------------------------------------------- headline table


FINALS = [  # three seeds of a Genie run: known values
    {"test/psnr_next": 25.0, "test/psnr_copy_last": 24.0, "test/ssim_next": 0.80, "test/psnr_recon": 30.0,
     "test/rollout_psnr_k1": 25.0, "test/rollout_copy_last_k1": 24.0, "test/rollout_psnr_k2": 23.0,
     "test/rollout_copy_last_k2": 22.5, "test/rollout_psnr_k8": 20.0, "test/rollout_copy_last_k8": 19.0,
     "test/rollout_psnr_k16": 18.0, "test/rollout_copy_last_k16": 18.5, "test/delta_psnr_t4": 0.1,
     "test/codebook_usage": 0.5, "test/loss": 2.0, "time/tokenizer_wall_s": 300.0, "time/dynamics_wall_s": 600.0,
     "time/tokenizer_cpu_s": 540.0, "time/dynamics_cpu_s": 1080.0, "time/tokenizer_steps": 100.0,
     "time/dynamics_steps": 200.0, "params/dynamics": 2.5e6, "params/dynamics_trainable": 1.5e6},
    {"test/psnr_next": 26.0, "test/psnr_copy_last": 24.5, "test/ssim_next": 0.82, "test/psnr_recon": 31.0,
     "test/rollout_psnr_k1": 26.0, "test/rollout_copy_last_k1": 24.5, "test/rollout_psnr_k2": 23.5,
     "test/rollout_copy_last_k2": 23.0, "test/rollout_psnr_k8": 21.0, "test/rollout_copy_last_k8": 19.5,
     "test/rollout_psnr_k16": 18.5, "test/rollout_copy_last_k16": 18.0, "test/delta_psnr_t4": -0.2,
     "test/codebook_usage": 0.6, "test/loss": 2.1, "time/tokenizer_wall_s": 330.0, "time/dynamics_wall_s": 630.0,
     "time/tokenizer_cpu_s": 600.0, "time/dynamics_cpu_s": 1140.0, "time/tokenizer_steps": 100.0,
     "time/dynamics_steps": 200.0, "params/dynamics": 2.5e6, "params/dynamics_trainable": 1.5e6},
    {"test/psnr_next": 27.0, "test/psnr_copy_last": 25.0, "test/ssim_next": 0.84, "test/psnr_recon": 33.0,
     "test/rollout_psnr_k1": 27.0, "test/rollout_copy_last_k1": 25.0, "test/rollout_psnr_k2": 24.0,
     "test/rollout_copy_last_k2": 23.0, "test/rollout_psnr_k8": 22.0, "test/rollout_copy_last_k8": 20.0,
     "test/rollout_psnr_k16": 19.0, "test/rollout_copy_last_k16": 18.2, "test/delta_psnr_t4": 0.4,
     "test/codebook_usage": 0.7, "test/loss": 2.2, "time/tokenizer_wall_s": 360.0, "time/dynamics_wall_s": 660.0,
     "time/tokenizer_cpu_s": 660.0, "time/dynamics_cpu_s": 1200.0, "time/tokenizer_steps": 100.0,
     "time/dynamics_steps": 200.0, "params/dynamics": 2.5e6, "params/dynamics_trainable": 1.5e6},
]  # fmt: skip
for _final in FINALS:  # each seed's bootstrap interval: seed 2's alone is above 0, the seeds' interval is not
    _final["test/delta_psnr_t4_low"] = _final["test/delta_psnr_t4"] - 0.05
    _final["test/delta_psnr_t4_high"] = _final["test/delta_psnr_t4"] + 0.05
STAGE_TESTS = {"tokenizer": ("test/psnr_recon", "test/codebook_usage"),
               "dynamics": ("test/psnr_next", "test/psnr_copy_last", "test/delta_psnr_t4", "test/loss")}  # fmt: skip


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "sweep"
    for seed, final in enumerate(FINALS):
        tests = {stage: {k: final[k] for k in keys} for stage, keys in STAGE_TESTS.items()}
        make_run(root, seed, final=final, curve_offset=0.1 * seed, stage_tests=tests)
    return root


def test_headline_table_shows_model_beside_copy_last_over_seeds(sweep, tmp_path):
    report_path, messages = write_report([sweep], tmp_path / "report")
    report = report_path.read_text()
    assert messages == []
    assert "Runs found: 3 in 1 group(s)" in report
    head = section(report, "## genie_coinrun_tiny · procgen_coinrun_tiny")
    assert "Seeds: 0, 1, 2 (n=3)" in head
    diffs = [f["test/psnr_next"] - f["test/psnr_copy_last"] for f in FINALS]  # 1, 1.5, 2
    half = T90_2 * statistics.stdev(diffs) / math.sqrt(3)
    metric, value, baseline, difference, n, verdict = row_of(head, "next-frame PSNR (dB)")
    assert (value, baseline, n) == ("26.0 ± 1.0", "copy-last 24.50 ± 0.50", "3/3")
    assert difference == f"+1.50 ± 0.50 [{1.5 - half:.3g}, {1.5 + half:.3g}] (seeds)"
    assert verdict == "beats copy-last"  # the interval [0.66, 2.34] is above 0
    assert row_of(head, "next-frame SSIM")[1:3] == ["0.820 ± 0.020", ""]  # no ssim_copy_last logged
    # rollout rows at the headline k that were logged (1, 8, 16; not 2, not 64), each beside copy-last
    assert [r[0] for r in rows_of(head, "rollout PSNR k=8 (dB)")] == ["rollout PSNR k=8 (dB)"]
    assert not rows_of(head, "rollout PSNR k=2 (dB)") and not rows_of(head, "rollout PSNR k=64 (dB)")
    k16 = row_of(head, "rollout PSNR k=16 (dB)")
    assert k16[1] == "18.50 ± 0.50" and k16[2] == "copy-last 18.23 ± 0.25"
    assert k16[3].startswith("+0.27 ± 0.68 [") and k16[5] == ""  # only the next frame carries a verdict
    assert row_of(head, "reconstruction PSNR (dB)")[1] == "31.3 ± 1.5"
    delta = row_of(head, "ΔtPSNR t=4 (dB)")
    assert delta[1] == "+0.10 ± 0.30" and delta[3].endswith("(seeds)")
    assert delta[5] == "does not respond to actions (interval includes 0)"
    wall = row_of(head, "wall time (min)")
    assert wall[1] == "16.0 ± 1.0" and "tokenizer 5.5 + dynamics 10.5" in wall[5]
    assert row_of(head, "training CPU (min)")[1] == "29.0 ± 2.0"
    assert row_of(head, "steps")[1:5] == ["tokenizer 100 · dynamics 200", "", "", "3/3"]
    assert row_of(head, "parameters")[1] == "2.5M" and "1.5M trainable" in row_of(head, "parameters")[5]
    # the verdicts in words under the heading, and the first table of the report is this one
    assert "**Verdict:** beats copy-last; does not respond to actions (interval includes 0)" in head
    first_table = next(line for line in report.splitlines() if line.startswith("|"))
    assert first_table.startswith("| metric | value | baseline | difference [90% interval] | n |")


def test_event_f1_with_counts_and_no_events(tmp_path):
    root = tmp_path / "s"
    final = {"test/reward_f1": 0.5, "test/reward_events": 12.0, "test/reward_predicted": 10.0,
             "test/end_events": 0.0, "test/end_predicted": 3.0, "test/return_mean": 120.0,
             "test/return_sem": 8.0, "test/random_return_mean": 1.5}  # fmt: skip
    make_run(
        root, 0, name="diamond_breakout_tiny", dataset="atari_Breakout_tiny", stages=DIAMOND, final=final
    )
    report = write_report([root], tmp_path / "out")[0].read_text()
    reward, end = row_of(report, "reward F1"), row_of(report, "end F1")
    assert reward[1] == "0.5" and reward[5] == "12 events in the test clips; 10 predicted"
    assert end[1] == "no events" and end[5] == "0 events in the test clips; 3 predicted"
    ret = row_of(report, "agent return")
    assert ret[1] == "120 ± 8 (s.e. over episodes)" and ret[2] == "random policy 1.5"
    assert ret[3] == "+118.5" and ret[5].startswith("undetermined")


def test_verdicts_read_intervals_not_point_values(tmp_path):
    root = tmp_path / "v"
    # every point value below is above 0; only the interval decides
    noisy = [(25.0, 24.0), (24.0, 24.5), (26.0, 25.6)]  # differences 1.0, -0.5, 0.4: interval includes 0
    for seed, (nxt, copy) in enumerate(noisy):
        make_run(root, seed, name="noisy", final={"test/psnr_next": nxt, "test/psnr_copy_last": copy})
    make_run(root, 0, name="one_seed", final={"test/psnr_next": 27.0, "test/psnr_copy_last": 25.0,
                                              "test/delta_psnr_t4": 0.5})  # fmt: skip
    make_run(root, 0, name="boot_yes", final={"test/delta_psnr_t4": 0.05, "test/delta_psnr_t4_low": 0.01,
                                              "test/delta_psnr_t4_high": 0.09})  # fmt: skip
    make_run(root, 0, name="boot_no", final={"test/delta_psnr_t4": 0.5, "test/delta_psnr_t4_low": -0.1,
                                             "test/delta_psnr_t4_high": 1.1})  # fmt: skip
    worse = [(20.0, 24.0), (20.5, 24.0), (21.0, 24.2)]
    for seed, (nxt, copy) in enumerate(worse):
        make_run(root, seed, name="worse", final={"test/psnr_next": nxt, "test/psnr_copy_last": copy})
    report = write_report([root], tmp_path / "out")[0].read_text()

    def verdict(group: str, row: str) -> str:
        return row_of(section(report, f"## {group} · procgen_coinrun_tiny"), row)[5]

    assert statistics.fmean([n - c for n, c in noisy]) > 0
    assert verdict("noisy", "next-frame PSNR (dB)") == "does not beat copy-last (interval includes 0)"
    undetermined = "(no interval: one seed, no bootstrap)"
    assert verdict("one_seed", "next-frame PSNR (dB)") == f"undetermined vs copy-last {undetermined}"
    assert (
        verdict("one_seed", "ΔtPSNR t=4 (dB)")
        == f"undetermined whether it responds to actions {undetermined}"
    )
    assert verdict("boot_yes", "ΔtPSNR t=4 (dB)") == "responds to actions"
    assert row_of(section(report, "## boot_yes · procgen_coinrun_tiny"), "ΔtPSNR t=4 (dB)")[3] == (
        "[0.01, 0.09] (bootstrap)"
    )
    assert verdict("boot_no", "ΔtPSNR t=4 (dB)") == "does not respond to actions (interval includes 0)"
    assert verdict("worse", "next-frame PSNR (dB)") == "does not beat copy-last (worse)"
    # the overview of several groups: one row per group with its verdicts
    glance = section(report, "## At a glance")
    assert (
        row_of(glance, "noisy · procgen_coinrun_tiny")[4] == "does not beat copy-last (interval includes 0)"
    )
    assert row_of(glance, "boot_yes · procgen_coinrun_tiny")[4] == "responds to actions"


def test_one_seed_shows_values_without_pm_zero(tmp_path):
    root = tmp_path / "one"
    tests = {"tokenizer": {"test/psnr_recon": 30.25}, "dynamics": {"test/psnr_next": 25.03}}
    final = {"test/psnr_recon": 30.25, "test/psnr_next": 25.03, "test/psnr_copy_last": 24.5,
             "test/loss": 1.25, "time/tokenizer_wall_s": 60.0, "time/dynamics_wall_s": 120.0}  # fmt: skip
    make_run(root, 0, final=final, stage_tests=tests)
    report = write_report([root], tmp_path / "out")[0].read_text()
    assert "± 0" not in report
    row = row_of(report, "next-frame PSNR (dB)")
    assert row[1:5] == ["25.03", "copy-last 24.5", "+0.53", "1/1"]
    assert row_of(report, "wall time (min)")[1] == "3"
    assert row_of(report, "test/loss")[1:3] == ["1.25", "1/1"]


def test_other_metrics_are_grouped_by_stage(sweep, tmp_path):
    report = write_report([sweep], tmp_path / "r")[0].read_text()
    head = section(report, "## genie_coinrun_tiny · procgen_coinrun_tiny")
    tokenizer = section(head, "### Other metrics: stage tokenizer")
    dynamics = section(head, "### Other metrics: stage dynamics")
    assert row_of(tokenizer, "test/codebook_usage")[1:3] == ["0.60 ± 0.10", "3/3"]
    assert row_of(dynamics, "test/loss")[1:3] == ["2.10 ± 0.10", "3/3"]
    assert not rows_of(dynamics, "test/codebook_usage") and not rows_of(tokenizer, "test/loss")
    # the rollout k=2 (not a headline k) was logged by no stage's csv: listed apart, not dropped
    unknown = section(head, "### Other metrics: stage not recorded")
    assert row_of(unknown, "test/rollout_psnr_k2")[1] == "23.50 ± 0.50"
    for headline in (
        "test/psnr_next",
        "test/delta_psnr_t4",
        "time/dynamics_wall_s",
        "test/delta_psnr_t4_low",
    ):
        for part in (tokenizer, dynamics, unknown):
            assert not rows_of(part, headline), headline  # shown in the headline table, not again


def test_paper_figures_beside_our_value(sweep, tmp_path):
    report = write_report([sweep], tmp_path / "r")[0].read_text()
    rows = rows_of(section(report, "## genie_coinrun_tiny · procgen_coinrun_tiny"), "test/psnr_recon")
    ours = {r[1] for r in rows}
    assert ours == {"31.3 ± 1.5"}
    papers = {(r[2], r[3]) for r in rows}
    assert any("38.25" in fig and "GenieRedux" in src and "arXiv:2409.06445" in src for fig, src in papers)
    assert any("36.5" in fig and "Genie Table 6" in src for fig, src in papers)
    assert "Tiny settings" in report


# ----------------------------------------------------------------------------------------------- plots


def test_one_plot_per_kind_and_runs_without_curves_named(sweep, tmp_path):
    """Rollout per group, training curves per stage, one compute plot: 4 PNGs for 3 seeds × 2 stages."""
    no_curves = make_run(sweep, 3, write_csv=False, final={**FINALS[0], "test/psnr_next": 26.5})
    out = tmp_path / "report"
    report_path, _ = write_report([sweep], out)
    report = report_path.read_text()
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == [
        "compute.png",
        "curves_dynamics.png",
        "curves_tokenizer.png",
        "rollout_genie_coinrun_tiny___procgen_coinrun_tiny.png",
    ]
    for name in pngs:
        assert f"(plots/{name})" in report
        assert (out / "plots" / name).stat().st_size > 5000
    assert f"{no_curves} (seed 3): no curves for stage tokenizer" in report
    assert f"{no_curves} (seed 3): no curves for stage dynamics" in report


def test_plots_draw_seed_bands_and_copy_last_dashed(sweep, tmp_path, monkeypatch):
    import matplotlib.axes

    bands, lines = [], []
    fill, plot = matplotlib.axes.Axes.fill_between, matplotlib.axes.Axes.plot

    def spy_fill(self, x, y1, y2, **kw):
        bands.append((self.get_title(), list(x), list(y1), list(y2)))
        return fill(self, x, y1, y2, **kw)

    def spy_plot(self, *args, **kw):
        lines.append((self.get_title(), list(args[0]), list(args[1]), args[2], kw.get("label")))
        return plot(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy_fill)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy_plot)
    write_report([sweep], tmp_path / "report")
    # rollout: model solid and copy-last dashed at k = 1, 2, 8, 16, each mean over the 3 seeds
    model = next(ln for ln in lines if ln[4] == "model (n=3)")
    copy = next(ln for ln in lines if ln[4] == "copy-last (n=3)")
    assert model[1] == [1, 2, 8, 16] and model[3] == "-" and copy[3] == "--"
    assert model[2][2] == pytest.approx(21.0) and copy[2][3] == pytest.approx(
        statistics.fmean([18.5, 18, 18.2])
    )
    # training curves: val/psnr_recon at steps 1 and 3, seeds offset by 0, 0.1, 0.2, band ±1 std
    std = statistics.stdev([0.0, 0.1, 0.2])
    _, steps, lo, hi = next(b for b in bands if b[0] == "val PSNR recon (dB)")
    assert steps == [1, 3] and lo[0] == pytest.approx(21.1 - std) and hi[0] == pytest.approx(21.1 + std)


def test_compute_plot_places_groups_by_training_minutes(tmp_path, monkeypatch):
    import matplotlib.axes

    points = []
    original = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, **kw):
        points.append((self.get_title(), x[0], y[0], kw["label"]))
        return original(self, x, y, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    root = tmp_path / "c"
    for seed in range(2):
        make_run(root, seed, name="a", final={"test/psnr_next": 25.0 + seed, "test/psnr_copy_last": 24.0,
                                              "time/dynamics_cpu_s": 600.0 + 60 * seed})  # fmt: skip
    make_run(root, 0, name="b", final={"test/psnr_next": 20.0, "test/psnr_copy_last": 24.0})
    out = tmp_path / "out"
    report = write_report([root], out)[0].read_text()
    assert points == [("next-frame PSNR - copy-last (dB)", pytest.approx(10.5), pytest.approx(1.5),
                       "a · procgen_coinrun_tiny (n=2)")]  # fmt: skip
    assert "b · procgen_coinrun_tiny not drawn (no time/train_cpu_s" in report


# -------------------------------------------------------------------------------------- compare matrix


def test_compare_matrix_has_the_right_cells_and_names_missing_ones(tmp_path):
    root = tmp_path / "m"
    for seed, (nxt, delta) in enumerate([(25.0, 0.3), (26.0, 0.5)]):
        make_run(root, seed, name="genie_tiny", dataset="procgen_coinrun", final={
            "test/psnr_next": nxt, "test/psnr_copy_last": 24.0, "test/delta_psnr_t4": delta,
            "time/tokenizer_cpu_s": 600.0, "time/dynamics_cpu_s": 1200.0, "params/dynamics": 2.0e6,
            "play/ms_per_frame": 120.0 + seed})  # fmt: skip
    make_run(root, 0, name="diamond_tiny", dataset="atari_Breakout", stages=DIAMOND, final={
        "test/psnr_next": 39.7, "test/psnr_copy_last": 35.7, "time/world_model_cpu_s": 1800.0,
        "params/world_model": 4.4e6})  # fmt: skip
    make_run(root, 0, name="diamond_tiny", dataset="procgen_coinrun", stages=DIAMOND, write_metrics_json=False,
             write_csv=False)  # fmt: skip
    messages: list[str] = []
    groups = group_runs([load_run(p, messages) for p in find_run_dirs([root])[0]], messages)
    header, rows, notes = compare_matrix(
        groups,
        families=["genie", "diamond", "oasis"],
        datasets=["procgen_coinrun", "atari_Breakout", "crafter_default"],
        missing={("genie", "atari_Breakout"): "Genie's LAM needs no actions; not configured yet"},
    )
    assert header == ["family", "procgen_coinrun", "atari_Breakout", "crafter_default"]
    cells = {row[0]: dict(zip(header[1:], row[1:])) for row in rows}
    assert list(cells) == ["genie", "diamond", "oasis"]
    genie = cells["genie"]["procgen_coinrun"].split("<br>")
    half = T90_2 * 0 + 6.313751514675043 * statistics.stdev([1.0, 2.0]) / math.sqrt(2)  # t(0.95, 1)
    assert (
        genie[0]
        == f"vs copy-last +1.50 ± 0.71 [{1.5 - half:.3g}, {1.5 + half:.3g}] dB: does not beat copy-last"
    )
    assert genie[1].startswith("ΔtPSNR +0.40 ± 0.14 [") and genie[1].endswith(
        "dB: does not respond to actions"
    )
    assert genie[2] == "2M params, 30 (all seeds) CPU-min, play 120.50 ± 0.71 ms/frame" and genie[3] == "n=2"
    diamond = cells["diamond"]["atari_Breakout"].split("<br>")
    assert diamond[0] == "vs copy-last +4 dB: undetermined"
    assert diamond[1] == "ΔtPSNR: not measured"
    assert diamond[2] == "4.4M params, 30 CPU-min, play ms/frame not measured"
    assert cells["genie"]["atari_Breakout"] == "not run: Genie's LAM needs no actions; not configured yet"
    assert cells["diamond"]["procgen_coinrun"] == "no test metrics (1 run: failed or still running)"
    assert cells["oasis"] == {d: "not run" for d in header[1:]}
    assert notes == []


def test_report_shows_the_compare_matrix_for_several_families(tmp_path):
    root = tmp_path / "m"
    make_run(root, 0, name="genie_tiny", dataset="procgen_coinrun", final={"test/psnr_next": 25.0})
    make_run(
        root, 0, name="oasis_tiny", dataset="crafter_default", stages=OASIS, final={"test/psnr_next": 24.0}
    )
    report = write_report([root], tmp_path / "out")[0].read_text()
    matrix = section(report, "## Families × datasets")
    assert row_of(matrix, "family") == ["family", "crafter_default", "procgen_coinrun"]
    assert row_of(matrix, "genie")[1] == "not run" and row_of(matrix, "oasis")[2] == "not run"
    assert report.index("## Families × datasets") < report.index("## genie_tiny · procgen_coinrun")


def test_one_experiment_over_several_families_groups_and_names_them_by_family(tmp_path):
    """compare_tiny's cells share an experiment name: on one dataset each family is its own group, labelled
    with the family, and not flagged as runs that differ in more than the seed."""
    root = tmp_path / "m"
    make_run(root, 0, name="compare_tiny", final={"test/psnr_next": 25.0})
    make_run(root, 0, name="compare_tiny", stages=DIAMOND, lr=1e-4, final={"test/psnr_next": 26.0})
    report_path, messages = write_report([root], tmp_path / "out")
    report = report_path.read_text()
    assert "## compare_tiny · procgen_coinrun_tiny · genie" in report
    assert "## compare_tiny · procgen_coinrun_tiny · diamond" in report
    assert not [m for m in messages if "differ in more than the seed" in m]


# -------------------------------------------------------------------------------------------- output


def test_html_is_one_self_contained_file(sweep, tmp_path):
    out = tmp_path / "r"
    write_report([sweep], out)
    html = (out / "report.html").read_text()
    pngs = list((out / "plots").glob("*.png"))
    assert html.count('src="data:image/png;base64,') == len(pngs) == 4
    assert 'src="plots/' not in html and "<table>" in html and "beats copy-last" in html
    assert "<th>metric</th>" in html


def test_sample_videos_linked(sweep, tmp_path):
    run = sorted(sweep.iterdir())[0]
    for name in ("test_step2.mp4", "test_step10.mp4", "val_step10.mp4"):
        (run / "videos" / "dynamics").mkdir(parents=True, exist_ok=True)
        (run / "videos" / "dynamics" / name).write_bytes(b"")
    report = write_report([sweep], tmp_path / "r")[0].read_text()
    link = f"[seed 0 dynamics](../multirun/sweep/{run.name}/videos/dynamics/test_step10.mp4)"
    assert link in report
    assert "test_step2.mp4" not in report


def test_mixed_experiments_are_flagged_and_kept_apart(tmp_path):
    root = tmp_path / "mixed"
    for seed in range(3):
        make_run(root, seed, final={"test/psnr_recon": 30.0 + seed})
    for seed in range(2):
        make_run(root, seed, lr=1e-4, final={"test/psnr_recon": 20.0 + seed})
    make_run(root, 0, name="diamond_breakout_tiny", stages=DIAMOND, final={"test/psnr_next": 22.0})
    report_path, messages = write_report([root], tmp_path / "out")
    report = report_path.read_text()
    assert "Runs found: 6 in 3 group(s)" in report
    flagged = [m for m in messages if "differ in more than the seed" in m]
    assert len(flagged) == 1 and "model.tokenizer.lr" in flagged[0] and "2 separate groups" in flagged[0]
    assert "## genie_coinrun_tiny · procgen_coinrun_tiny [model.tokenizer.lr=0.001]" in report
    assert "## genie_coinrun_tiny · procgen_coinrun_tiny [model.tokenizer.lr=0.0001]" in report
    assert "## diamond_breakout_tiny · procgen_coinrun_tiny" in report
    means = sorted(r[1] for r in rows_of(report, "reconstruction PSNR (dB)"))
    assert means == ["20.50 ± 0.71", "31.0 ± 1.0"]


def test_missing_metric_in_some_seeds_and_run_without_metrics(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, 0, final={"test/psnr_recon": 30.0, "test/psnr_next": 25.0})
    make_run(root, 1, final={"test/psnr_recon": 32.0})
    make_run(root, 2, write_metrics_json=False, write_csv=False)
    report_path, messages = write_report([root], tmp_path / "out")
    report = report_path.read_text()
    assert any("test/psnr_next missing in seed 1, 2" in m for m in messages)
    assert any("no metrics (empty csv/ and no metrics.json)" in m for m in messages)
    assert (
        row_of(report, "next-frame PSNR (dB)")[1] == "25"
        and row_of(report, "next-frame PSNR (dB)")[4] == "1/3"
    )
    assert row_of(report, "reconstruction PSNR (dB)")[1] == "31.0 ± 1.4"
    assert row_of(report, "reconstruction PSNR (dB)")[4] == "2/3"
    assert "## Messages" in report


def test_final_metrics_fall_back_on_csv_test_values(tmp_path):
    run = make_run(tmp_path / "s", 0, write_metrics_json=False)
    with (run / "csv" / "dynamics" / "metrics.csv").open("a", newline="") as f:
        csv.writer(f).writerow([0, 4, "", ""])  # a row without values is ignored
    path = run / "csv" / "test" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("epoch,step,test/psnr_next\n0,4,27.5\n")
    report_path, messages = write_report([run], tmp_path / "out")
    assert row_of(report_path.read_text(), "next-frame PSNR (dB)")[1] == "27.5"
    assert any("no metrics.json" in m for m in messages)


def test_cli_and_no_runs(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no run directory" in capsys.readouterr().err
    make_run(tmp_path / "s", 0, final={"test/psnr_recon": 30.0})
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out
    assert find_run_dirs([tmp_path / "nope"])[1] == [f"{tmp_path / 'nope'}: no such file or directory"]


def test_paper_figures_file_is_well_formed():
    rows = load_paper_figures()
    assert len(rows) >= 10
    for row in rows:
        float(row["value"])
        assert row["comparable"] in ("yes", "no"), row
        assert row["why"] and row["citation"] and row["source"], row
    papers = {r["paper"] for r in rows}
    assert {"Genie", "GenieRedux", "DIAMOND", "GameNGen"} <= papers


def test_agent_return_beside_random_and_the_papers_figure_for_its_game(tmp_path):
    """One seed: the return row gives the difference in standard errors over episodes (the #21 target
    compares by >= 3); the paper section shows DIAMOND's figure for the run's game and no other game's."""
    root = tmp_path / "a"
    final = {"test/return_mean": 10.0, "test/return_sem": 1.0, "test/random_return_mean": 2.0,
             "test/random_return_sem": 2.0, "test/return_diff_sem": 5**0.5, "test/hns": 0.05,
             "test/imagined_return_mean": 3.5, "test/imagined_real_return_mean": 2.5}  # fmt: skip
    make_run(
        root, 0, name="diamond_boxing_agent_tiny", dataset="atari_Boxing_tiny", stages=DIAMOND, final=final
    )
    report = write_report([root], tmp_path / "out")[0].read_text()
    ret = row_of(report, "agent return")
    assert ret[1] == "10 ± 1 (s.e. over episodes)" and ret[2] == "random policy 2"
    assert ret[3] == "+8 = +3.6 s.e. of the difference"
    assert ret[5] == "beats a random policy by >= 3 s.e. over episodes; human-normalised 0.05"
    imag = row_of(report, "imagined return (reward signs)")
    assert imag[1] == "3.5" and imag[2] == "real, same steps 2.5"
    papers = rows_of(section(report, "### Paper figures"), "test/return_mean")
    assert len(papers) == 1 and papers[0][2].startswith("86.9 (Atari 100k Boxing")
    assert not rows_of(report, "test/hns") and not rows_of(report, "test/return_diff_sem")  # in the headline
