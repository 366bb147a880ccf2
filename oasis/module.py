"""Lightning stages of Oasis: `vae` (ViT-VAE reconstruction + small KL), then `dit` (diffusion forcing
on the frozen VAE's latents). The `dit` checkpoint is self-contained: it holds the VAE weights and the
VAE's constructor arguments (`vae_hparams`), so `OasisDiTModule.load_from_checkpoint(path)` needs
neither Hydra nor the `vae` checkpoint.

Batches: frames uint8 (B, T, H, W, C), actions long (B, T) (action t leads from frame t to t+1).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from common.checkpoint import FamilyCheckpoint
from common.evaluation import evaluate_rollout, seeded
from common.frames import to_signed, to_uint8
from common.frozen_stage import frozen_stage
from common.hparams import plain_hparams
from common.metrics import mse
from common.optim import adamw_warmup_cosine
from common.set_psnr_logging import SetPSNRLogging
from oasis.diffusion import DiffusionForcing
from oasis.dit import DiT
from oasis.vae import AutoencoderKL
from oasis.world_model import OasisWorldModel


class OasisVAEModule(FamilyCheckpoint, SetPSNRLogging, L.LightningModule):
    """Stage `vae`: L = MSE(recon, x) + kl_weight * KL per latent element; logs {split}/psnr_recon."""

    family = "oasis"
    stage = "vae"

    def __init__(
        self,
        frame_size: int = 64,
        latent_dim: int = 16,
        patch_size: int = 8,
        enc_dim: int = 256,
        enc_depth: int = 4,
        enc_heads: int = 4,
        dec_dim: int = 256,
        dec_depth: int = 4,
        dec_heads: int = 4,
        mlp_ratio: float = 4.0,
        kl_weight: float = 1e-4,
        frames_per_clip: int = 4,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 1e-3,
        warmup_steps: int = 100,
    ):
        super().__init__()
        self.save_hyperparameters()
        plain_hparams(self)
        self.vae = AutoencoderKL(**self.vae_kwargs(self.hparams))

    @staticmethod
    def vae_kwargs(h: dict) -> dict:
        """This stage's hyperparameters -> AutoencoderKL constructor arguments."""
        names = ["latent_dim", "patch_size", "enc_dim", "enc_depth", "enc_heads", "dec_dim", "dec_depth",
                 "dec_heads", "mlp_ratio"]  # fmt: skip
        kwargs = {k: h[k] for k in names}
        return dict(kwargs, input_height=h["frame_size"], input_width=h["frame_size"], use_variational=True)

    def _frames(self, batch: dict, train: bool) -> Tensor:
        frames = batch["frames"]  # (B, T, H, W, C)
        if train and self.hparams.frames_per_clip < frames.shape[1]:
            idx = torch.randperm(frames.shape[1], device=frames.device)[: self.hparams.frames_per_clip]
            frames = frames[:, idx]
        return rearrange(frames, "b t h w c -> (b t) h w c")

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x = to_signed(self._frames(batch, train=True), channels_first=True)
        recon, post = self.vae(x)
        rec = F.mse_loss(recon, x)
        kl = post.kl().mean() / post.mean[0].numel()
        loss = rec + self.hparams.kl_weight * kl
        self.log_dict({"train/loss": loss, "train/recon_mse": rec, "train/kl": kl}, prog_bar=True)
        return loss

    def _reconstruct_frames(self, frames: Tensor) -> Tensor:
        """uint8 (N, H, W, C) -> uint8 (N, H, W, C) through the posterior means."""
        x = to_signed(frames, channels_first=True)
        return to_uint8(self.vae.decode(self.vae.encode(x).mode()), channels_first=True)

    @torch.no_grad()
    def reconstruct(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, H, W, C) -> its reconstruction, uint8 (B, T, H, W, C) (the eval sample videos)."""
        b = frames.shape[0]
        recon = self._reconstruct_frames(rearrange(frames, "b t h w c -> (b t) h w c"))
        return rearrange(recon, "(b t) h w c -> b t h w c", b=b)

    def _eval(self, batch: dict, split: str) -> None:
        frames = self._frames(batch, train=False)
        self.set_psnr.add(f"{split}/psnr_recon", mse(self._reconstruct_frames(frames), frames))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, "test")

    def configure_optimizers(self):
        h = self.hparams
        return adamw_warmup_cosine(self, self.parameters(), h.lr, h.betas, h.weight_decay, h.warmup_steps)


class OasisDiTModule(FamilyCheckpoint, SetPSNRLogging, L.LightningModule):
    """Stage `dit`: diffusion forcing (independent noise level per frame, v-prediction, min-SNR
    weights) of the causal DiT on frozen VAE latents; evaluation by autoregressive rollouts, by
    ΔtPSNR at t = `delta_t` (the recorded actions against random ones: does the DiT follow them?), by the
    next frame with the batch's actions shuffled across clips (`psnr_next_shuffled`) and by
    the two decoded latents that bracket the next frame (`latent_bracket_errors`)."""

    family = "oasis"
    stage = "dit"

    def __init__(
        self,
        num_actions: int,
        vae_ckpt: str | None = None,
        vae_hparams: dict | None = None,
        scaling_factor: float | None = None,
        patch_size: int = 2,
        hidden_size: int = 256,
        depth: int = 8,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        max_frames: int = 32,
        timesteps: int = 1000,
        snr_clip: float = 5.0,
        fused_snr: bool = True,
        cum_snr_decay: float = 0.96,
        clip_noise: float = 6.0,
        ddim_steps: int = 10,
        stabilization_level: int = 15,
        noise_abs_max: float = 20.0,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 2e-3,
        warmup_steps: int = 1000,
        context_frames: int = 4,
        val_horizon: int = 4,
        test_horizon: int = 64,
        log_horizons: tuple[int, ...] = (1, 4, 16, 64),
        delta_t: int = 4,
    ):
        super().__init__()
        # the frozen VAE: from the vae stage's checkpoint the first time, then from vae_hparams
        self.vae, vae_hparams = frozen_stage(
            AutoencoderKL, vae_hparams, vae_ckpt, "oasis", "vae", OasisVAEModule.vae_kwargs
        )
        self.save_hyperparameters()
        plain_hparams(self)
        self.dit = DiT(
            input_h=self.vae.seq_h, input_w=self.vae.seq_w, patch_size=patch_size,
            in_channels=vae_hparams["latent_dim"], hidden_size=hidden_size, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, external_cond_dim=num_actions, max_frames=max_frames,
        )  # fmt: skip
        self.diffusion = DiffusionForcing(timesteps, snr_clip, clip_noise, ddim_steps, stabilization_level,
                                          noise_abs_max, fused_snr, cum_snr_decay)  # fmt: skip

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen, always in eval mode
        return self

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed run keeps the latent scale it trained with (Lightning restores weights, not
        hyperparameters): re-estimated on the first batch after resuming, it would differ."""
        saved = (checkpoint.get("hyper_parameters") or {}).get("scaling_factor")
        if self.hparams.scaling_factor is None and saved is not None:
            self.hparams["scaling_factor"] = float(saved)

    @property
    def scaling_factor(self) -> float:
        if self.hparams.scaling_factor is None:
            raise RuntimeError("scaling_factor is not set yet (it is estimated on the first batch)")
        return float(self.hparams.scaling_factor)

    @torch.no_grad()
    def latents(self, frames: Tensor, scaled: bool = True) -> Tensor:
        """uint8 (B, T, H, W, C) -> (B, T, C, h, w) posterior means (times scaling_factor)."""
        b = frames.shape[0]
        x = to_signed(rearrange(frames, "b t h w c -> (b t) h w c"), channels_first=True)
        z = self.vae.encode(x).mean
        z = rearrange(z, "(b t) (h w) c -> b t c h w", b=b, h=self.vae.seq_h)
        if self.hparams.scaling_factor is None:  # unit-variance latents: estimated once, saved in hparams
            self.hparams["scaling_factor"] = float(1.0 / z.std().clamp_min(1e-6))
        return z * self.scaling_factor if scaled else z

    def conditions(self, actions: Tensor) -> Tensor:
        """actions long (B, T) -> per-frame conditions (B, T, A).

        Frame t is conditioned on one_hot(action t - 1), the action that led to it; frame 0 on zeros."""
        onehot = F.one_hot(actions[:, :-1], self.hparams.num_actions).float()
        return F.pad(onehot, (0, 0, 1, 0))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0 = self.latents(batch["frames"])
        loss = self.diffusion.loss(self.dit, x0, self.conditions(batch["actions"]))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def world_model(self, use_cache: bool = True) -> OasisWorldModel:
        h = self.hparams
        return OasisWorldModel(
            self.vae,
            self.dit,
            self.diffusion,
            self.scaling_factor,
            h.num_actions,
            h.context_frames,
            use_cache,
        )

    @staticmethod
    def latent_bracket_errors(
        wm: OasisWorldModel, latents: Tensor, frames: Tensor, ctx: int
    ) -> tuple[Tensor, Tensor]:
        """Per-clip MSEs (B,), against the next real frame frames[:, ctx], of two frames that bracket the DiT:
        the previous frame's latent decoded (copy-last in latent space, what a DiT that only copies reaches)
        and the next frame's own latent decoded (the VAE's reconstruction: a perfect DiT's prediction).

        latents (B, T, C, h, w) scaled posterior means of frames uint8 (B, T, H, W, C)."""
        target = frames[:, ctx]
        return mse(wm.decode(latents[:, ctx - 1]), target), mse(wm.decode(latents[:, ctx]), target)

    def _eval(self, batch: dict, batch_idx: int, split: str, horizon: int) -> None:
        frames, actions = batch["frames"], batch["actions"]
        b, t = actions.shape
        ctx = min(self.hparams.context_frames, t - 1)
        horizon = max(1, min(horizon, t - ctx))
        log = dict(on_epoch=True, sync_dist=True, batch_size=b)
        x0 = self.latents(frames)
        with seeded(batch_idx, self.device):  # the loss's noise levels and noise
            self.log(f"{split}/loss", self.diffusion.loss(self.dit, x0, self.conditions(actions)), **log)
        horizons = set(self.hparams.log_horizons) | {horizon}
        wm = self.world_model()
        copy_err, recon_err = self.latent_bracket_errors(wm, x0, frames, ctx)
        self.set_psnr.add(f"{split}/psnr_latent_copy", copy_err)
        self.set_psnr.add(f"{split}/psnr_recon_next", recon_err)
        gen = torch.Generator().manual_seed(batch_idx)  # rollouts, psnr_next_shuffled, ΔtPSNR: seeded
        metrics = evaluate_rollout(wm, batch, gen, context=ctx, horizon=horizon, prefix=split, meter=self,
                                   horizons=horizons, delta_t=self.hparams.delta_t)  # fmt: skip
        self.log_dict(metrics, **log)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, batch_idx, "val", self.hparams.val_horizon)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, batch_idx, "test", self.hparams.test_horizon)

    def configure_optimizers(self):
        h = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]  # the DiT, not the frozen VAE
        return adamw_warmup_cosine(self, params, h.lr, h.betas, h.weight_decay, h.warmup_steps)
