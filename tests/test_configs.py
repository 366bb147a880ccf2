"""Every config file composes (and resolves): each group option of train.yaml, each experiment, the
entry points' own configs. Experiments' fast_dev_run tests live with their families."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_train

CONF = ROOT / "conf"
GROUPS = ["data", "trainer", "logger", "callbacks", "paths"]

# What the experiments promise (README "Experiments", conf/model/*.yaml): data source and game, the stages
# in the order train.py runs them, and the layout sizes of the paper-scale configs (Genie App. F CoinRun,
# DIAMOND's Atari 100k networks, open-oasis' DiT-S/2 and ViT-L VAE widths) and of the tiny ones. A renamed
# experiment, a lost stage or a changed size fails here.
PROMISED = {
    "genie_coinrun": ("procgen", "coinrun", ["tokenizer", "dynamics"], 15),
    "diamond_breakout": ("atari", "Breakout", ["world_model"], 4),
    "oasis_crafter": ("crafter", None, ["vae", "dit"], 17),
}
SIZES = {
    "genie_coinrun": {
        "model.tokenizer.patch_size": 4, "model.tokenizer.d_model": 512, "model.tokenizer.enc_layers": 8,
        "model.tokenizer.dec_layers": 8, "model.tokenizer.num_codes": 1024, "model.tokenizer.code_dim": 32,
        "model.dynamics.num_latent_actions": 6, "model.dynamics.lam_d_model": 512,
        "model.dynamics.lam_enc_layers": 8, "model.dynamics.dyn_d_model": 512, "model.dynamics.dyn_num_layers": 12,
        "model.dynamics.maskgit_steps": 25, "data.clip_length": 16, "data.frame_size": 64,
    },
    "genie_coinrun_tiny": {
        "model.tokenizer.d_model": 64, "model.tokenizer.enc_layers": 2, "model.dynamics.dyn_d_model": 128,
        "model.dynamics.dyn_num_layers": 3, "data.clip_length": 6,
    },
    "diamond_breakout": {
        "model.world_model.context_length": 4, "model.world_model.channels": [64, 64, 64, 64],
        "model.world_model.depths": [2, 2, 2, 2], "model.world_model.cond_channels": 256,
        "model.world_model.num_steps_denoising": 3, "model.world_model.rew_lstm_dim": 512, "data.frame_size": 64,
    },
    "diamond_breakout_tiny": {
        "model.world_model.context_length": 4, "model.world_model.channels": [16, 32, 32, 64],
        "model.world_model.depths": [1, 1, 1, 1], "model.world_model.num_steps_denoising": 3,
    },
    "oasis_crafter": {
        "model.vae.patch_size": 4, "model.vae.enc_dim": 1024, "model.vae.enc_depth": 6, "model.vae.dec_depth": 12,
        "model.vae.enc_heads": 16, "model.vae.latent_dim": 16, "model.dit.patch_size": 2,
        "model.dit.hidden_size": 1024, "model.dit.depth": 16, "model.dit.num_heads": 16, "model.dit.max_frames": 32,
        "model.dit.ddim_steps": 10, "model.dit.stabilization_level": 15, "data.clip_length": 32,
    },
    "oasis_crafter_tiny": {
        "model.vae.patch_size": 8, "model.vae.enc_dim": 64, "model.dit.hidden_size": 128, "model.dit.depth": 4,
        "model.dit.num_heads": 4, "model.dit.max_frames": 16, "model.dit.ddim_steps": 10, "data.clip_length": 16,
    },
}  # fmt: skip


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_group_option_composes(group, option):
    cfg = compose_train([f"{group}={option}"])
    OmegaConf.to_container(cfg[group], resolve=True)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_experiment_composes_and_resolves(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    assert cfg.name == experiment, "an experiment names itself (W&B group, run folder)"
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["model"], "an experiment chooses a model"
    for stage, module in container["model"].items():
        assert "_target_" in module, f"model.{stage} has no _target_"
    for stage in container.get("stage_overrides") or {}:
        assert stage in container["model"], f"stage_overrides.{stage} names no stage"


@pytest.mark.parametrize("experiment", [e for e in _options("experiment") if e.endswith("_tiny")])
def test_tiny_experiment_inherits_its_full_one(experiment):
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert experiment.removesuffix("_tiny") in text, "a _tiny experiment inherits the full one"


@pytest.mark.parametrize("experiment", sorted(SIZES))
def test_experiment_keeps_what_it_promises(experiment):
    assert experiment in _options("experiment"), (
        f"conf/experiment/{experiment}.yaml is gone (README names it)"
    )
    cfg = compose_train([f"experiment={experiment}"])
    source, game, stages, num_actions = PROMISED[experiment.removesuffix("_tiny")]
    assert (cfg.data.source, list(cfg.model.keys()), cfg.data.num_actions) == (source, stages, num_actions)
    if game is not None:
        assert cfg.data.game == game
    got = {
        key: OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(cfg, key)}))["v"]
        for key in SIZES[experiment]
    }
    assert got == SIZES[experiment]


@pytest.mark.parametrize("experiment", sorted(e for e in SIZES if e.endswith("_tiny")))
def test_tiny_experiment_only_shrinks(experiment):
    """Every width, depth and length a _tiny experiment sets is at most its full experiment's (a patch may be
    coarser), on the same stages."""
    tiny, full = compose_train([f"experiment={experiment}"]), compose_train([f"experiment={experiment[:-5]}"])
    assert list(tiny.model.keys()) == list(full.model.keys()) and tiny.data.source == full.data.source
    for key in (k for k in SIZES[experiment] if not k.endswith("patch_size")):
        small, big = OmegaConf.select(tiny, key), OmegaConf.select(full, key)
        small, big = (list(small), list(big)) if not isinstance(small, int) else ([small], [big])
        assert all(a <= b for a, b in zip(small, big)), f"{experiment}: {key} {small} > {big}"


@pytest.mark.parametrize("name", [p.stem for p in CONF.glob("*.yaml")])
def test_entry_point_configs_compose(name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(name)
    OmegaConf.to_container(cfg, resolve=name != "train")  # train.yaml resolves only with an experiment
    assert set(cfg) >= {"train": {"data", "trainer", "seed", "paths"}, "play": {"checkpoint"}}.get(
        name, set()
    )


def test_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLDPLAY_DATA", str(tmp_path))
    cfg = compose_train([])
    assert Path(cfg.paths.data_dir) == tmp_path
    assert Path(cfg.data.root) == tmp_path


def test_config_typo_is_named():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="trainer.max_stepz"):
        compose_train(["trainer.max_stepz=3"])


def test_command_line_beats_stage_overrides():
    from common.stages import stage_config

    cfg = OmegaConf.create(
        {
            "model": {"a": {}, "b": {}},
            "trainer": {"max_steps": 2, "gradient_clip_val": 1.0},
            "stage_overrides": {"a": {"trainer": {"max_steps": 800, "gradient_clip_val": 0.5}}},
        }
    )
    assert stage_config(cfg, "a", []).trainer == {"max_steps": 800, "gradient_clip_val": 0.5}
    assert stage_config(cfg, "a", ["trainer.max_steps"]).trainer == {"max_steps": 2, "gradient_clip_val": 0.5}
    assert stage_config(cfg, "b", ["trainer.max_steps"]).trainer.max_steps == 2
