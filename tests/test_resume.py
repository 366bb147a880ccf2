"""Preemption-safe resume: a run stopped by SIGTERM and rerun ends where an uninterrupted run ends.

Also: the clip sampler's order (by seed and epoch, disjoint ranks, mid-epoch resume), per-batch seeds,
`resume=PATH`, SLURM requeue, and the W&B run id kept across the rerun.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Dataset

from common.data.sampler import ClipSampler, ResumableLoader
from common.resume import ResumableCSVLogger, requeue, resume_checkpoint, slurm_job_id, step_seed

ROOT = Path(__file__).resolve().parents[1]


class SignalAt(Callback):
    """Test helper: global rank 0 sends `sig` to its own process at the end of training step `step`."""

    def __init__(self, step: int, sig: str = "SIGTERM"):
        self.step, self.sig = step, signal.Signals[sig]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.kill(os.getpid(), self.sig)


class SignalInTest(Callback):
    """Test helper: SIGTERM to this process after the first test batch (Lightning's own handler's turf)."""

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def fake_conf(root: Path) -> Path:
    """A config search path holding model=fake: the two-stage test family of tests/fake_family.py."""
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "fake.yaml").write_text(
        "enc:\n  _target_: tests.fake_family.FakeEnc\n  frame_size: ${data.frame_size}\n"
        "pred:\n  _target_: tests.fake_family.FakePred\n  enc_ckpt: null\n"
    )
    return root


def tiny_args(conf: Path, data_dir: Path, model: str = "fake") -> list[str]:
    return [
        f"hydra.searchpath=[file://{conf}]",
        f"model={model}",
        f"paths.data_dir={data_dir}",
        "data.name=resume_tiny",
        "data.episodes=8",
        "data.max_steps=40",
        "data.num_envs=2",
        "data.splits={train: 0.5, val: 0.25, test: 0.25}",
        "data.clip_length=4",
        "data.eval_clips=2",
        "data.batch_size=2",
        "data.progress=false",
        "print_config=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.limit_val_batches=1",
        "~callbacks.eval_video",
    ]


def train(args: list[str], run_dir: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def weights(path: Path) -> tuple[int, dict[str, torch.Tensor]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["global_step"], ckpt["state_dict"]


class Range(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


# ---------------------------------------------------------------- clip order and seeds (no training)


def test_clip_sampler_ranks_split_one_process_batches():
    data = Range(103)
    one = list(ClipSampler(data, seed=5, num_replicas=1, rank=0))
    ranks = [list(ClipSampler(data, seed=5, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(one) == list(range(103))
    assert len(ranks[0]) == len(ranks[1]) == 51 and not set(ranks[0]) & set(ranks[1])
    for i in range(25):  # batch i of 2 ranks x batch 2 == batch i of one process x batch 4
        assert sorted(ranks[0][2 * i : 2 * i + 2] + ranks[1][2 * i : 2 * i + 2]) == sorted(
            one[4 * i : 4 * i + 4]
        )
    other_seed = list(ClipSampler(data, seed=6, num_replicas=1, rank=0))
    assert one == list(ClipSampler(data, seed=5, num_replicas=1, rank=0)) and one != other_seed
    s = ClipSampler(data, seed=5, num_replicas=1, rank=0)
    s.set_epoch(1)
    assert list(s) != one and sorted(s) == list(range(103))


def test_resumable_loader_continues_mid_epoch():
    data = Range(40)
    ref = ResumableLoader(data, ClipSampler(data, seed=0, num_replicas=1, rank=0), batch_size=4)
    ref.sampler.set_epoch(2)
    full = [b.tolist() for b in ref]
    assert ref.state_dict() == {"epoch": 2, "batches": 10}

    first = ResumableLoader(data, ClipSampler(data, seed=0, num_replicas=1, rank=0), batch_size=4)
    first.sampler.set_epoch(2)
    it = iter(first)
    head = [next(it).tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 3}

    again = ResumableLoader(data, ClipSampler(data, seed=0, num_replicas=1, rank=0), batch_size=4)
    again.load_state_dict(state)
    again.sampler.set_epoch(2)
    assert head + [b.tolist() for b in again] == full
    again.sampler.set_epoch(3)  # the next epoch starts from its beginning
    assert len(list(again)) == 10


def test_step_seeds_differ_by_batch_and_rank():
    seeds = {step_seed(0, b, r) for b in range(50) for r in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(0, 3, 1) == step_seed(0, 3, 1) != step_seed(1, 3, 1)


def test_csv_logger_continues_metrics_csv_on_rerun(tmp_path):
    first = ResumableCSVLogger(save_dir=str(tmp_path), name="csv", version="enc")
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.log_metrics({"train/loss": 0.5}, step=1)
    first.save()
    rerun = ResumableCSVLogger(save_dir=str(tmp_path), name="csv", version="enc")
    rerun.log_metrics({"train/loss": 0.25, "val/psnr": 20.0}, step=2)  # a new column
    rerun.save()
    rerun.log_metrics({"train/loss": 0.125}, step=3)
    rerun.save()
    with open(tmp_path / "csv" / "enc" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["train/loss"] for r in rows] == ["1.0", "0.5", "0.25", "0.125"] and rows[2][
        "val/psnr"
    ] == "20.0"


# ---------------------------------------------------------------- resume=PATH and SLURM requeue


def test_resume_checkpoint_choices(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "enc").mkdir(parents=True)
    last = run / "checkpoints" / "enc" / "last.ckpt"
    torch.save({"worldplay": {"family": "fake", "stage": "enc"}}, last)
    assert resume_checkpoint(True, run, "enc", "fake") == str(last)
    assert resume_checkpoint(True, run, "pred", "fake") is None
    assert resume_checkpoint(False, run, "enc", "fake") is None
    assert resume_checkpoint(str(run), tmp_path / "new", "enc", "fake") == str(last)
    assert resume_checkpoint(str(last), tmp_path / "new", "enc", "fake") == str(last)
    assert resume_checkpoint(str(last), tmp_path / "new", "pred", "fake") is None
    with pytest.raises(FileNotFoundError, match="resume=.*nope"):
        resume_checkpoint(str(tmp_path / "nope"), run, "enc", "fake")
    with pytest.raises(ValueError, match="'fake' checkpoint, this model is 'genie'"):
        resume_checkpoint(str(last), run, "enc", "genie")


def test_requeue_calls_scontrol_with_the_array_task(tmp_path, monkeypatch):
    log = tmp_path / "scontrol.log"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {log}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    assert slurm_job_id() is None
    assert "not under SLURM" in requeue(signal.SIGUSR1, signal.SIG_DFL)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert requeue(signal.SIGUSR1, signal.SIG_DFL) == "requeued SLURM job 4242"
    assert log.read_text().split() == ["requeue", "4242"]
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert requeue(signal.SIGUSR2, signal.SIG_DFL) == "requeued SLURM job 77_3"
    assert log.read_text().split() == ["requeue", "77_3"]

    handed = []

    def submitit_handler(signum, frame):  # stands for submitit's checkpoint_and_try_requeue
        handed.append(signum)

    submitit_handler.__module__ = "submitit.core.job_environment"
    assert requeue(signal.SIGUSR2, submitit_handler) == "handed to submitit" and handed == [signal.SIGUSR2]


# ---------------------------------------------------------------- the real thing, through train.py


def test_sigterm_then_rerun_matches_uninterrupted_run(tmp_path):
    conf, data = fake_conf(tmp_path / "conf"), tmp_path / "data"
    args = tiny_args(conf, data) + [
        "stage=enc",
        "test=false",
        "trainer.max_steps=16",
        "+trainer.limit_train_batches=6",  # epochs of 6 batches: the run crosses epoch boundaries
        "trainer.val_check_interval=5",
        "callbacks.checkpoint.every_n_train_steps=4",
    ]
    straight = train([*args, "logger=csv"], tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]

    run = tmp_path / "stopped"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.step=9"]
    stopped = train([*args, "logger=default", *kill], run)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "SIGTERM received: stopped at step" in stopped.stderr
    step, _ = weights(run / "checkpoints" / "enc" / "last.ckpt")
    assert 9 <= step <= 10  # the batch boundary after the signal, mid-epoch 2

    resumed = train([*args, "logger=default"], run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    step_a, w_a = weights(tmp_path / "straight" / "checkpoints" / "enc" / "last.ckpt")
    step_b, w_b = weights(run / "checkpoints" / "enc" / "last.ckpt")
    assert step_a == step_b == 16
    assert w_a.keys() == w_b.keys()
    for k in w_a:
        torch.testing.assert_close(w_b[k], w_a[k], rtol=0, atol=1e-7, msg=k)

    # the W&B run continues with the same id: both offline runs carry the id kept in wandb_ids.json
    ids = json.loads((run / "wandb_ids.json").read_text())
    runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(f"-{ids['enc']}") for name in runs), (ids, runs)


def test_sigterm_during_test_exits_143_and_rerun_tests(tmp_path):
    conf, data = fake_conf(tmp_path / "conf"), tmp_path / "data"
    args = tiny_args(conf, data) + [
        "stage=enc",
        "trainer.max_steps=2",
        "data.eval_batch_size=1",
        "logger=csv",
    ]
    stopped = train([*args, "+callbacks.kill._target_=tests.test_resume.SignalInTest"], tmp_path / "run")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert not (tmp_path / "run" / "metrics.json").exists()
    rerun = train(args, tmp_path / "run")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "test/psnr_recon" in json.loads((tmp_path / "run" / "metrics.json").read_text())
