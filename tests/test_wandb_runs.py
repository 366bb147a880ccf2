"""W&B records what it claims: one run per (job, stage), each with its own config, job type and the
experiment's group; every sweep job its own runs; a run resumed after kill -9 has each step once.

Read back with W&B's own reader of its offline transaction logs (`wandb leet inspect`), not our code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.test_resume import fake_conf, tiny_args, train

ROOT = Path(__file__).resolve().parents[1]


def inspect(fragment: Path) -> tuple[list[dict], dict]:
    """(records, summary) of one offline W&B run folder, as W&B's CLI reads them."""
    cli = [sys.executable, "-m", "wandb", "leet", "inspect", "--json"]
    records = subprocess.run([*cli, str(fragment)], capture_output=True, text=True, check=True).stdout
    summary = subprocess.run([*cli, "--summary", str(fragment)], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in records.splitlines() if line.strip()], json.loads(summary.stdout)


def fragments(run_dir: Path) -> list[Path]:
    """The offline W&B run folders of a run directory, oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def run_record(records: list[dict]) -> dict:
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    return run


def history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def steps_of(rows: list[dict], key: str) -> list[int]:
    return [int(row["trainer/global_step"]) for row in rows if key in row]


def wandb_args(tmp_path: Path, name: str) -> list[str]:
    conf, data = fake_conf(tmp_path / "conf"), tmp_path / "data"
    return tiny_args(conf, data) + ["logger=default", f"name={name}", "trainer.log_every_n_steps=1"]


def test_each_job_and_stage_is_its_own_wandb_run_with_its_own_config(tmp_path):
    """A two-seed sweep (Hydra runs both jobs in one process) of the two-stage family: four W&B runs."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *wandb_args(tmp_path, "wb_sweep"), "seed=0,1"]
    cmd += ["+stage_overrides={enc: {trainer: {max_steps: 3}}, pred: {trainer: {max_steps: 2}}}"]
    cmd += [f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]

    all_ids = set()
    for seed in (0, 1):
        run = sweep / str(seed)
        ids = json.loads((run / "wandb_ids.json").read_text())
        found = {}
        for fragment in fragments(run):
            records, summary = inspect(fragment)
            meta = run_record(records)
            stage = meta["job_type"]
            found[stage] = meta["run_id"]
            assert meta["run_group"] == "wb_sweep" and meta["display_name"] == f"wb_sweep-seed{seed}-{stage}"
            config, steps = summary["config"], {"enc": 3, "pred": 2}[stage]
            assert config["name"] == "wb_sweep" and config["seed"] == seed  # the experiment's, not the data's
            assert config["trainer"]["max_steps"] == steps  # the stage's trainer steps, not the episode cap
            assert config["data"]["name"] == "resume_tiny" and config["data"]["max_steps"] == 40
            assert list(config["model"]) == [stage] and config["stage"] == stage  # this stage's module
            assert config["git_commit"]
            assert "clip_length" not in config and "max_steps" not in config  # Lightning's hparams: nested
            assert config["hparams"]["clip_length"] == 4
            rows = history(records)
            assert steps_of(rows, "train/loss") == list(range(steps))  # this job's and stage's steps only
            test_keys = {k for row in rows for k in row if k.startswith("test/")}
            assert test_keys == {"enc": {"test/psnr_recon"}, "pred": {"test/loss"}}[stage]
        assert found == ids, (found, ids)
        all_ids |= set(ids.values())
    assert len(all_ids) == 4


def test_run_resumed_after_kill_logs_each_step_once(tmp_path):
    """kill -9 at step 45, last checkpoint at step 25: the rows of steps 26.. that W&B had written are not
    logged again by the resumed run; those it had not written yet (it writes its log in blocks) are. The runs
    start from a process with a W&B service of its own (as from a notebook): train.py must not make its
    runs streams of that service, or the rerun finds its run id in use by the killed process's stream."""
    import wandb

    wandb.setup()  # puts the service's token in os.environ, which the train.py processes inherit
    assert "WANDB_SERVICE" in os.environ
    args = wandb_args(tmp_path, "wb_kill") + ["stage=enc", "test=false", "trainer.max_steps=50"]
    args += ["callbacks.checkpoint.every_n_train_steps=25", "trainer.val_check_interval=15"]
    run = tmp_path / "run"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.step=45"]
    killed = train([*args, *kill, "+callbacks.kill.sig=SIGKILL"], run)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = train(args, run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    first, second = (history(inspect(fragment)[0]) for fragment in fragments(run))
    assert max(steps_of(first, "train/loss")) > 25  # W&B holds steps that the resumed run redid
    rows = first + second
    for key in ("train/loss", "lr-Adam", "val/psnr_recon"):
        counts = Counter(steps_of(rows, key))
        assert all(n == 1 for n in counts.values()), (key, counts)
    assert steps_of(rows, "train/loss") == list(range(50))
    assert steps_of(rows, "val/psnr_recon") == [14, 29, 44]
    w_steps = [row["_step"] for row in rows]  # W&B's row index goes on: syncing the pieces keeps every row
    assert w_steps == list(range(len(rows))), w_steps


def test_resumed_logger_skips_the_steps_its_run_holds_and_goes_on_after_its_rows(tmp_path):
    """In-process, without timing: a first piece logs steps 0-5, a resumed piece redoes 3-7."""
    from common.wandb_logger import StageWandbLogger, logged_history

    def piece(steps: range, logged=None) -> None:
        logger = StageWandbLogger(save_dir=str(tmp_path), offline=True, id="piece1234567", resume="allow",
                                  project="worldplay", logged=logged)  # fmt: skip
        for step in steps:
            logger.log_metrics({"train/loss": float(step), "lr": 0.1}, step=step)
            if step % 3 == 2:
                logger.log_metrics({"val/loss": 1.0 + step}, step=step)
        logger.log_metrics({"test/loss": 9.0}, step=steps[-1])
        logger.finish()

    piece(range(6))
    logged = logged_history(tmp_path / "wandb", "piece1234567")
    assert logged.last_row == 8 and logged.steps == {"train/loss": 5, "lr": 5, "val/loss": 5, "test/loss": 5}
    piece(range(3, 8), logged)
    rows = [row for fragment in fragments(tmp_path) for row in history(inspect(fragment)[0])]
    assert steps_of(rows, "train/loss") == list(range(8)) and steps_of(rows, "lr") == list(range(8))
    assert steps_of(rows, "val/loss") == [2, 5]
    assert steps_of(rows, "test/loss") == [5, 7]  # a test is a new measurement: always logged
    assert [row["_step"] for row in rows] == list(range(len(rows)))
