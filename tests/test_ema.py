"""EMAWeights: the average's values, evaluation and checkpoints on the average, exact resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.checkpoint import StageCheckpoint
from common.ema import EMAWeights
from common.resume import Preemption

DECAY = 0.5


class Linear(pl.LightningModule):
    """y = Wx + b on fixed data with plain SGD; a frozen layer that must not be averaged."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(3, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)
        self.seen_in_val: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.frozen(self.net(x)) - y) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        self.seen_in_val.append(self.net.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)  # one batch per epoch: resume is exact


class Record(pl.Callback):
    """The raw weight after every optimizer step."""

    def __init__(self):
        self.raw: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.raw.append(pl_module.net.weight.detach().clone())


def trainer(
    steps: int, callbacks: list, root: Path, val_every: int = 0, checkpointing: bool = False
) -> pl.Trainer:
    """One batch per epoch, so steps = epochs; validation every `val_every` epochs (0: none)."""
    return pl.Trainer(
        max_steps=steps,
        callbacks=callbacks,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=checkpointing,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1 if val_every else 0,
        check_val_every_n_epoch=val_every or 1,
        accelerator="cpu",
    )


def expected_average(init: torch.Tensor, raw: list[torch.Tensor]) -> torch.Tensor:
    ema = init.clone()
    for n, w in enumerate(raw):
        d = min(DECAY, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * w
    return ema


def test_decay_out_of_range_is_refused():
    with pytest.raises(ValueError, match="decay must be in"):
        EMAWeights(decay=1.0)


def test_average_follows_the_formula_and_training_keeps_raw_weights(tmp_path):
    module, ema, rec = Linear(), EMAWeights(decay=DECAY), Record()
    init = module.net.weight.detach().clone()
    trainer(4, [ema, rec], tmp_path).fit(module, loader(), loader())
    assert len(rec.raw) == 4 and not torch.equal(rec.raw[0], rec.raw[-1])
    torch.testing.assert_close(ema._ema["net.weight"], expected_average(init, rec.raw), rtol=0, atol=1e-6)
    assert torch.equal(module.net.weight, rec.raw[-1])  # training ends on the raw weights
    assert "frozen.weight" not in ema._ema


def test_validation_runs_on_the_average_then_training_goes_on_raw(tmp_path):
    module, ema, rec = Linear(), EMAWeights(decay=DECAY), Record()
    init = module.net.weight.detach().clone()
    trainer(4, [ema, rec], tmp_path, val_every=2).fit(module, loader(), loader())
    assert len(module.seen_in_val) == 2
    torch.testing.assert_close(module.seen_in_val[0], expected_average(init, rec.raw[:2]), rtol=0, atol=1e-6)
    assert not torch.equal(module.seen_in_val[0], rec.raw[1])
    assert torch.equal(module.net.weight, rec.raw[-1])


def test_checkpoint_holds_the_average_and_resume_continues_exactly(tmp_path):
    full, ema_full = Linear(), EMAWeights(decay=DECAY)
    trainer(6, [ema_full], tmp_path / "a").fit(full, loader(), loader())

    first, ema_first = Linear(), EMAWeights(decay=DECAY)
    t = trainer(3, [ema_first], tmp_path / "b")
    t.fit(first, loader(), loader())
    path = tmp_path / "b" / "last.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert torch.equal(ckpt["state_dict"]["net.weight"], ema_first._ema["net.weight"])
    assert torch.equal(ckpt["callbacks"]["EMAWeights"]["raw"]["net.weight"], first.net.weight.detach())
    assert torch.equal(ckpt["state_dict"]["frozen.weight"], first.frozen.weight)

    resumed, ema_resumed = Linear(), EMAWeights(decay=DECAY)
    trainer(6, [ema_resumed], tmp_path / "b").fit(resumed, loader(), loader(), ckpt_path=str(path))
    assert ema_resumed.updates == 6
    torch.testing.assert_close(resumed.net.weight, full.net.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(ema_resumed._ema["net.weight"], ema_full._ema["net.weight"], rtol=0, atol=1e-6)


class SigtermAt(pl.Callback):
    """SIGTERM to this process at the end of training step `step` (a preemption)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_preemption_checkpoint_holds_the_average_of_every_step_taken(tmp_path):
    """The preemption save comes after the average counted the step, whatever the callback order:
    SIGTERM at step 3 and a resume to 6 end with the uninterrupted run's average (issue #17)."""
    full, ema_full = Linear(), EMAWeights(decay=DECAY)
    trainer(6, [ema_full], tmp_path / "full").fit(full, loader(), loader())

    for order in ("ema first", "ema last"):  # conf/experiment puts callbacks.ema after callbacks.preemption
        folder = tmp_path / order.replace(" ", "_")
        ema, stop = EMAWeights(decay=DECAY), [Preemption(), StageCheckpoint(dirpath=folder, save_last=True)]
        callbacks = [ema, *stop] if order == "ema first" else [*stop, ema]
        first = trainer(6, [SigtermAt(3), *callbacks], folder, checkpointing=True)
        first.fit(Linear(), loader(), loader())
        ckpt = torch.load(folder / "last.ckpt", weights_only=True)
        assert ckpt["global_step"] == 3 and ckpt["callbacks"]["EMAWeights"]["updates"] == 3, order
        assert torch.equal(ckpt["state_dict"]["net.weight"], ema._ema["net.weight"]), order

        resumed, ema_resumed = Linear(), EMAWeights(decay=DECAY)
        stop = [Preemption(), StageCheckpoint(dirpath=folder, save_last=True)]
        trainer(6, [ema_resumed, *stop], folder, checkpointing=True).fit(
            resumed, loader(), loader(), ckpt_path=str(folder / "last.ckpt")
        )
        assert ema_resumed.updates == 6, order
        assert torch.equal(resumed.net.weight, full.net.weight), order
        assert torch.equal(ema_resumed._ema["net.weight"], ema_full._ema["net.weight"]), order
