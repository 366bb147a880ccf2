"""EvalVideoCallback on real family modules (tiny sizes): the sample video comes from their world_model()."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from common.callbacks import EvalVideoCallback
from common.video import read_video

T, S, A = 8, 16, 3


class Clips(Dataset):
    def __init__(self, n: int = 2):
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randint(0, 256, (n, T, S, S, 3), generator=g, dtype=torch.uint8)
        self.actions = torch.randint(0, A, (n, T), generator=g)

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return {
            "frames": self.frames[i],
            "actions": self.actions[i],
            "rewards": torch.zeros(T),
            "terminals": torch.zeros(T, dtype=torch.bool),
        }


def validate_with_callback(module, tmp_path):
    callback = EvalVideoCallback(num_videos=2, horizon=2, upscale_factor=1)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, callbacks=[callback], logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", limit_val_batches=1,
    )  # fmt: skip
    trainer.validate(module, DataLoader(Clips(), batch_size=2))
    return callback


def test_diamond_world_model_video(tmp_path):
    from diamond.module import DiamondModule

    torch.manual_seed(0)
    module = DiamondModule(
        num_actions=A, frame_size=S, cond_channels=16, depths=[1, 1], channels=[8, 8],
        attn_depths=[False, False], rew_lstm_dim=8, rew_cond_channels=8, rew_depths=[1, 1],
        rew_channels=[8, 8], rew_attn_depths=[False, False],
    )  # fmt: skip
    callback = validate_with_callback(module, tmp_path)
    (path,) = callback.written
    assert path.relative_to(tmp_path).as_posix() == "videos/world_model/val_step0.mp4"
    context = module.world_model().context_length
    assert read_video(path).shape == (context + 2, 2 * S + 2, 2 * S + 2, 3)


def test_oasis_world_model_video(tmp_path):
    from oasis.module import OasisDiTModule, OasisVAEModule

    torch.manual_seed(0)
    vae = dict(
        frame_size=S, latent_dim=4, patch_size=4, enc_dim=16, enc_depth=1, enc_heads=2, dec_dim=16,
        dec_depth=1, dec_heads=2, mlp_ratio=2.0,
    )  # fmt: skip
    module = OasisDiTModule(
        num_actions=A, vae_hparams=OasisVAEModule.vae_kwargs(vae), scaling_factor=1.0, patch_size=2,
        hidden_size=16, depth=1, num_heads=2, max_frames=T, ddim_steps=2, context_frames=4, val_horizon=2,
        test_horizon=2, log_horizons=(1, 2),
    )  # fmt: skip
    callback = validate_with_callback(module, tmp_path)
    (path,) = callback.written
    assert path.relative_to(tmp_path).as_posix() == "videos/dit/val_step0.mp4"
    context = module.world_model().context_length
    assert read_video(path).shape == (context + 2, 2 * S + 2, 2 * S + 2, 3)


def genie_tokenizer():
    from genie.module import GenieTokenizerModule

    return GenieTokenizerModule(
        frame_size=S, patch_size=4, d_model=16, num_heads=2, enc_layers=1, dec_layers=1, num_codes=16,
        code_dim=4, mlp_ratio=2.0,
    )  # fmt: skip


def test_genie_tokenizer_reconstruction_video(tmp_path):
    torch.manual_seed(0)
    callback = validate_with_callback(genie_tokenizer(), tmp_path)
    (path,) = callback.written
    assert path.relative_to(tmp_path).as_posix() == "videos/tokenizer/val_step0.mp4"
    assert read_video(path).shape == (T, 2 * S + 2, 2 * S + 2, 3)


def test_genie_dynamics_video_from_latent_actions(tmp_path, monkeypatch):
    from genie.module import TOKENIZER_KEYS, GenieDynamicsModule
    from genie.world_model import GenieWorldModel

    torch.manual_seed(0)
    tokenizer = genie_tokenizer()
    module = GenieDynamicsModule(
        tokenizer_hparams={k: tokenizer.hparams[k] for k in TOKENIZER_KEYS}, frame_size=S, max_frames=T,
        num_latent_actions=4, lam_patch_size=8, lam_d_model=16, lam_num_heads=2, lam_enc_layers=1,
        lam_dec_layers=1, lam_code_dim=4, dyn_d_model=16, dyn_num_heads=2, dyn_num_layers=1, mlp_ratio=2.0,
        maskgit_steps=2, context_frames=4, rollout_horizon=2, delta_t=2, rollout_batches=1, rollout_clips=2,
    )  # fmt: skip
    seen = []
    infer = GenieWorldModel.infer_actions
    monkeypatch.setattr(GenieWorldModel, "infer_actions", lambda wm, f: seen.append(f.shape) or infer(wm, f))
    callback = validate_with_callback(module, tmp_path)
    (path,) = callback.written
    assert path.relative_to(tmp_path).as_posix() == "videos/dynamics/val_step0.mp4"
    assert seen and seen[-1] == (2, T, S, S, 3)  # the video's rollout used LAM-inferred actions
    context = module.world_model().context_length
    assert read_video(path).shape == (context + 2, 2 * S + 2, 2 * S + 2, 3)
