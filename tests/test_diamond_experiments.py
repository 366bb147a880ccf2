"""Every DIAMOND experiment composes, and runs train.py with trainer.fast_dev_run on a tiny Atari dataset."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import compose_train, run_train, tiny_data

EXPERIMENTS = ["diamond_breakout", "diamond_breakout_tiny"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name):
    cfg = compose_train([f"experiment={name}"])
    assert cfg.name == name
    assert list(cfg.model.keys()) == ["world_model"]
    wm = cfg.model.world_model
    assert wm._target_ == "diamond.module.DiamondModule"
    assert cfg.data.source == "atari" and cfg.data.game == "Breakout" and cfg.data.frame_size == 64
    assert wm.num_actions == cfg.data.num_actions == 4
    assert cfg.data.eval_clip_length >= wm.context_length + wm.rollout_horizon


def test_published_numbers():
    cfg = compose_train(["experiment=diamond_breakout"])
    wm = cfg.model.world_model
    assert list(wm.channels) == [64, 64, 64, 64] and list(wm.depths) == [2, 2, 2, 2]
    assert wm.cond_channels == 256 and not any(wm.attn_depths) and wm.context_length == 4
    assert (wm.sigma_data, wm.sigma_offset_noise, wm.train_sigma_loc, wm.train_sigma_scale) == (
        0.5,
        0.3,
        -0.4,
        1.2,
    )
    assert (wm.num_steps_denoising, wm.sampler_sigma_min, wm.sampler_sigma_max, wm.sampler_rho) == (
        3,
        2e-3,
        5.0,
        7,
    )
    assert (wm.lr, wm.warmup_steps, cfg.data.batch_size) == (1e-4, 100, 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_fast_dev_run(name, data_dir, tmp_path):
    overrides = [f"experiment={name}", "trainer.fast_dev_run=true"] + tiny_data(
        "atari", data_dir, clip_length=12
    )
    overrides += ["data.game=Breakout", "data.eval_clip_length=12"]
    out = run_train(overrides, tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "world_model" / "last.ckpt", weights_only=True)
    assert ckpt["worldplay"] == {"family": "diamond", "stage": "world_model"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test/psnr_next", "test/psnr_copy_last", "test/rollout_psnr_k8", "test/rollout_copy_last_k8"):
        assert key in metrics, sorted(metrics)
    for event in ("reward", "end"):  # F1 is undefined (absent) on a split with no events
        assert f"test/{event}_events" in metrics, sorted(metrics)
        assert (f"test/{event}_f1" in metrics) == (metrics[f"test/{event}_events"] > 0), sorted(metrics)
