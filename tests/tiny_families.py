"""Tiny modules of the three families' playing stages, and clips for them (tests build them in seconds)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

T, S, A = 8, 16, 3


class Clips(Dataset):
    def __init__(self, n: int = 4):
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randint(0, 256, (n, T, S, S, 3), generator=g, dtype=torch.uint8)
        self.actions = torch.randint(0, A, (n, T), generator=g)
        self.rewards = torch.randint(-1, 2, (n, T), generator=g).float()

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return {"frames": self.frames[i], "actions": self.actions[i], "rewards": self.rewards[i],
                "terminals": torch.zeros(T, dtype=torch.bool), "seeds": torch.tensor(i)}  # fmt: skip


def diamond():
    from diamond.module import DiamondModule

    return DiamondModule(
        num_actions=A, frame_size=S, cond_channels=16, depths=[1, 1], channels=[8, 8],
        attn_depths=[False, False], rew_lstm_dim=8, rew_cond_channels=8, rew_depths=[1, 1],
        rew_channels=[8, 8], rew_attn_depths=[False, False], rollout_horizon=2,
    )  # fmt: skip


def oasis():
    from oasis.module import OasisDiTModule, OasisVAEModule

    vae = dict(
        frame_size=S, latent_dim=4, patch_size=4, enc_dim=16, enc_depth=1, enc_heads=2, dec_dim=16,
        dec_depth=1, dec_heads=2, mlp_ratio=2.0,
    )  # fmt: skip
    return OasisDiTModule(
        num_actions=A, vae_hparams=OasisVAEModule.vae_kwargs(vae), scaling_factor=1.0, patch_size=2,
        hidden_size=16, depth=1, num_heads=2, max_frames=T, ddim_steps=2, context_frames=4, val_horizon=2,
        test_horizon=2, log_horizons=(1, 2), delta_t=3,
    )  # fmt: skip


def genie(**overrides):
    """A tiny Genie dynamics stage (its tokenizer's hyperparameters inside); `overrides` replace its arguments."""
    from genie.module import TOKENIZER_KEYS, GenieDynamicsModule, GenieTokenizerModule

    tokenizer = GenieTokenizerModule(
        frame_size=S, patch_size=4, d_model=16, num_heads=2, enc_layers=1, dec_layers=1, num_codes=16,
        code_dim=4, mlp_ratio=2.0,
    )  # fmt: skip
    args = dict(
        tokenizer_hparams={k: tokenizer.hparams[k] for k in TOKENIZER_KEYS}, frame_size=S, max_frames=T,
        num_latent_actions=4, lam_patch_size=8, lam_d_model=16, lam_num_heads=2, lam_enc_layers=1,
        lam_dec_layers=1, lam_code_dim=4, dyn_d_model=16, dyn_num_heads=2, dyn_num_layers=1, mlp_ratio=2.0,
        maskgit_steps=2, context_frames=4, rollout_horizon=2, delta_t=3, rollout_batches=2, rollout_clips=2,
    )  # fmt: skip
    return GenieDynamicsModule(**{**args, **overrides})
