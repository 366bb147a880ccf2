"""The report read from W&B's offline logs shows what it shows read from the run directories.

Real offline W&B runs, one per (seed, stage) as common/stages.py opens them (StageWandbLogger, the stage's
config, test metrics logged, the clock and derived values put in the summary with `log_summary`), beside
the run directories' config.yaml, csv/ and metrics.json of the same values.
"""

from __future__ import annotations

import json

import numpy as np
import wandb

from common.report import write_report
from common.report_metrics import differences, training_totals
from common.wandb_logger import StageWandbLogger
from tests.test_report import FINALS, GENIE, STAGE_TESTS, make_run, row_of, rows_of, section

CLOCK = {"tokenizer": ("time/tokenizer_wall_s", "time/tokenizer_cpu_s", "time/tokenizer_steps"),
         "dynamics": ("time/dynamics_wall_s", "time/dynamics_cpu_s", "time/dynamics_steps", "params/dynamics",
                      "params/dynamics_trainable")}  # fmt: skip


def log_stage(run_dir, seed: int, stage: str, final: dict, offset: float) -> None:
    """One stage's W&B run: what make_run writes into csv/<stage>/ and metrics.json, logged to W&B."""
    config = {"name": "genie_coinrun_tiny", "seed": seed, "data": {"name": "procgen_coinrun_tiny"},
              "model": {stage: {"_target_": GENIE[stage]}}, "stage": stage, "git_commit": "abc",
              "trainer": {"max_steps": 4}}  # fmt: skip
    logger = StageWandbLogger(save_dir=str(run_dir), offline=True, id=f"s{seed}{stage}", project="worldplay",
                              name=f"genie_coinrun_tiny-seed{seed}-{stage}", job_type=stage, config=config,
                              group="genie_coinrun_tiny")  # fmt: skip
    for step in range(4):
        logger.log_metrics({"train/loss": 1.0 / (step + 1) + offset}, step=step)
        if step % 2 == 1:
            logger.log_metrics({"val/psnr_recon": 20.0 + step + offset}, step=step)
    tests = {k: final[k] for k in STAGE_TESTS[stage]}
    logger.log_metrics(tests, step=4)
    image = wandb.Image(np.zeros((4, 4, 3), dtype=np.uint8))  # media, as the sample videos: not a metric
    logger.experiment.log({"test/sample": image, "trainer/global_step": 4})
    values = {**tests, **{k: final[k] for k in CLOCK[stage]}}
    done = [k for s in list(GENIE)[: list(GENIE).index(stage) + 1] for k in CLOCK[s]]  # as in metrics.json
    logger.log_summary({**values, **differences(values), **training_totals({k: final[k] for k in done})})
    logger.finish()


def test_report_from_wandb_logs_equals_report_from_run_dirs(tmp_path):
    root = tmp_path / "sweep"
    for seed, final in enumerate(FINALS[:2]):
        final = {
            k: v for k, v in final.items() if not k.startswith(("test/rollout", "test/ssim"))
        }  # no stage logs
        tests = {stage: {k: final[k] for k in keys} for stage, keys in STAGE_TESTS.items()}
        run = make_run(root, seed, final=final, curve_offset=0.1 * seed, stage_tests=tests)
        for stage in GENIE:
            log_stage(run, seed, stage, final, 0.1 * seed)

    from_dirs = write_report([root], tmp_path / "dirs")[0].read_text()
    out = tmp_path / "wandb"
    report_path, messages = write_report([root], out, source="wandb")
    from_wandb = report_path.read_text()
    assert messages == []
    assert "Runs found: 2 in 1 group(s) (read from W&B logs: 2)" in from_wandb
    head = "## genie_coinrun_tiny · procgen_coinrun_tiny"
    dirs, wandb = section(from_dirs, head), section(from_wandb, head)
    assert (
        "Seeds: 0, 1 (n=2)" in wandb and "**Verdict:** does not beat copy-last (interval includes 0)" in wandb
    )
    for first in ("next-frame PSNR (dB)", "ΔtPSNR t=4 (dB)", "reconstruction PSNR (dB)", "wall time (min)",
                  "training CPU (min)", "steps", "parameters", "test/codebook_usage", "test/loss"):  # fmt: skip
        assert rows_of(wandb, first) == rows_of(dirs, first), first
    assert row_of(wandb, "steps")[1] == "tokenizer 100 · dynamics 200"
    # stages from each W&B run's job type: the other metrics sit under the stage that logged them
    assert row_of(section(wandb, "### Other metrics: stage tokenizer"), "test/codebook_usage")
    assert row_of(section(wandb, "### Other metrics: stage dynamics"), "test/loss")
    # curves from W&B's history: the same plots
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == sorted(
        p.name for p in (tmp_path / "dirs" / "plots").glob("*.png")
    )
    assert "no curves" not in from_wandb
    assert "test/sample" not in from_wandb  # W&B media keys (test/sample._type, .width, ...) are no metric


def test_wandb_summary_holds_the_headline_names(tmp_path):
    """What a W&B table of the runs shows: the derived headline values under metrics.json's names."""
    import subprocess
    import sys

    final = FINALS[0]
    log_stage(tmp_path, 0, "dynamics", final, 0.0)
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    cli = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", "--summary", str(log)]
    summary = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)["summary"]
    assert summary["test/psnr_next_minus_copy_last"] == final["test/psnr_next"] - final["test/psnr_copy_last"]
    assert summary["time/train_wall_s"] == final["time/tokenizer_wall_s"] + final["time/dynamics_wall_s"]
    assert summary["params/dynamics"] == final["params/dynamics"]


def test_summary_opens_no_run_for_a_stage_that_logged_nothing(tmp_path):
    """fast_dev_run trains without loggers: its stage's W&B logger must not open a run for the summary."""
    logger = StageWandbLogger(save_dir=str(tmp_path), offline=True, id="quiet", project="worldplay")
    logger.log_summary({"time/enc_wall_s": 1.0})
    logger.finish()
    assert not (tmp_path / "wandb").exists()
