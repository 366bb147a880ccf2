"""End to end: `train.py -m seed=0,1,2` of a tiny two-stage run, then `python -m common.report` gives n=3,
read from the run directories and from W&B's offline logs alike, with each stage's training clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from common.metrics import psnr
from tests.conftest import ROOT, tiny_data
from tests.fake_family import FakePred
from tests.test_report import row_of, rows_of, section


class PredVsCopyLast(FakePred):
    """The test family's second stage, also scoring next frames beside copy-last as the families do:
    its 'prediction' of frame t+1 is the first stage's reconstruction of frame t (16x16 frames)."""

    def test_step(self, batch, i):
        super().test_step(batch, i)
        x = self.enc._small(batch["frames"]).reshape(len(batch["frames"]), -1, 16, 16, 3)  # (B, T, 16, 16, 3)
        recon = self.enc.dec(self.enc.enc(x.flatten(2))).clamp(0, 1).reshape(x.shape)
        n = x[:, 1:].numel() // (16 * 16 * 3)
        self.log(
            "test/psnr_next", psnr(recon[:, :-1].reshape(n, 16, 16, 3), x[:, 1:].reshape(n, 16, 16, 3)).mean()
        )
        self.log(
            "test/psnr_copy_last",
            psnr(x[:, :-1].reshape(n, 16, 16, 3), x[:, 1:].reshape(n, 16, 16, 3)).mean(),
        )


def report(args: list[str], env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "common.report", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


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
    cmd += ["print_config=false", "logger=default", "trainer.enable_progress_bar=false"]
    cmd += ["trainer.enable_model_summary=false", "trainer.accelerator=cpu", "trainer.max_steps=2"]
    cmd += ["trainer.val_check_interval=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    # the tests' two-stage family (tests/fake_family.py): enc, then pred reading enc's last.ckpt
    cmd += [
        "+model.enc._target_=tests.fake_family.FakeEnc",
        "+model.pred._target_=tests.test_report_e2e.PredVsCopyLast",
    ]
    cmd += ["+model.pred.enc_ckpt=null", "~callbacks.eval_video"] + tiny_data("procgen", data_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]

    # metrics.json: each stage's clock, the job's totals and the derived headline value
    for seed in range(3):
        m = json.loads((sweep / str(seed) / "metrics.json").read_text())
        assert m["time/enc_steps"] == m["time/pred_steps"] == 2
        assert m["time/train_wall_s"] == pytest.approx(m["time/enc_wall_s"] + m["time/pred_wall_s"])
        assert 0 < m["time/pred_cpu_s"] and 0 < m["time/pred_wall_s"] < 300
        assert m["params/pred"] > m["params/pred_trainable"] > 0  # the frozen enc is held by pred
        assert m["test/psnr_next_minus_copy_last"] == pytest.approx(
            m["test/psnr_next"] - m["test/psnr_copy_last"]
        )

    out = tmp_path / "report"
    proc = report([str(sweep), "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from_dirs = (out / "report.md").read_text()
    assert "Runs found: 3 in 1 group(s)" in from_dirs
    assert "Seeds: 0, 1, 2 (n=3)" in from_dirs
    row = row_of(from_dirs, "next-frame PSNR (dB)")
    assert " ± " in row[1] and row[4] == "3/3" and "(seeds)" in row[3]
    assert row_of(from_dirs, "steps")[1] == "enc 2 · pred 2"
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "compute.png",
        "curves_enc.png",
        "curves_pred.png",
    ]
    assert (out / "report.html").stat().st_size > 10_000

    # the same report from W&B's offline logs of the same runs (one W&B run per seed and stage)
    proc = report([str(sweep), "--out", str(tmp_path / "wb"), "--from", "wandb"], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from_wandb = (tmp_path / "wb" / "report.md").read_text()
    assert "Runs found: 3 in 1 group(s) (read from W&B logs: 3)" in from_wandb
    head = "## fake_tiny · " + from_dirs.split("## fake_tiny · ")[1].splitlines()[0]
    for first in ("next-frame PSNR (dB)", "reconstruction PSNR (dB)", "wall time (min)", "training CPU (min)",
                  "steps", "parameters", "test/loss"):  # fmt: skip
        assert rows_of(section(from_wandb, head), first) == rows_of(section(from_dirs, head), first), first
