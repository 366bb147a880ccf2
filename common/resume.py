"""What resuming needs beyond Lightning's own checkpoint (weights, optimizer, scheduler, loop counters).

- `StepSeeds`: reseeds torch / numpy / random before every training batch from (seed, batch number,
  global rank). Randomness (diffusion noise, MaskGIT masks, dropout) is then a function of where the run
  is, not of its history: a resumed run draws the same numbers as an uninterrupted one, and DDP ranks
  draw different ones. The batch counter is saved in the checkpoint.
- `Preemption`: on SIGTERM / SIGUSR1 / SIGUSR2 (SLURM preemption or time limit; submitit signals USR2,
  Lightning's SLURM environment USR1) all ranks agree at the next batch boundary to stop training, and
  the stage's `common.checkpoint.StageCheckpoint` writes `<checkpoint dir>/last.ckpt` at that batch.
  `exit_if_preempted` (called by common/stages.py after `trainer.fit`) then requeues the job under SLURM
  (submitit's requeue when submitit started the job, else `scontrol requeue` as Lightning does) and
  exits: rank 0 with 128 + signal number and a message, the other ranks with 0.
- `resume_checkpoint`: which checkpoint a stage continues from (`resume=true|false|PATH`); an unreadable
  `last.ckpt` gives way to the newest readable checkpoint of the stage, said in one line.
- `ResumableCSVLogger`: a CSVLogger that appends to `csv/<stage>/metrics.csv` on a rerun instead of
  deleting it (Lightning's does), so curves survive preemption. `ResumedLogs` drops the rows a stopped or
  killed run wrote after the checkpoint a rerun continues from: every step is in the file once.
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
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from common.checkpoint import StageCheckpoint, read_meta, saved_step, write_atomically

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def step_seed(seed: int, batch: int, rank: int) -> int:
    """A well-mixed 63-bit seed for training batch `batch` on global rank `rank`."""
    return int(np.random.SeedSequence([seed, batch, rank]).generate_state(1, dtype=np.uint64)[0]) >> 1


EVAL_BATCH = 2**63  # the batch number whose seed every evaluation starts from (no training batch has it)


def seed_all(seed: int) -> None:
    """Seed torch (every device), numpy and random from one 63-bit seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class StepSeeds(Callback):
    """Seed every RNG before each training batch from (seed, batches trained so far, global rank), and
    before each validation and test from (seed, rank) alone: evaluation draws (masks, noise, rollouts)
    are then a function of the weights, so a rerun that retests a finished stage, a resumed run and
    `train=false` on the same checkpoint report the same metrics."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.batches = 0  # training batches finished (all epochs); saved in checkpoints

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        seed_all(step_seed(self.seed, self.batches, trainer.global_rank))

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        seed_all(step_seed(self.seed, EVAL_BATCH, trainer.global_rank))

    def on_test_start(self, trainer: L.Trainer, pl_module) -> None:
        seed_all(step_seed(self.seed, EVAL_BATCH, trainer.global_rank))

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
    signal; at the end of each batch the ranks all-reduce "any rank signalled?" so that they stop at the
    same step together, through `trainer.should_stop`. The stage's StageCheckpoint, which Lightning runs
    after every other callback, then writes `last.ckpt` in its folder (checkpoints/<stage>/) at this batch:
    after the weight average and the step seeds have counted it, so the rerun continues from exactly the
    state an uninterrupted run has after this step. A validation due at this batch still runs, after the
    save (a kill during it loses only that validation); no other (Lightning validates on any stop).
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
        self.last_path(trainer)  # fails now, in one line, without a StageCheckpoint to write last.ckpt
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
        # StageCheckpoint writes last.ckpt after this hook (at this batch, as should_stop is set). On the way
        # out Lightning validates whenever should_stop is set: let it only when this batch is due for a
        # validation anyway, which the rerun, continuing after this batch, would not run
        loop = trainer.fit_loop
        if not loop.epoch_loop._should_check_val_fx(loop._data_fetcher):
            trainer.limit_val_batches = 0
        trainer.should_stop = True

    @staticmethod
    def last_path(trainer: L.Trainer) -> Path:
        ckpt = trainer.checkpoint_callback
        if not isinstance(ckpt, StageCheckpoint) or not ckpt.dirpath:
            raise ValueError(
                "callbacks.preemption needs callbacks.checkpoint to be a common.checkpoint.StageCheckpoint "
                "with dirpath (it writes last.ckpt when training stops)"
            )
        return ckpt.last_path


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

    resume=true: `<run_dir>/checkpoints/<stage>/last.ckpt` (see `stage_checkpoint`). resume=false: never.
    resume=PATH: a checkpoint file written by this stage (files of other stages are ignored by this
    stage), or a run directory whose `checkpoints/<stage>/` is used as with resume=true.
    Errors (one line): resume=PATH that is neither a file nor a run directory, or a file of another family.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        return stage_checkpoint(run_dir / "checkpoints" / stage, stage)
    path = Path(str(resume))
    if path.is_dir():
        if not (path / "checkpoints").is_dir():
            raise FileNotFoundError(f"resume={path}: not a run directory (no checkpoints/ folder)")
        return stage_checkpoint(path / "checkpoints" / stage, stage)
    if not path.is_file():
        raise FileNotFoundError(f"resume={path}: no such checkpoint file or run directory")
    meta = read_meta(path)
    if meta.get("family") != family:
        raise ValueError(f"resume={path}: a {meta.get('family')!r} checkpoint, this model is {family!r}")
    return str(path) if meta.get("stage") == stage else None


def stage_checkpoint(folder: Path, stage: str) -> str | None:
    """`folder/last.ckpt` when it is readable; else the readable checkpoint of the highest step in `folder`
    (newest file on a tie), saying so in one line on stderr; None when the folder holds no checkpoint.

    An unreadable last.ckpt is what a crash leaves behind a writer that is not atomic (Lightning's, with
    TMPDIR on another filesystem) or a disk that filled up; a missing one, a kill between a periodic
    checkpoint and the first last.ckpt. With no readable checkpoint at all the stage trains from the start,
    and says so.
    """
    last = folder / "last.ckpt"
    others = sorted(p for p in folder.glob("*.ckpt") if p != last) if folder.is_dir() else []
    if last.is_file():
        last_step = saved_step(last)
        if last_step is not None:
            # a kill while last.ckpt was being replaced leaves the periodic checkpoint of that step beside
            # the previous last.ckpt: take it (written after last.ckpt, so of this run, not a stale one)
            since = last.stat().st_mtime
            newer = [
                (step, p)
                for p in others
                if p.stat().st_mtime >= since and (step := saved_step(p)) is not None
            ]
            if newer and max(newer)[0] > last_step:
                step, best = max(newer)
                _say(
                    f"resume: {best.name} (step {step}) is newer than {last} (step {last_step}); stage {stage} continues from it"
                )
                return str(best)
            return str(last)
        why = f"{last} is not a readable checkpoint (cut short?)"
    elif others:
        why = f"{last} is missing"
    else:
        return None
    readable = [(step, p.stat().st_mtime, p) for p in others if (step := saved_step(p)) is not None]
    if not readable:
        _say(
            f"resume: {why} and {folder} holds no other readable checkpoint: stage {stage} trains from the start"
        )
        return None
    step, _, best = max(readable)
    _say(
        f"resume: {why}; stage {stage} continues from {best.name} (step {step}), the newest readable checkpoint"
    )
    return str(best)


def _say(message: str) -> None:
    if rank_zero_only.rank == 0:
        print(message, file=sys.stderr, flush=True)


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
    """Lightning's CSV writer deletes an existing metrics.csv when it starts; this one continues it, and
    rewrites it (new columns, dropped rows) through a temporary file renamed into place."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        self._rewrite(fieldnames, self._rows()[0])

    def _rows(self) -> tuple[list[dict[str, str]], bool]:
        """The file's complete rows, and whether its last line lacks its newline (a write cut short,
        left out of the rows)."""
        with open(self.metrics_file_path, newline="") as f:
            lines = f.read().splitlines(keepends=True)
        torn = bool(lines) and not lines[-1].endswith("\n")
        return list(csv.DictReader(lines[:-1] if torn else lines)), torn

    def _rewrite(self, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
        def write(f) -> None:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

        write_atomically(self.metrics_file_path, write, text=True)

    def drop_from(self, step: int) -> None:
        """Forget the rows logged at steps >= `step`, on disk and pending."""
        self.metrics = [m for m in self.metrics if m["step"] < step]
        if not os.path.isfile(self.metrics_file_path):
            return
        rows, torn = self._rows()
        keep = [r for r in rows if r.get("step") and int(float(r["step"])) < step]
        if torn or len(keep) < len(rows):
            self._rewrite(self.metrics_keys, keep)


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose `csv/<stage>/metrics.csv` keeps the rows written before a preemption or rerun."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def drop_from(self, step: int) -> None:
        """Forget the rows at steps >= `step` (a run continued from a checkpoint of global step `step`)."""
        self.experiment.drop_from(step)


class ResumedLogs(Callback):
    """When a fit continues from a checkpoint of global step G, the run that wrote it may have logged
    steps >= G before it stopped or was killed; the rerun redoes them. Drop those rows from every
    ResumableCSVLogger first, so each step is in metrics.csv once, with the values of the steps kept.

    Lightning logs training step s (0-based: the (s+1)-th optimizer step) as "step" s, and validation run
    after it with the same step; a checkpoint of global step G covers the steps < G.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        step = int(checkpoint.get("global_step", 0))
        if trainer.state.fn != TrainerFn.FITTING or 0 <= trainer.max_steps <= step:
            return  # nothing will be redone: the rows stay
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.drop_from(step)
