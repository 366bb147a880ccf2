"""Every config file composes (and resolves): each group option of train.yaml, each experiment, the
entry points' own configs. Experiments' fast_dev_run tests live with their families."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_train

CONF = ROOT / "conf"
GROUPS = ["data", "trainer", "logger", "callbacks", "paths"]


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


@pytest.mark.parametrize("name", [p.stem for p in CONF.glob("*.yaml")])
def test_entry_point_configs_compose(name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(name)
    assert cfg is not None


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
