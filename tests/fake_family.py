"""A two-stage test family for the framework tests (stage handoff, resume, metrics.json, eval-only).

Stage `enc` learns a linear autoencoder of frames; stage `pred` (needs `enc_ckpt`) predicts the next
frame's code. Small and fast, but a real model with real losses, not a stub of any worldplay family.
"""

from __future__ import annotations

import lightning as L
import torch
from einops import rearrange
from torch import nn

from common.checkpoint import FamilyCheckpoint, check_family
from common.metrics import psnr


class FakeEnc(FamilyCheckpoint, L.LightningModule):
    family, stage = "fake", "enc"

    def __init__(self, frame_size: int = 64, code: int = 8, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.enc = nn.Linear(3 * 16 * 16, code)
        self.dec = nn.Linear(code, 3 * 16 * 16)

    def _small(self, frames: torch.Tensor) -> torch.Tensor:
        x = rearrange(frames.float() / 255.0, "b t h w c -> (b t) c h w")
        return torch.nn.functional.adaptive_avg_pool2d(x, 16).flatten(1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self._small(frames)
        return self.dec(self.enc(x)), x

    def training_step(self, batch, _):
        recon, x = self(batch["frames"])
        loss = (recon - x).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, _):
        recon, x = self(batch["frames"])
        p = psnr(recon.clamp(0, 1).reshape(-1, 16, 16, 3), x.reshape(-1, 16, 16, 3)).mean()
        self.log("val/psnr_recon", p, batch_size=len(batch["frames"]))

    def test_step(self, batch, _):
        recon, x = self(batch["frames"])
        p = psnr(recon.clamp(0, 1).reshape(-1, 16, 16, 3), x.reshape(-1, 16, 16, 3)).mean()
        self.log("test/psnr_recon", p, batch_size=len(batch["frames"]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class FakePred(FamilyCheckpoint, L.LightningModule):
    family, stage = "fake", "pred"

    def __init__(self, enc_ckpt: str | None = None, enc_hparams: dict | None = None, lr: float = 1e-2):
        super().__init__()
        if enc_hparams is None:
            ckpt = check_family(enc_ckpt, "fake", "enc")
            enc_hparams = dict(ckpt["hyper_parameters"])
            self.enc = FakeEnc(**enc_hparams)
            self.enc.load_state_dict(ckpt["state_dict"])
        else:
            self.enc = FakeEnc(**enc_hparams)
        self.save_hyperparameters({"enc_ckpt": enc_ckpt, "enc_hparams": enc_hparams, "lr": lr})
        self.enc.requires_grad_(False)
        self.pred = nn.Linear(enc_hparams["code"], enc_hparams["code"])

    def _loss(self, batch):
        b = len(batch["frames"])
        z = self.enc.enc(self.enc._small(batch["frames"])).reshape(b, -1, self.pred.in_features)
        return (self.pred(z[:, :-1]) - z[:, 1:]).pow(2).mean()

    def training_step(self, batch, _):
        loss = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, _):
        self.log("val/loss", self._loss(batch), batch_size=len(batch["frames"]))

    def test_step(self, batch, _):
        self.log("test/loss", self._loss(batch), batch_size=len(batch["frames"]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.pred.parameters(), lr=self.hparams.lr)
