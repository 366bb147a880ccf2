"""common.report on synthetic run directories: grouping by seed, bands, table values, bad input."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from common.report import find_run_dirs, load_paper_figures, main, write_report


def make_run(
    root: Path,
    seed: int,
    name: str = "genie_coinrun_tiny",
    lr: float = 1e-3,
    final: dict | None = None,
    curve_offset: float = 0.0,
    write_metrics_json: bool = True,
    write_csv: bool = True,
) -> Path:
    """A run dir as train.py writes it: config.yaml, csv/<stage>/metrics.csv, metrics.json."""
    run = root / f"{name}_lr{lr}_s{seed}"
    (run / ".hydra").mkdir(parents=True)
    config = {
        "name": name,
        "seed": seed,
        "tags": [f"seed{seed}"],
        "paths": {"output_dir": str(run)},
        "model": {
            "tokenizer": {"_target_": "genie.module.TokenizerModule", "lr": lr},
            "dynamics": {
                "_target_": "genie.module.DynamicsModule",
                "tokenizer_ckpt": str(run / "checkpoints"),
            },
        },
        "trainer": {"max_steps": 4, "enable_progress_bar": seed % 2 == 0},
        "logger": {"wandb": {"name": f"{name}-seed{seed}", "save_dir": str(run)}},
        "print_config": seed == 0,
        "callbacks": {"seeds": {"seed": seed}, "other": {"offset": 100 + seed if name == "x" else seed}},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "csv").mkdir()
    if write_csv:
        for stage in ("tokenizer", "dynamics"):
            path = run / "csv" / stage / "metrics.csv"
            path.parent.mkdir(parents=True)
            with path.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["epoch", "step", "train/loss", "val/psnr_recon"])
                for step in range(4):
                    w.writerow([0, step, 1.0 / (step + 1) + curve_offset, ""])
                    if step % 2 == 1:
                        w.writerow([0, step, "", 20.0 + step + curve_offset])
    if write_metrics_json:
        (run / "metrics.json").write_text(json.dumps(final or {}))
    return run


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "sweep"
    finals = [
        {"test/psnr_recon": 30.0, "test/psnr_next": 25.0},
        {"test/psnr_recon": 31.0, "test/psnr_next": 26.0},
        {"test/psnr_recon": 33.0, "test/psnr_next": 24.0},
    ]
    for seed, final in enumerate(finals):
        make_run(root, seed, final=final, curve_offset=0.1 * seed)
    return root, finals


def table_row(report: str, metric: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {metric} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_three_seeds_one_group_with_bands_and_table(sweep, tmp_path):
    root, finals = sweep
    out = tmp_path / "report"
    report_path, messages = write_report([root], out)
    report = report_path.read_text()
    assert messages == []
    assert "Runs found: 3 in 1 group(s)" in report
    assert "Seeds: 0, 1, 2 (n=3)" in report
    for metric in ("test/psnr_recon", "test/psnr_next"):
        values = [f[metric] for f in finals]
        cells = table_row(report, metric)
        mean, std = cells[1].split(" ± ")
        assert float(mean) == pytest.approx(statistics.fmean(values), rel=1e-3)
        assert float(std) == pytest.approx(statistics.stdev(values), rel=1e-3)
        assert cells[2] == "3/3"
    # one plot per (stage, metric), each referenced from the report
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == [
        "dynamics__train_loss.png",
        "dynamics__val_psnr_recon.png",
        "tokenizer__train_loss.png",
        "tokenizer__val_psnr_recon.png",
    ]
    for name in pngs:
        assert f"plots/{name}" in report
        assert (out / "plots" / name).stat().st_size > 1000


def test_sample_videos_linked(sweep, tmp_path):
    root, _ = sweep
    run = sorted(root.iterdir())[0]
    for name in ("test_step2.mp4", "test_step10.mp4", "val_step10.mp4"):
        (run / "videos" / "dynamics").mkdir(parents=True, exist_ok=True)
        (run / "videos" / "dynamics" / name).write_bytes(b"")
    report = write_report([root], tmp_path / "r")[0].read_text()
    link = f"[seed 0 dynamics](../multirun/sweep/{run.name}/videos/dynamics/test_step10.mp4)"
    assert link in report
    assert "test_step2.mp4" not in report


def test_plot_has_band_of_one_std(sweep, tmp_path, monkeypatch):
    """The band drawn is mean ± sample std of the seeds at each step."""
    import matplotlib.axes

    root, _ = sweep
    bands = []
    original = matplotlib.axes.Axes.fill_between

    def spy(self, x, y1, y2, **kw):
        bands.append((list(x), list(y1), list(y2)))
        return original(self, x, y1, y2, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy)
    write_report([root], tmp_path / "report")
    assert len(bands) == 4  # one group x (2 stages x 2 metrics)
    # val/psnr_recon of a stage: steps 1 and 3, seeds offset by 0, 0.1, 0.2
    steps, lo, hi = next(b for b in bands if b[0] == [1, 3])
    std = statistics.stdev([0.0, 0.1, 0.2])
    assert lo[0] == pytest.approx(21.1 - std) and hi[0] == pytest.approx(21.1 + std)


def test_paper_figure_shown_beside_matching_metric(sweep, tmp_path):
    root, _ = sweep
    report = write_report([root], tmp_path / "r")[0].read_text()
    cells = table_row(report, "test/psnr_recon")
    assert "38.25" in cells[3] and "GenieRedux" in cells[4] and "arXiv:2409.06445" in cells[4]
    assert "36.5" in cells[3] and "Genie Table 6" in cells[4]
    assert "Tiny settings" in report


def test_mixed_experiments_are_flagged_and_kept_apart(tmp_path):
    root = tmp_path / "mixed"
    for seed in range(3):
        make_run(root, seed, final={"test/psnr_recon": 30.0 + seed})
    for seed in range(2):
        make_run(root, seed, lr=1e-4, final={"test/psnr_recon": 20.0 + seed})
    make_run(root, 0, name="diamond_breakout_tiny", final={"test/psnr_next": 22.0})
    report_path, messages = write_report([root], tmp_path / "out")
    report = report_path.read_text()
    assert "Runs found: 6 in 3 group(s)" in report
    flagged = [m for m in messages if "differ in more than the seed" in m]
    assert len(flagged) == 1 and "model.tokenizer.lr" in flagged[0] and "2 separate groups" in flagged[0]
    assert "## genie_coinrun_tiny [model.tokenizer.lr=0.001]" in report
    assert "## genie_coinrun_tiny [model.tokenizer.lr=0.0001]" in report
    assert "## diamond_breakout_tiny" in report
    means = [line for line in report.splitlines() if line.startswith("| test/psnr_recon |")]
    assert sorted(c.split("|")[2].strip() for c in means) == ["20.5 ± 0.7071", "31 ± 1"]


def test_missing_metric_in_some_seeds_and_run_without_metrics(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, 0, final={"test/psnr_recon": 30.0, "test/psnr_next": 25.0})
    make_run(root, 1, final={"test/psnr_recon": 32.0})
    make_run(root, 2, write_metrics_json=False, write_csv=False)
    report_path, messages = write_report([root], tmp_path / "out")
    report = report_path.read_text()
    assert any("test/psnr_next missing in seed 1, 2" in m for m in messages)
    assert any("no metrics (empty csv/ and no metrics.json)" in m for m in messages)
    assert table_row(report, "test/psnr_next")[1:3] == ["25 ± 0", "1/3"]
    assert table_row(report, "test/psnr_recon")[1:3] == ["31 ± 1.414", "2/3"]
    assert "## Messages" in report


def test_final_metrics_fall_back_on_csv_test_values(tmp_path):
    run = make_run(tmp_path / "s", 0, write_metrics_json=False)
    with (run / "csv" / "dynamics" / "metrics.csv").open("a", newline="") as f:
        csv.writer(f).writerow([0, 4, "", ""])  # a row without values is ignored
    path = run / "csv" / "test" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("epoch,step,test/psnr_next\n0,4,27.5\n")
    report_path, messages = write_report([run], tmp_path / "out")
    assert table_row(report_path.read_text(), "test/psnr_next")[1:3] == ["27.5 ± 0", "1/1"]
    assert any("no metrics.json" in m for m in messages)


def test_cli_and_no_runs(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no run directory" in capsys.readouterr().err
    make_run(tmp_path / "s", 0, final={"test/psnr_recon": 30.0})
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()
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
