"""train.py init_from=: a fresh stage starts from a checkpoint's weights (fine-tuning); a resumed one does not.

run_stage runs as train.py calls it, with Trainer.fit replaced by a probe that records the module's state
and the checkpoint it would resume from, then stops: no data is collected, nothing trains. The
pretrained:NAME form goes through common.hub and a loopback fake Hub serving the shared DIAMOND fixture
(tests/test_hub.py `serving_fixtures`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import lightning as L
import pytest
import torch

from common.checkpoint import META_KEY, read_checkpoint
from common.stages import run_stage
from tests.conftest import FIXTURES, ROOT, compose_train, tiny_data
from tests.test_hub import serving_fixtures

STAGE = "world_model"
# the DIAMOND fixture's network sizes (fixtures README), as diamond_breakout overrides
FIXTURE_SIZES = ["cond_channels", "depths", "channels", "attn_depths", "rew_lstm_dim", "rew_cond_channels",
                 "rew_depths", "rew_channels", "rew_attn_depths"]  # fmt: skip


class Stop(Exception):
    """Raised by the fit probe: the test has what it needs."""


@pytest.fixture
def fit_probe(monkeypatch):
    seen = {}

    def fit(self, model, datamodule=None, ckpt_path=None, **kwargs):
        seen["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        seen["module"], seen["ckpt_path"] = model, ckpt_path
        raise Stop

    monkeypatch.setattr(L.Trainer, "fit", fit)
    return seen


def config(tmp_path, *overrides):
    cfg = compose_train(
        ["experiment=diamond_breakout_tiny", "logger=csv", "trainer=cpu", "callbacks.ema=null"]
        + tiny_data("atari", tmp_path / "data")
        + list(overrides)
    )
    return cfg


def module_checkpoint(cfg, path, seed: int, family="diamond", stage=STAGE, step=0):
    """A checkpoint of cfg's module with weights from `seed`, written as build_modules/Lightning do."""
    import hydra

    torch.manual_seed(seed)
    module = hydra.utils.instantiate(cfg.model[STAGE], _convert_="all")
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "global_step": step,
        META_KEY: {"family": family, "stage": stage},
    }
    torch.save(ckpt, path)
    return ckpt["state_dict"]


def assert_same_state(state, source):
    assert state.keys() == source.keys()
    for k in state:
        assert torch.equal(state[k], source[k]), k


def test_init_from_path_loads_the_weights_before_the_first_step(tmp_path, fit_probe):
    cfg = config(tmp_path)
    source = module_checkpoint(cfg, tmp_path / "src.ckpt", seed=1)
    cfg = config(tmp_path, f"init_from={tmp_path / 'src.ckpt'}")
    with pytest.raises(Stop):
        run_stage(cfg, STAGE, tmp_path / "run")
    assert fit_probe["ckpt_path"] is None
    assert_same_state(fit_probe["state"], source)
    fresh = module_checkpoint(cfg, tmp_path / "other.ckpt", seed=2)  # a random init differs from it
    assert not torch.equal(
        fresh["denoiser.inner_model.conv_in.weight"], source["denoiser.inner_model.conv_in.weight"]
    )


def test_a_resumed_stage_keeps_resuming_from_its_last_ckpt(tmp_path, fit_probe):
    cfg = config(tmp_path)
    source = module_checkpoint(cfg, tmp_path / "src.ckpt", seed=1)
    last = tmp_path / "run" / "checkpoints" / STAGE / "last.ckpt"
    last.parent.mkdir(parents=True)
    module_checkpoint(cfg, last, seed=3, step=5)
    cfg = config(tmp_path, f"init_from={tmp_path / 'src.ckpt'}")
    with pytest.raises(Stop):
        run_stage(cfg, STAGE, tmp_path / "run")
    assert fit_probe["ckpt_path"] == str(last)  # Lightning restores last.ckpt: init_from is not applied
    key = "denoiser.inner_model.conv_in.weight"
    assert not torch.equal(fit_probe["state"][key], source[key])


def one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


def test_shape_family_and_stage_mismatches_are_one_line(tmp_path, fit_probe):
    small = config(tmp_path, "model.world_model.channels=[8,8,8,8]")
    source = module_checkpoint(small, tmp_path / "small.ckpt", seed=1)
    cfg = config(tmp_path, f"init_from={tmp_path / 'small.ckpt'}")
    with pytest.raises(ValueError) as e:
        run_stage(cfg, STAGE, tmp_path / "run")
    msg = one_line(e)
    match = re.match(rf"init_from={re.escape(str(tmp_path / 'small.ckpt'))}: tensor (\S+) is \((.*)\) there but \((.*)\) in this model", msg)  # fmt: skip
    assert match, msg
    assert list(source[match.group(1)].shape) == [int(n) for n in match.group(2).split(", ")]
    assert msg.endswith(
        "; its hyperparameters differ: channels=[8, 8, 8, 8] there, [16, 32, 32, 64] here: set those that shape "
        "the networks as it has (e.g. model.world_model.channels=[8,8,8,8])"
    )
    assert "state" not in fit_probe  # nothing trained
    module_checkpoint(small, tmp_path / "oasis.ckpt", seed=1, family="oasis", stage="dit")
    with pytest.raises(ValueError) as e:
        run_stage(config(tmp_path, f"init_from={tmp_path / 'oasis.ckpt'}"), STAGE, tmp_path / "run")
    assert one_line(e) == (
        f"init_from={tmp_path / 'oasis.ckpt'}: a checkpoint of oasis/dit, this model is diamond "
        "(stages: world_model): give a diamond checkpoint"
    )
    module_checkpoint(small, tmp_path / "stage.ckpt", seed=1, stage="tokenizer")
    with pytest.raises(ValueError) as e:
        run_stage(config(tmp_path, f"init_from={tmp_path / 'stage.ckpt'}"), STAGE, tmp_path / "run")
    assert (
        "a checkpoint of diamond/tokenizer, a stage this run does not train (stages: world_model)"
        in one_line(e)
    )
    with pytest.raises(FileNotFoundError, match="init_from=/nonexistent.ckpt: checkpoint not found"):
        run_stage(config(tmp_path, "init_from=/nonexistent.ckpt"), STAGE, tmp_path / "run")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixture folder {FIXTURES} is absent")
def test_init_from_pretrained_diamond_carries_its_agent(tmp_path, monkeypatch, fit_probe):
    from common.hub import resolve

    with serving_fixtures(tmp_path, monkeypatch):
        converted = read_checkpoint(resolve("diamond/Breakout", quiet=True))
        hp = converted["hyper_parameters"]
        sizes = [f"model.world_model.{k}={json.dumps(hp[k])}" for k in FIXTURE_SIZES]
        cfg = config(tmp_path, "init_from=pretrained:diamond/Breakout", *sizes)
        with pytest.raises(Stop):
            run_stage(cfg, STAGE, tmp_path / "run")
        assert_same_state(fit_probe["state"], converted["state_dict"])  # the agent's weights included
        module = fit_probe["module"]
        assert module.hparams.actor_critic == hp["actor_critic"]
        assert not any(p.requires_grad for p in module.actor_critic.parameters())  # frozen: not fine-tuned
        assert module.world_model().policy is not None  # the fine-tuned checkpoint still plays with `m`

        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        cmd = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={tmp_path / 'cli'}", "print_config=false",
               "experiment=diamond_breakout_tiny", "logger=csv", "init_from=pretrained:diamond/Breakout",
               *tiny_data("atari", tmp_path / "data")]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [
        line for line in proc.stderr.splitlines() if "error" in line.lower()
    ]  # Lightning says "Seed set"
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr
    assert errors[0].startswith("error: init_from=pretrained:diamond/Breakout: tensor denoiser."), proc.stderr
    assert "cond_channels=32 there, 64 here" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing was collected
