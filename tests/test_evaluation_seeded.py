"""Evaluation is a function of the weights and the batch: two evaluations of one checkpoint give identical
metrics for every family, whatever state the global RNG is in (common/evaluation.py)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from tests.tiny_families import Clips, diamond, genie, oasis


def evaluate(module, rng_state: int) -> dict[str, float]:
    torch.manual_seed(rng_state)  # where a run that trained first, or another process, leaves the RNG
    trainer = pl.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        accelerator="cpu",
    )  # fmt: skip
    return trainer.test(module, DataLoader(Clips(), batch_size=2), verbose=False)[0]


@pytest.mark.parametrize("make", [diamond, oasis, genie], ids=["diamond", "oasis", "genie"])
def test_two_evaluations_of_one_checkpoint_agree(make):
    torch.manual_seed(0)
    module = make()
    first, second = evaluate(module, 1), evaluate(module, 2)
    assert any(k.startswith("test/rollout_psnr_k") for k in first)
    assert first == second
