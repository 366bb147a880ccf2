"""What resuming needs beyond Lightning's own checkpoint (weights, optimizer, scheduler, loop counters).

- `StepSeeds`: reseeds torch / numpy / random before every training batch from (seed, batch number,
  global rank). Randomness (diffusion noise, MaskGIT masks, dropout) is then a function of where the run
  is, not of its history: a resumed run draws the same numbers as an uninterrupted one, and DDP ranks
  draw different ones. The batch counter is saved in the checkpoint.
- `Preemption`: on SIGTERM / SIGUSR1 / SIGUSR2 (SLURM preemption or time limit; submitit signals USR2,
  Lightning's SLURM environment USR1) all ranks agree at the next batch boundary to write
  `<checkpoint dir>/last.ckpt` and stop training. `exit_if_preempted` (called by common/stages.py after
  `trainer.fit`) then requeues the job under SLURM (submitit's requeue when submitit started the job,
  else `scontrol requeue` as Lightning does) and exits: rank 0 with 128 + signal number and a message,
  the other ranks with 0.
- `resume_checkpoint`: which checkpoint a stage continues from (`resume=true|false|PATH`).
- `ResumableCSVLogger`: a CSVLogger that appends to `csv/<stage>/metrics.csv` on a rerun instead of
  deleting it (Lightning's does), so curves survive preemption.
- The data-sampler position is saved by `common.data.sampler.ResumableLoader`.
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from common.checkpoint import read_meta

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def step_seed(seed: int, batch: int, rank: int) -> int:
    """A well-mixed 63-bit seed for training batch `batch` on global rank `rank`."""
    return int(np.random.SeedSequence([seed, batch, rank]).generate_state(1, dtype=np.uint64)[0]) >> 1


class StepSeeds(Callback):
    """Seed every RNG before each training batch from (seed, batches trained so far, global rank)."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.batches = 0  # training batches finished (all epochs); saved in checkpoints

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        s = step_seed(self.seed, self.batches, trainer.global_rank)
        torch.manual_seed(s)  # also seeds every CUDA device
        np.random.seed(s % 2**32)
        random.seed(s)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.batches += 1  # runs before ModelCheckpoint's hook (Lightning orders checkpoint callbacks last)

    def state_dict(self) -> dict[str, int]:
        return {"batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])


class Preemption(Callback):
    """Turn a preemption signal into `last.ckpt` at the next batch boundary, then a clean stop.

    The handlers are installed when training starts (after Lightning's own, which they replace while
    training runs; Lightning restores the previous handlers at teardown). A handler only records the
    signal; at the end of each batch the ranks all-reduce "any rank signalled?" so that they save the
    same step together. `last.ckpt` goes to the ModelCheckpoint's folder (checkpoints/<stage>/).
    Training then stops through `trainer.should_stop` (without the validation Lightning would run then).
    """

    def __init__(self, signals: tuple[int, ...] | list[int] | None = None):
        self.signals = tuple(signal.Signals(s) for s in (signals or PREEMPTION_SIGNALS))
        self.received: signal.Signals | None = None  # first signal seen by this process
        self.stopped: signal.Signals | None = None  # the signal that stopped training (agreed by all ranks)
        self.saved: Path | None = None
        self.step: int | None = None
        self.previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        # before Lightning installs its handlers: these are the process's own (submitit's under submitit)
        self.previous = {s: signal.getsignal(s) for s in self.signals}

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.received = self.stopped = None
        for s in self.signals:
            signal.signal(s, self._handle)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        code = int(self.received or 0)
        stop = trainer.strategy.reduce_boolean_decision(code != 0, all=False)
        if not stop:
            return
        if trainer.world_size > 1:  # every rank learns which signal stopped the run (rank 0's if it had one)
            code = int(trainer.strategy.reduce(torch.tensor(float(code)), reduce_op="max").item())
        self.stopped = signal.Signals(code)
        self.saved = self.last_path(trainer)
        self.step = trainer.global_step
        ckpt = trainer.checkpoint_callback
        ckpt.last_model_path = str(self.saved)  # after the rerun it overwrites this file, no last-v1.ckpt
        trainer.save_checkpoint(self.saved)
        # on the way out, neither validate (Lightning does when should_stop is set) nor let ModelCheckpoint
        # write its own last.ckpt at train end: that one would hold the end-of-epoch state, not this batch's
        ckpt.save_last = False
        trainer.limit_val_batches = 0
        trainer.should_stop = True

    @staticmethod
    def last_path(trainer: L.Trainer) -> Path:
        ckpt = trainer.checkpoint_callback
        if not isinstance(ckpt, ModelCheckpoint) or not ckpt.dirpath:
            raise ValueError(
                "callbacks.preemption needs callbacks.checkpoint (a ModelCheckpoint with dirpath)"
            )
        return Path(ckpt.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes: ARRAYJOB_TASK for array jobs (submitit sweeps), else the job id."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


def requeue(sig: signal.Signals, previous: Any) -> str:
    """Requeue this SLURM job (global rank 0 only); returns what was done, for the log."""
    if callable(previous) and getattr(previous, "__module__", "").startswith("submitit"):
        previous(int(sig), None)  # submitit: requeues (counting timeouts) and exits
        return "handed to submitit"
    job = slurm_job_id()
    if job is None:
        return "not under SLURM: not requeued"
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        return f"scontrol requeue {job} failed: {result.stderr.strip() or result.returncode}"
    return f"requeued SLURM job {job}"


def exit_if_preempted(trainer: L.Trainer, run_dir: Path) -> None:
    """After trainer.fit: if a signal stopped training, requeue (SLURM, USR1/USR2) and exit with 128 + signal.

    SIGTERM is not requeued (as Lightning and submitit do): under SLURM it means scancel, or preemption
    that the scheduler requeues itself when the partition's PreemptMode says so.
    """
    cb = next((c for c in trainer.callbacks if isinstance(c, Preemption)), None)
    if cb is None or cb.stopped is None:
        return
    sig = cb.stopped
    if trainer.is_global_zero:
        print(
            f"{sig.name} received: stopped at step {cb.step}, saved {cb.saved}. "
            f"Rerunning with hydra.run.dir={run_dir} continues from there.",
            file=sys.stderr,
            flush=True,
        )
        if sig in (signal.SIGUSR1, signal.SIGUSR2):
            print(requeue(sig, cb.previous.get(sig)), file=sys.stderr, flush=True)
    # other ranks stop with 0: Lightning's local DDP launcher SIGKILLs rank 0 when a child fails
    sys.exit(128 + int(sig) if trainer.is_global_zero else 0)


def resume_checkpoint(resume: bool | str | None, run_dir: Path, stage: str, family: str) -> str | None:
    """The checkpoint stage `stage` continues from, or None to start fresh.

    resume=true: `<run_dir>/checkpoints/<stage>/last.ckpt` when it exists. resume=false: never.
    resume=PATH: a checkpoint file written by this stage (files of other stages are ignored by this
    stage), or a run directory whose `checkpoints/<stage>/last.ckpt` is used when it exists.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        last = run_dir / "checkpoints" / stage / "last.ckpt"
        return str(last) if last.is_file() else None
    path = Path(str(resume))
    if path.is_dir():
        last = path / "checkpoints" / stage / "last.ckpt"
        if not (path / "checkpoints").is_dir():
            raise FileNotFoundError(f"resume={path}: not a run directory (no checkpoints/ folder)")
        return str(last) if last.is_file() else None
    if not path.is_file():
        raise FileNotFoundError(f"resume={path}: no such checkpoint file or run directory")
    meta = read_meta(path)
    if meta.get("family") != family:
        raise ValueError(f"resume={path}: a {meta.get('family')!r} checkpoint, this model is {family!r}")
    return str(path) if meta.get("stage") == stage else None


def ignore_preemption_signals() -> None:
    """In DataLoader workers: leave preemption signals to the main process (SLURM signals every process)."""
    for s in PREEMPTION_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


@contextmanager
def sigterm_exit_code() -> Iterator[None]:
    """Outside the training batches (setup, validation start, test), Lightning turns SIGTERM into
    SIGTERMException, a SystemExit with status 0; make it 143 so schedulers and scripts see the stop."""
    try:
        yield
    except SIGTERMException:
        if rank_zero_only.rank != 0:
            sys.exit(0)  # as in exit_if_preempted: rank 0 reports the stop
        print("SIGTERM received outside training batches: stopped; rerun to continue", file=sys.stderr)
        sys.exit(128 + int(signal.SIGTERM))


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when it starts; this one continues it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose `csv/<stage>/metrics.csv` keeps the rows written before a preemption or rerun."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
