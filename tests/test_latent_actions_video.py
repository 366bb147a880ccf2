"""latent_actions.mp4 after a Genie dynamics test: one row per test level, one column per latent action held
for 8 frames from the level's real start frame, a band of column labels on top; and test_records.json."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.callbacks import EvalVideoCallback
from common.evaluation import latent_action_video
from common.video import labelled_grid, read_video, write_video
from tests import tiny_families

T, S, A, LEVELS = 6, 16, 3, 5


class Clips(Dataset):
    """Two clips per level seed (10 clips, 5 levels), coinrun-sized action ids."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randint(0, 256, (2 * LEVELS, T, S, S, 3), generator=g, dtype=torch.uint8)
        self.actions = torch.randint(0, 15, (2 * LEVELS, T), generator=g)

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return {"frames": self.frames[i], "actions": self.actions[i], "seeds": torch.tensor(1000 + i // 2)}


def genie():
    return tiny_families.genie(
        max_frames=T,
        num_latent_actions=A,
        context_frames=2,
        rollout_clips=4,
        env_game="procgen:coinrun",
        num_env_actions=15,
    )


def test_latent_actions_video_grid_and_test_records(tmp_path):
    torch.manual_seed(0)
    module = genie()
    callback = EvalVideoCallback(num_videos=1, horizon=2, upscale_factor=2)
    trainer = pl.Trainer(default_root_dir=tmp_path, callbacks=[callback], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.test(module, DataLoader(Clips(), batch_size=4), verbose=False)

    video = read_video(tmp_path / "latent_actions.mp4")
    rows, f = 4, 2  # 4 of the 5 test levels; frames upscaled 2x
    band = video.shape[1] - rows * S * f
    assert video.shape[0] == 8 and video.shape[2] == A * S * f and video.shape[3] == 3
    assert 0 < band <= 40
    assert video[:, :band].mean() > 200 and video[:, :band].min() < 100  # white band with dark text
    # each cell holds the generated frames of (level r, latent a): compare with the module's own
    starts = torch.stack([Clips()[2 * r]["frames"][0] for r in range(rows)])  # the first clip of each level
    cells = latent_action_video(module.world_model(), starts, steps=8).numpy()  # (R, A, 8, S, S, 3)
    want = cells.repeat(f, 3).repeat(f, 4).astype(float)[..., 16:, :, :]  # below the row labels' corner
    for r in range(rows):
        for a in range(A):
            got = video[:, band + r * S * f : band + (r + 1) * S * f, a * S * f : (a + 1) * S * f]
            dist = np.abs(got[:, 16:].astype(float)[None, None] - want).mean(axis=(2, 3, 4, 5))  # (R, A)
            assert np.unravel_index(dist.argmin(), dist.shape) == (r, a), dist  # mp4 is lossy: the nearest
    records = json.loads((tmp_path / "test_records.json").read_text())
    clips = records["test/delta_psnr_t3"]
    assert clips["stage"] == "dynamics" and clips["clips"] == 8  # 2 batches x 4 rollout clips
    assert clips["seeds"] == [1000, 1000, 1001, 1001, 1002, 1002, 1003, 1003]
    assert len(clips["mse_inferred"]) == len(clips["mse_random"]) == len(clips["delta_psnr"]) == 8
    assert clips["low"] <= clips["high"]
    probe = records["test/action_nmi"]
    assert (
        probe["transitions"] == 10 * (T - 1) and len(probe["table"]) == A and len(probe["best_control"]) == A
    )
    assert callback.written[-1] == tmp_path / "latent_actions.mp4"


def test_labelled_grid_layout(tmp_path):
    """(R, K, T, H, W, C) cells -> (T, band + R*H, K*W, C); cell [r, k] lands at its row and column."""
    cells = np.zeros((2, 3, 8, 10, 12, 3), dtype=np.uint8)
    for r in range(2):
        for k in range(3):
            cells[r, k] = 40 * r + 60 * k + 10
    grid = labelled_grid(cells, ["a\nb", "c", "d"], ["x", "y"])
    band = grid.shape[1] - 2 * 10
    assert grid.shape == (8, band + 20, 36, 3) and band > 0 and band % 2 == 0
    assert (grid[:, band + 10 + 5, 12 * 2 + 6] == 40 + 120 + 10).all()  # inside cell [1, 2], off any label
    assert grid[0, :band, :12].min() < 128  # "a" and "b" drawn in the band
    path = write_video(tmp_path / "grid.mp4", grid)
    assert read_video(path).shape == grid.shape
