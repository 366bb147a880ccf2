"""`EMAWeights`: an exponential moving average of a stage's trainable weights, used for evaluation.

Training updates the raw weights; after every optimizer step the average moves towards them:

    ema <- d * ema + (1 - d) * raw,   d = min(decay, (1 + n) / (10 + n)),   n = updates so far

(the second term keeps early averages from being dominated by the random initialisation). Validation
and test run on the average (swapped in at their start, swapped back at their end), and every checkpoint's
`state_dict` holds the average, so `train=false`, the next stage (e.g. Genie's dynamics on the tokenizer)
and `play.py` all see it. The raw weights travel in the checkpoint's callback state, and a resumed run
continues training from them with the average intact.

Every checkpoint holds the average after every step taken up to its global step: the
checkpoints written during training, the preemption one and the one at max_steps included, come from
`common.checkpoint.StageCheckpoint`, which Lightning runs after this callback's batch end, so a run
stopped and resumed ends with the uninterrupted run's average.

Only parameters with `requires_grad` are averaged (a frozen tokenizer is left alone); buffers are not.
Checkpoints written with `weights_only=True` carry no callback state and hold the raw weights.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor


class EMAWeights(Callback):
    """Average the trainable weights over steps; evaluate and checkpoint the average.

    decay: the largest per-step decay d (0 < d < 1); 1 / (1 - d) steps is the averaging horizon.
    """

    def __init__(self, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMAWeights: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._ema: dict[str, Tensor] | None = None  # name -> averaged weight
        self._backup: dict[str, Tensor] | None = None  # raw weights while the average is swapped in
        self._loaded_raw: dict[str, Tensor] | None = None  # raw weights from a resumed checkpoint

    @staticmethod
    def _params(pl_module: L.LightningModule) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}

    def _start(self, pl_module: L.LightningModule) -> None:
        """Initialise the average, or take the raw weights back from a resumed checkpoint."""
        params = self._params(pl_module)
        if self._loaded_raw is not None:  # the module holds the checkpoint's state_dict = the average
            missing = sorted(set(params) - set(self._loaded_raw))
            if missing:
                raise KeyError(f"EMAWeights: checkpoint has no raw weight for {missing[0]!r}")
            self._ema = {n: p.detach().clone() for n, p in params.items()}
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(self._loaded_raw[n])
            self._loaded_raw = None
        elif self._ema is None:
            self._ema = {n: p.detach().clone() for n, p in params.items()}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)  # strategies that restore checkpoints after setup arrive here with them

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        assert self._ema is not None
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        params = self._params(pl_module)
        names = list(self._ema)
        torch._foreach_lerp_([self._ema[n] for n in names], [params[n].detach() for n in names], 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def _swap_in(self, pl_module: L.LightningModule) -> None:
        if self._ema is None or self._backup is not None:
            return
        params = self._params(pl_module)
        self._backup = {n: params[n].detach().clone() for n in self._ema}
        for n, w in self._ema.items():
            params[n].copy_(w)

    @torch.no_grad()
    def _swap_out(self, pl_module: L.LightningModule) -> None:
        if self._backup is None:
            return
        params = self._params(pl_module)
        for n, w in self._backup.items():
            params[n].copy_(w)
        self._backup = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._swap_in(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._swap_out(pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self._swap_in(pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        self._swap_out(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self._loaded_raw = state.get("raw")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's state_dict gets the average; its callback state keeps the raw weights."""
        if self._ema is None:
            return
        weights = checkpoint["state_dict"]
        raw = {}
        for n, w in self._ema.items():
            raw[n] = self._backup[n].clone() if self._backup is not None else weights[n].detach().clone()
            weights[n] = w.clone()
        checkpoint["callbacks"][self.state_key]["raw"] = raw
