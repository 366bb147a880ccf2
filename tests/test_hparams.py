"""common/hparams.py: every family's hyperparameters are plain values, whatever containers they were given.

A module built from a config without Hydra's `_convert_` (a notebook, a script composing its own config)
receives OmegaConf ListConfig / DictConfig arguments; Lightning stores `dict(module.hparams)` in the
checkpoint, and `torch.load(weights_only=True)` refuses OmegaConf objects.
"""

from __future__ import annotations

import io

import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from common.hparams import plain

C = OmegaConf.create  # a list or dict as Hydra hands it to a constructor


def test_plain_turns_containers_into_lists_and_dicts():
    cfg = C({"a": [1, (2, 3)], "b": {"c": "${a}"}, "d": None})
    out = plain({"cfg": cfg, "t": (0.9, 0.99), 3: "x"})
    assert out == {"cfg": {"a": [1, [2, 3]], "b": {"c": [1, [2, 3]]}, "d": None}, "t": [0.9, 0.99], "3": "x"}
    assert type(out["cfg"]["a"]) is list and type(out["t"]) is list and type(out["cfg"]) is dict
    assert plain(2.5) == 2.5 and plain("s") == "s" and plain(None) is None


def no_omegaconf(value) -> bool:
    if isinstance(value, (DictConfig, ListConfig)):
        return False
    if isinstance(value, dict):
        return all(no_omegaconf(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(no_omegaconf(v) for v in value)
    return True


def genie_tokenizer():
    from genie.module import GenieTokenizerModule

    return GenieTokenizerModule(
        frame_size=16, patch_size=4, d_model=16, num_heads=2, enc_layers=1, dec_layers=1, num_codes=16,
        code_dim=3, quantizer="fsq", fsq_levels=C([4, 4, 4]), betas=C([0.9, 0.9]),
    )  # fmt: skip


def genie_dynamics():
    from genie.module import TOKENIZER_KEYS, GenieDynamicsModule

    tok = {k: genie_tokenizer().hparams[k] for k in TOKENIZER_KEYS}
    return GenieDynamicsModule(
        tokenizer_hparams=C(tok), frame_size=16, max_frames=4, num_latent_actions=3, lam_patch_size=8,
        lam_d_model=16, lam_num_heads=2, lam_enc_layers=1, lam_dec_layers=1, lam_code_dim=4, dyn_d_model=16,
        dyn_num_heads=2, dyn_num_layers=1, betas=C([0.9, 0.9]),
    )  # fmt: skip


def diamond():
    from diamond.module import DiamondModule

    return DiamondModule(
        num_actions=3, frame_size=16, cond_channels=16, depths=C([1, 1]), channels=C([8, 8]),
        attn_depths=C([False, False]), rew_lstm_dim=8, rew_cond_channels=8, rew_depths=C([1, 1]),
        rew_channels=C([8, 8]), rew_attn_depths=C([False, False]), betas=C([0.9, 0.999]),
        actor_critic=C({"lstm_dim": 8, "channels": [4, 4], "down": [1, 1]}),
    )  # fmt: skip


VAE = dict(frame_size=16, latent_dim=4, patch_size=4, enc_dim=16, enc_depth=1, enc_heads=2, dec_dim=16,
           dec_depth=1, dec_heads=2, mlp_ratio=2.0)  # fmt: skip


def oasis_vae():
    from oasis.module import OasisVAEModule

    return OasisVAEModule(**VAE, betas=C([0.9, 0.99]))


def oasis_dit():
    from oasis.module import OasisDiTModule, OasisVAEModule

    return OasisDiTModule(
        num_actions=3, vae_hparams=C(OasisVAEModule.vae_kwargs(VAE)), scaling_factor=1.0, hidden_size=16,
        depth=1, num_heads=2, max_frames=4, betas=C([0.9, 0.99]), log_horizons=C([1, 2]),
    )  # fmt: skip


@pytest.mark.parametrize("build", [genie_tokenizer, genie_dynamics, diamond, oasis_vae, oasis_dit])
def test_checkpoint_hyperparameters_load_with_weights_only(build):
    torch.manual_seed(0)
    module = build()
    saved = dict(module.hparams)  # what Lightning writes under "hyper_parameters"
    assert no_omegaconf(saved), {k: type(v).__name__ for k, v in saved.items() if not no_omegaconf(v)}
    buf = io.BytesIO()
    torch.save({"hyper_parameters": saved}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["hyper_parameters"]
    assert loaded == saved
    rebuilt = type(module)(**loaded)  # the checkpoint's arguments build the same module
    assert dict(rebuilt.hparams) == saved
