"""`StageWandbLogger`: the W&B run of one stage of one job, apart from every other stage and job.

- One run per (job, stage). Lightning's `WandbLogger` joins whatever W&B run is active in the process
  (`wandb.run`), so without `finish()` a run's second stage, or the next job of a sweep that Hydra runs
  in the same process, logs into the first stage's run. common/stages.py finishes each stage's run when
  the stage ends.
- Its config is the stage's: common/stages.py passes the stage's resolved config to `wandb.init`
  (the experiment's `name`, `seed`, the stage's `trainer` and `data`, this stage's module). The
  hyperparameters Lightning logs on its own (the module's and the datamodule's, merged into one dict) go
  under `hparams`: at the top level the datamodule's `name` (the dataset folder) and `max_steps` (the
  episode cap) would replace the experiment's.
- A resumed run logs each step once. A stage resumed from its last checkpoint redoes the steps after
  it, which the stopped process may already have logged (kill -9); a W&B run cannot rewrite its history
  offline. `logged_history` reads what the earlier processes of this run id wrote, with W&B's own reader
  of its transaction logs (`wandb leet inspect --json`), and the logger drops a value whose key already
  has a row at that trainer step. Test metrics (`test/...`) are always logged: rerunning a finished stage
  measures its final weights again. W&B's row index `_step` continues after the last row written before,
  so that `wandb sync` of the pieces of a resumed offline run keeps every row (it starts at 0 otherwise).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import (
    _convert_json_serializable,
    _convert_params,
    _sanitize_callable_params,
)
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

ALWAYS_LOGGED = ("test/",)  # key prefixes logged again on a rerun: a new measurement of the final weights
STEP_KEY = "trainer/global_step"  # the x-axis Lightning's WandbLogger adds to every row


@dataclass
class LoggedHistory:
    """What earlier processes logged to one W&B run id.

    last_row: the largest W&B row index `_step` (-1: none). steps: key -> the largest trainer step
    (`trainer/global_step`) of a row holding that key.
    """

    last_row: int = -1
    steps: dict[str, int] = field(default_factory=dict)


def run_folders(wandb_dir: Path, run_id: str) -> list[Path]:
    """The folders W&B wrote for `run_id` under `wandb_dir` (offline-run-*-ID, run-*-ID), oldest first."""
    return sorted(wandb_dir.glob(f"*run-*-{run_id}"), key=lambda p: p.name.split("run-", 1)[1])


def read_history(log: Path) -> list[dict[str, Any]]:
    """The history rows of one .wandb transaction log, read by W&B's CLI (`wandb leet inspect --json`).

    Raises RuntimeError (one line) when the CLI cannot read it (a wandb without `leet inspect`)."""
    import json

    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"`wandb leet inspect` cannot read {log}: {last}")
    rows = []
    for line in out.stdout.splitlines():
        if '"type":"history"' in line:
            rows.append(json.loads(line)["history"]["item"])
    return rows


def logged_history(wandb_dir: Path, run_id: str) -> LoggedHistory:
    """What the transaction logs of `run_id` under `wandb_dir` hold (empty when there are none).

    When W&B's reader fails, says so in one line on stderr and returns an empty history: the run goes on,
    and the steps redone after the last checkpoint may then appear twice in W&B."""
    logged = LoggedHistory()
    for folder in run_folders(wandb_dir, run_id):
        for log in folder.glob("*.wandb"):
            try:
                rows = read_history(log)
            except (OSError, RuntimeError) as e:
                print(f"warning: {e}; W&B may show the steps redone after resuming twice", file=sys.stderr)
                return LoggedHistory()
            for row in rows:
                logged.last_row = max(logged.last_row, int(row.get("_step", -1)))
                if STEP_KEY not in row:
                    continue
                step = int(row[STEP_KEY])
                for key in row:
                    if not key.startswith("_") and key != STEP_KEY:
                        logged.steps[key] = max(logged.steps.get(key, -1), step)
    return logged


class StageWandbLogger(WandbLogger):
    """WandbLogger for one stage of one job (see the module docstring).

    logged: what earlier processes logged to this run id (`logged_history`); the other arguments are
    WandbLogger's (`config=`, `job_type=`, `group=`, ... go to `wandb.init`).
    """

    def __init__(self, *args: Any, logged: LoggedHistory | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._logged = logged or LoggedHistory()

    @property
    def experiment(self) -> Any:
        created = self._experiment is None
        run = WandbLogger.experiment.fget(self)  # rank 0: the W&B run (opened now if needed); else a dummy
        if created and rank_zero_only.rank == 0 and self._logged.last_row >= getattr(run, "step", 0):
            run.log({}, step=self._logged.last_row + 1, commit=False)  # rows go on after the earlier ones
        return run

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Lightning's own call (the module's and datamodule's hyperparameters): logged under `hparams`."""
        params = _convert_json_serializable(_sanitize_callable_params(_convert_params(params)))
        self.experiment.config.update({"hparams": params}, allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if step is not None and self._logged.steps:
            join = self.LOGGER_JOIN_CHAR
            metrics = {
                k: v
                for k, v in metrics.items()
                if k.startswith(ALWAYS_LOGGED)
                or step > self._logged.steps.get(f"{self._prefix}{join}{k}" if self._prefix else k, -1)
            }
            if not metrics:
                return
        super().log_metrics(metrics, step)

    @rank_zero_only
    def log_summary(self, values: Mapping[str, float]) -> None:
        """Set final values in the run's summary (what a W&B table of runs shows), without a history row:
        the stage's training clock and derived headline metrics, under metrics.json's names. Opens no run:
        a stage that logged nothing (fast_dev_run, which Lightning runs without loggers) gets none."""
        if self._experiment is not None:
            self._experiment.summary.update(dict(values))

    def finish(self, exit_code: int = 0) -> None:
        """End this stage's W&B run (global rank 0, when one was opened): the next stage or job opens its own."""
        if self._experiment is not None and rank_zero_only.rank == 0:
            self._experiment.finish(exit_code=exit_code)
        self._experiment = None
