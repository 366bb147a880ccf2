"""Every Genie experiment composes with both stages and runs train.py with trainer.fast_dev_run=true
(tiny data and batch overrides; the paper-scale model keeps its size)."""

from __future__ import annotations

import pytest

from tests.conftest import compose_train, run_train, tiny_data

EXPERIMENTS = ["genie_coinrun", "genie_coinrun_tiny"]
SMALL_EVAL = [
    "stage_overrides.tokenizer.data.batch_size=1",
    "stage_overrides.dynamics.data.batch_size=1",
    "model.dynamics.context_frames=2",
    "model.dynamics.rollout_horizon=2",
    "model.dynamics.maskgit_steps=2",
    "model.dynamics.rollout_clips=1",
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_genie_experiment_composes(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    assert list(cfg.model) == ["tokenizer", "dynamics"]
    assert cfg.model.dynamics.tokenizer_ckpt is None and cfg.model.dynamics.maskgit_steps == 25
    assert cfg.model.tokenizer.num_codes == 1024


def test_genie_coinrun_is_app_f():
    cfg = compose_train(["experiment=genie_coinrun"])
    tok, dyn, over = cfg.model.tokenizer, cfg.model.dynamics, cfg.stage_overrides
    assert (tok.enc_layers, tok.dec_layers, tok.d_model, tok.num_heads, tok.patch_size) == (8, 8, 512, 8, 4)
    assert (tok.lr, list(tok.betas), tok.weight_decay, tok.warmup_steps) == (3e-4, [0.9, 0.9], 1e-4, 10000)
    assert tok.num_codes == 1024 and tok.code_dim == 32
    assert (dyn.lam_enc_layers, dyn.lam_d_model, dyn.num_latent_actions, dyn.lam_code_dim) == (8, 512, 6, 32)
    assert (dyn.dyn_num_layers, dyn.dyn_d_model, dyn.lr, dyn.min_lr, dyn.warmup_steps) == (
        12,
        512,
        3e-5,
        3e-6,
        5000,
    )
    assert (over.tokenizer.data.batch_size, over.tokenizer.trainer.max_steps) == (48, 300000)
    assert (over.dynamics.data.batch_size, over.dynamics.trainer.max_steps) == (36, 200000)
    assert cfg.data.clip_length == 16 and cfg.data.env.distribution_mode == "hard"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_genie_experiment_fast_dev_run(experiment, data_dir, tmp_path):
    overrides = tiny_data("procgen", data_dir, clip_length=5, batch_size=1)[1:]  # keep the experiment's data
    overrides += [f"data.name={experiment}_test"]  # its policy and env options: a folder of its own
    result = run_train([f"experiment={experiment}", "trainer.fast_dev_run=true", *overrides, *SMALL_EVAL],
                       tmp_path / "run", timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
