"""End to end: `train.py -m seed=0,1,2` of a tiny two-stage run, then `python -m common.report` gives n=3."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, tiny_data


@pytest.mark.slow
def test_three_seed_multirun_then_report(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "seed=0,1,2",
        "name=fake_tiny",
        f"hydra.sweep.dir={sweep}",
    ]
    cmd += ["print_config=false", "logger=csv", "trainer.enable_progress_bar=false"]
    cmd += ["trainer.enable_model_summary=false", "trainer.accelerator=cpu", "trainer.max_steps=2"]
    cmd += ["trainer.val_check_interval=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    # the tests' two-stage family (tests/fake_family.py): enc, then pred reading enc's last.ckpt
    cmd += [
        "+model.enc._target_=tests.fake_family.FakeEnc",
        "+model.pred._target_=tests.fake_family.FakePred",
    ]
    cmd += ["+model.pred.enc_ckpt=null"] + tiny_data("procgen", data_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]

    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "common.report", str(sweep), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (out / "report.md").read_text()
    assert "Runs found: 3 in 1 group(s)" in report
    assert "Seeds: 0, 1, 2 (n=3)" in report
    row = next(line for line in report.splitlines() if line.startswith("| test/psnr_recon |"))
    assert " ± " in row and "| 3/3 |" in row
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert {"enc__val_psnr_recon.png", "pred__val_loss.png"} <= pngs
