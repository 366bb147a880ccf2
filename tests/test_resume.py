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

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Dataset

from common.data.sampler import ClipSampler, ResumableLoader
from common.resume import ResumableCSVLogger, StepSeeds, requeue, resume_checkpoint, slurm_job_id, step_seed

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


def test_csv_logger_drops_the_rows_a_killed_run_wrote_after_its_checkpoint(tmp_path):
    first = ResumableCSVLogger(save_dir=str(tmp_path), name="csv", version="enc")
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.log_metrics({"val/psnr": 20.0}, step=3)  # validation after step 3: kept
    first.log_metrics({"val/psnr": 21.0}, step=5)
    first.save()
    path = tmp_path / "csv" / "enc" / "metrics.csv"
    with open(path, "a") as f:
        f.write("6,0.12")  # the row being written when the kill came: no newline
    rerun = ResumableCSVLogger(save_dir=str(tmp_path), name="csv", version="enc")
    rerun.drop_from(4)  # the checkpoint the rerun continues from: global step 4
    rerun.log_metrics({"train/loss": 4.5}, step=4)
    rerun.save()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["train/loss"], r["val/psnr"]) for r in rows] == [
        ("0", "0.0", ""),
        ("1", "1.0", ""),
        ("2", "2.0", ""),
        ("3", "3.0", ""),
        ("3", "", "20.0"),
        ("4", "4.5", ""),
    ]
    assert not [p for p in path.parent.iterdir() if p.name != "metrics.csv"]  # no temporary file left


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


# 16 steps in epochs of 6 batches (the runs cross epoch boundaries), validation every 5 batches, periodic
# checkpoints every 4, every step logged, an EMA of the weights: what a stopped and rerun run must reproduce.
RUN_ARGS = [
    "stage=enc",
    "test=false",
    "+trainer.limit_train_batches=6",
    "trainer.val_check_interval=5",
    "trainer.log_every_n_steps=1",
    "callbacks.checkpoint.every_n_train_steps=4",
    "callbacks.ema={_target_: common.ema.EMAWeights, decay: 0.9}",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[list[str], Path]:
    """(arguments without trainer.max_steps, run dir) of one uninterrupted 16-step run, shared by the tests
    below (they reuse its dataset folder)."""
    root = tmp_path_factory.mktemp("resume")
    args = tiny_args(fake_conf(root / "conf"), root / "data") + RUN_ARGS
    out = train([*args, "trainer.max_steps=16", "logger=csv"], root / "straight")
    assert out.returncode == 0, out.stderr[-3000:]
    return args, root / "straight"


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "enc" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same final step, averaged and raw weights, EMA update count, and metrics.csv row for row."""
    a = torch.load(reference / "checkpoints" / "enc" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "enc" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 16
    assert b["callbacks"]["EMAWeights"]["updates"] == a["callbacks"]["EMAWeights"]["updates"] == 16
    raw_a, raw_b = a["callbacks"]["EMAWeights"]["raw"], b["callbacks"]["EMAWeights"]["raw"]
    assert a["state_dict"].keys() == b["state_dict"].keys() and raw_a.keys() == raw_b.keys()
    for k in a["state_dict"]:  # the average
        assert torch.equal(b["state_dict"][k], a["state_dict"][k]), f"EMA weight {k}"
    for k in raw_a:
        assert torch.equal(raw_b[k], raw_a[k]), f"raw weight {k}"
    rows_a, rows_b = csv_rows(reference), csv_rows(run_dir)
    steps = [r["step"] for r in rows_b if r.get("train/loss")]
    assert steps == [str(s) for s in range(16)], steps  # each step once
    assert rows_b == rows_a  # the same losses, validations, learning rates and epochs at the same steps


class KillAt(Callback):
    """Test helper: SIGKILL this process (kill -9: no handler runs) at the end of training step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def test_sigterm_then_rerun_matches_uninterrupted_run(uninterrupted, tmp_path):
    args, straight = uninterrupted
    args = [*args, "trainer.max_steps=16", "logger=default"]
    run = tmp_path / "stopped"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.step=9"]
    stopped = train([*args, *kill], run)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "SIGTERM received: stopped at step" in stopped.stderr
    step, _ = weights(run / "checkpoints" / "enc" / "last.ckpt")
    assert 9 <= step <= 10  # the batch boundary after the signal, mid-epoch 2

    resumed = train(args, run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(run, straight)

    # the W&B run continues with the same id: both offline runs carry the id kept in wandb_ids.json
    ids = json.loads((run / "wandb_ids.json").read_text())
    runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(f"-{ids['enc']}") for name in runs), (ids, runs)


def test_extending_a_finished_stage_continues_it(uninterrupted, tmp_path):
    """A stage trained to max_steps=10 (mid-epoch, a validation step) and rerun with 16 in the same run
    directory is the uninterrupted 16-step run: same clips, losses, logged steps and weights."""
    args, straight = uninterrupted
    run = tmp_path / "extended"
    first = train([*args, "trainer.max_steps=10", "logger=csv"], run)
    assert first.returncode == 0, first.stderr[-3000:]
    assert weights(run / "checkpoints" / "enc" / "last.ckpt")[0] == 10
    extended = train([*args, "trainer.max_steps=16", "logger=csv"], run)
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert_same_run(run, straight)


def test_kill_9_then_rerun_logs_each_step_once(uninterrupted, tmp_path):
    """kill -9 at step 7 (last checkpoint at step 4), with last.ckpt then found unreadable (what a write
    torn by the kill leaves when the temp dir is on another filesystem): the rerun continues from
    step_4.ckpt, says so in one line, redoes steps 4-6 and logs them once."""
    args, straight = uninterrupted
    args = [*args, "trainer.max_steps=16", "logger=csv"]
    run = tmp_path / "killed"
    killed = train(
        [*args, "+callbacks.kill._target_=tests.test_resume.KillAt", "+callbacks.kill.step=7"], run
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = run / "checkpoints" / "enc" / "last.ckpt"
    assert weights(last)[0] == 4
    assert [r["step"] for r in csv_rows(run) if r.get("train/loss")] == [str(s) for s in range(6)]
    last.write_bytes(b"")

    resumed = train(args, run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = [line for line in resumed.stderr.splitlines() if "last.ckpt" in line and "step_4.ckpt" in line]
    assert len(said) == 1, resumed.stderr[-3000:]
    assert_same_run(run, straight)


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


class _DrawsInEval(L.LightningModule):
    """Test helper: evaluation metrics that depend on the global RNG, as MaskGIT masks and diffusion noise do."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def test_step(self, batch, batch_idx):
        self.log("test/draw", torch.rand(()) + np.random.rand() + self.w)

    def validation_step(self, batch, batch_idx):
        self.log("val/draw", torch.rand(()) + self.w)


def test_evaluation_draws_depend_on_the_seed_not_on_the_rng_state_reached():
    """A rerun that retests a finished stage (or train=false on its checkpoint) starts from another RNG
    state than the run that trained it; its metrics must still be the same."""
    module = _DrawsInEval()
    loader = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2)
    results = {}
    for state in (1, 2):
        torch.manual_seed(state)
        np.random.seed(state)
        trainer = L.Trainer(
            callbacks=[StepSeeds(seed=3)], logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        test = trainer.test(module, loader, verbose=False)[0]["test/draw"]
        val = trainer.validate(module, loader, verbose=False)[0]["val/draw"]
        results[state] = (test, val)
    assert results[1] == results[2]
    other = L.Trainer(callbacks=[StepSeeds(seed=4)], logger=False, enable_progress_bar=False)
    assert other.test(module, loader, verbose=False)[0]["test/draw"] != results[1][0]  # the seed decides
