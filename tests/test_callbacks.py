"""EvalVideoCallback with tiny fake modules: videos written per split, each generation path, FVD, skips."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.callbacks import EvalVideoCallback
from common.video import read_video
from common.world_model import Step

CONF = Path(__file__).resolve().parents[1] / "conf"
B, T, H, W, C, A = 2, 6, 8, 8, 3, 4


class Clips(Dataset):
    """Bright random clips with actions, in the shared batch format."""

    def __init__(self, n: int = 4):
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randint(128, 256, (n, T, H, W, C), generator=g, dtype=torch.uint8)
        self.actions = torch.randint(0, A, (n, T), generator=g)

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return {"frames": self.frames[i], "actions": self.actions[i], "rewards": torch.zeros(T)}


class BlackWorldModel:
    """Predicts a black frame whatever the action; records what it was given."""

    num_actions, frame_shape, context_length = A, (H, W, C), 2
    policy, latent_actions, infer_actions, vector_actions = None, False, None, False

    def __init__(self):
        self.actions_seen = []
        self.seeds = []

    def seed(self, seed):
        self.seeds.append(seed)

    def reset(self, frames, actions=None):
        self.batch = frames.shape[0]

    def step(self, actions):
        self.actions_seen.append(actions.clone())
        return Step(frames=torch.zeros(self.batch, H, W, C, dtype=torch.uint8))


class Base(pl.LightningModule):
    stage = "dynamics"

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch["frames"].float().mean().view(1, 1)).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/dummy", 1.0, batch_size=batch["frames"].shape[0])

    def test_step(self, batch, batch_idx):
        self.log("test/dummy", 1.0, batch_size=batch["frames"].shape[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class WithWorldModel(Base):
    def __init__(self):
        super().__init__()
        self.wm = BlackWorldModel()

    def world_model(self):
        return self.wm


class LatentBlackWorldModel(BlackWorldModel):
    """A world model of latent actions: it reads latent action 2 between any two frames."""

    latent_actions = True

    def infer_actions(self, frames):
        return torch.full((frames.shape[0], frames.shape[1] - 1), 2, dtype=torch.long)


class WithLatentActions(WithWorldModel):
    def __init__(self):
        super().__init__()
        self.wm = LatentBlackWorldModel()


class WithReconstruct(Base):
    stage = "tokenizer"

    def reconstruct(self, frames):
        return frames.flip(-1)


def make_trainer(tmp_path, callback, **kw):
    return pl.Trainer(
        default_root_dir=tmp_path,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kw,
    )


def loader():
    return DataLoader(Clips(), batch_size=B)


def test_world_model_rollout_video_for_val_and_test(tmp_path):
    callback = EvalVideoCallback(num_videos=2, horizon=3, upscale_factor=1)
    module = WithWorldModel()
    trainer = make_trainer(tmp_path, callback, max_steps=2, num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(module, loader(), loader())
    trainer.test(module, loader())
    names = [p.name for p in callback.written]
    assert names == ["val_step2.mp4", "test_step2.mp4"]
    assert callback.written[0].parent == tmp_path / "videos" / "dynamics"
    video = read_video(callback.written[1])
    # T = context (2) + horizon (3); rows: 2 clips of H + a 2-pixel gap; columns: real | gap | generated
    assert video.shape == (5, 2 * H + 2, 2 * W + 2, C)
    generated, real = video[2:, :H, W + 2 :].astype(float), video[2:, :H, :W].astype(float)
    assert generated.mean() < 40 and real.mean() > 120  # black predictions beside bright real frames
    # rollout used the batch's real actions a[context - 1 + k]
    actions = Clips().actions[:2]
    assert torch.equal(module.wm.actions_seen[-3], actions[:, 1])


def test_latent_actions_used_when_the_world_model_has_them(tmp_path):
    """WorldModel.latent_actions: the rollout plays the latent actions infer_actions reads from the clip."""
    callback = EvalVideoCallback(num_videos=1, horizon=2)
    module = WithLatentActions()
    make_trainer(tmp_path, callback, limit_val_batches=1).validate(module, loader())
    assert callback.written and all((a == 2).all() for a in module.wm.actions_seen)


def test_sample_video_rollouts_are_seeded(tmp_path):
    callback = EvalVideoCallback(num_videos=1, horizon=2)
    module = WithWorldModel()
    make_trainer(tmp_path, callback, limit_val_batches=1).validate(module, loader())
    assert module.wm.seeds == [0]


def test_reconstruction_stage_video(tmp_path):
    callback = EvalVideoCallback(num_videos=1, upscale_factor=2, video_dir=str(tmp_path / "vids"))
    make_trainer(tmp_path, callback, limit_val_batches=1).validate(WithReconstruct(), loader())
    (path,) = callback.written
    assert path == tmp_path / "vids" / "tokenizer" / "val_step0.mp4"
    assert read_video(path).shape == (T, 2 * H, 2 * (2 * W + 2), C)


def test_module_without_generation_is_skipped_cleanly(tmp_path, caplog):
    callback = EvalVideoCallback(num_videos=2)
    trainer = make_trainer(tmp_path, callback, limit_test_batches=2)
    with caplog.at_level("INFO"):
        trainer.test(Base(), loader())
    assert callback.written == []
    assert not (tmp_path / "videos").exists()
    assert any("has neither world_model() nor reconstruct()" in r.message for r in caplog.records)
    assert any("FVD skipped: no I3D TorchScript file" in r.message for r in caplog.records)


class TinyDetector(nn.Module):
    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = True
    ):
        return x.mean(dim=(1, 3, 4))  # (B, C, T, H, W) -> (B, T)


def test_fvd_logged_with_a_torchscript_detector(tmp_path):
    weights = tmp_path / "i3d.pt"
    torch.jit.script(TinyDetector()).save(str(weights))
    callback = EvalVideoCallback(num_videos=0, horizon=3, fvd_weights=str(weights), fvd_num_videos=3)
    trainer = make_trainer(tmp_path, callback)
    (metrics,) = trainer.test(WithWorldModel(), loader())
    assert callback.written == []  # num_videos=0: FVD only
    # black generated frames against bright real ones: a large distance
    assert metrics["test/fvd"] > 1000


def test_eval_config_instantiates_the_callback():
    cfg = OmegaConf.merge(
        {"eval": OmegaConf.load(CONF / "eval" / "default.yaml")},
        {"callbacks": OmegaConf.load(CONF / "callbacks" / "eval.yaml")},
    )
    callback = instantiate(cfg.callbacks.eval_video)
    assert isinstance(callback, EvalVideoCallback)
    assert callback.num_videos == cfg.eval.num_videos and callback.fvd_weights is None


@pytest.mark.parametrize("bad", ["", None])
def test_fvd_disabled_for_empty_weights(bad):
    assert EvalVideoCallback(fvd_weights=bad)._fvd_enabled() is False


def test_video_sent_to_wandb_when_a_wandb_logger_is_active(tmp_path):
    from lightning.pytorch.loggers import Logger

    class Recorder:
        def __init__(self):
            self.logged = []

        def log(self, data):
            self.logged.append(data)

    class WandbLogger(Logger):  # same class name as Lightning's: the callback checks the name only
        name, version = "fake", "0"

        def __init__(self):
            super().__init__()
            self._experiment = Recorder()

        @property
        def experiment(self):
            return self._experiment

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    wandb_logger = WandbLogger()
    callback = EvalVideoCallback(num_videos=1, horizon=2)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        callbacks=[callback],
        logger=[wandb_logger],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
    )
    trainer.validate(WithWorldModel(), loader())
    (entry,) = wandb_logger.experiment.logged
    assert type(entry["val/video"]).__name__ == "Video" and entry["trainer/global_step"] == 0


class BrokenWorldModel(Base):
    def world_model(self):
        raise RuntimeError("no weights yet")


def test_generation_failure_is_one_warning_and_the_run_goes_on(tmp_path, caplog):
    callback = EvalVideoCallback(num_videos=1)
    trainer = make_trainer(tmp_path, callback, max_steps=2, num_sanity_val_steps=0, limit_val_batches=1)
    with caplog.at_level("WARNING"):
        trainer.fit(BrokenWorldModel(), loader(), loader())
    assert trainer.global_step == 2 and callback.written == []
    assert any("sample video skipped: RuntimeError: no weights yet" in r.message for r in caplog.records)


def test_wrong_fvd_weights_fail_at_setup(tmp_path):
    callback = EvalVideoCallback(fvd_weights=str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        make_trainer(tmp_path, callback, max_steps=1).fit(WithWorldModel(), loader(), loader())
