"""`StageClock`: what training one stage cost, kept across resumes, for the report's compute comparison.

Measured from `on_fit_start` (after data collection and setup) to `on_fit_end`, so neither collecting the
dataset nor testing counts:

- `time/<stage>_wall_s`: wall-clock seconds (`time.perf_counter`);
- `time/<stage>_cpu_s`: CPU seconds of the training process, user + system, its threads
  (`time.process_time`) and its waited-for child processes (`os.times`), times the number of processes
  under DDP (global rank 0 measures its own);
- `time/<stage>_gpu_s`: wall seconds × devices, only when training ran on CUDA;
- `time/<stage>_steps`: optimizer steps (`trainer.global_step`) at the end of fit;
- `params/<stage>`, `params/<stage>_trainable`: parameters of the stage's module (frozen earlier stages it
  holds included) and those that train;
- `play/ms_per_frame`: at the end of testing a stage that offers a world model (`world_model()`), the median
  ms of one generated frame at batch 1 on one thread, as `play.py` runs by default (common.bench
  `time_world_model`: 2 warm-up frames, then 10 timed, random actions), so a run records what playing it
  costs beside what training it did. Timed on whatever else the machine runs: the report shows it as is.

The seconds so far ride in every checkpoint (the callback's state), and a resumed fit adds to them: a
stage stopped and resumed reports the time it took to reach its final weights plus the steps redone
after the last checkpoint, not only the last piece.
"""

from __future__ import annotations

import os
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from common.world_model import PlaysWorldModel


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its finished, waited-for children."""
    t = os.times()  # children only: its own user/system counts are in clock ticks (10 ms)
    return time.process_time() + t.children_user + t.children_system


class StageClock(Callback):
    """Wall / CPU / GPU seconds, steps and parameters of one stage's fit (see the module docstring)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.before = {"wall_s": 0.0, "cpu_s": 0.0}  # seconds recorded by the checkpoint resumed from
        self._start: dict[str, float] | None = None
        self._end: dict[str, Any] | None = None
        self.processes = 1
        self.gpus = 0
        self.play_ms: float | None = None

    @property
    def state_key(self) -> str:
        return f"StageClock[{self.stage}]"

    def _elapsed(self) -> dict[str, float]:
        if self._start is None:
            return dict(self.before)
        return {
            "wall_s": self.before["wall_s"] + time.perf_counter() - self._start["wall"],
            "cpu_s": self.before["cpu_s"] + (cpu_seconds() - self._start["cpu"]) * self.processes,
        }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.processes = trainer.world_size
        accelerator = type(trainer.accelerator).__name__
        self.gpus = trainer.num_devices * trainer.num_nodes if accelerator == "CUDAAccelerator" else 0
        self._end = None
        self._start = {"wall": time.perf_counter(), "cpu": cpu_seconds()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = list(pl_module.parameters())
        self._end = {
            **self._elapsed(),
            "steps": trainer.global_step,
            "params": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
        }
        self._start = None

    def state_dict(self) -> dict[str, float]:
        return self._elapsed() if self._end is None else {k: self._end[k] for k in ("wall_s", "cpu_s")}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.before = {k: float(state_dict.get(k, 0.0)) for k in ("wall_s", "cpu_s")}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and isinstance(pl_module, PlaysWorldModel) and not trainer.fast_dev_run:
            self.play_ms = play_ms_per_frame(pl_module)

    def metrics(self) -> dict[str, float]:
        """The metrics of the module docstring (the time/ and params/ ones once fit ended)."""
        play = {"play/ms_per_frame": self.play_ms} if self.play_ms is not None else {}
        if self._end is None:
            return play
        s, e = self.stage, self._end
        out = {
            **play,
            f"time/{s}_wall_s": e["wall_s"],
            f"time/{s}_cpu_s": e["cpu_s"],
            f"time/{s}_steps": float(e["steps"]),
            f"params/{s}": float(e["params"]),
            f"params/{s}_trainable": float(e["trainable"]),
        }
        if self.gpus:
            out[f"time/{s}_gpu_s"] = e["wall_s"] * self.gpus
        return out


def play_ms_per_frame(module: L.LightningModule, frames: int = 10, warmup: int = 2) -> float:
    """Median ms of one frame of `module.world_model()` at batch 1 on one torch thread (play's default);
    the module's train/eval mode and the thread count are restored."""
    import statistics

    import torch

    from common.bench import time_world_model

    was_training, threads = module.training, torch.get_num_threads()
    module.eval()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            world_model = module.world_model()
            times = time_world_model(world_model, frames, warmup, context=world_model.context_length)
    finally:
        torch.set_num_threads(threads)
        module.train(was_training)
    return statistics.median(times)
