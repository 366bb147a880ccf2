"""Genie's two training stages as LightningModules (Genie §2, App. F).

- `GenieTokenizerModule` (stage "tokenizer"): the ST-ViViT VQ-VAE on frames; logs psnr_recon and
  codebook usage / perplexity.
- `GenieDynamicsModule` (stage "dynamics"): the LAM and the MaskGIT dynamics model trained jointly
  on the tokens of a frozen tokenizer read from `tokenizer_ckpt`; the tokenizer's constructor
  arguments are kept in this module's hyperparameters and its weights in its state dict, so a
  dynamics checkpoint is self-contained. Evaluates psnr_next / rollouts (latent actions inferred by
  the LAM from the real frames), the copy-last-frame baseline, ΔtPSNR at t = `delta_t` with its
  bootstrap interval, and `action_nmi`: how well the LAM's latent actions name the environment's
  controls (common/action_nmi.py; `env_game` says how the recorded actions group, `num_env_actions` = 0
  turns it off). common.evaluation.latent_action_video plays every latent action from the same real frames.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from common.action_nmi import ActionProbe
from common.checkpoint import FamilyCheckpoint
from common.evaluation import evaluate_rollout, seeded
from common.frames import to_signed, to_uint8
from common.frozen_stage import frozen_stage
from common.hparams import plain_hparams
from common.metrics import mse
from common.optim import adamw_warmup_cosine
from common.set_psnr_logging import SetPSNRLogging
from genie.dynamics import DynamicsModel
from genie.lam import LatentActionModel
from genie.maskgit import training_mask
from genie.tokenizer import VideoTokenizer
from genie.world_model import GenieWorldModel

TOKENIZER_KEYS = (
    "frame_size", "channels", "patch_size", "d_model", "num_heads", "enc_layers", "dec_layers",
    "num_codes", "code_dim", "quantizer", "fsq_levels", "mlp_ratio", "dropout", "encoder",
)  # fmt: skip


class GenieTokenizerModule(FamilyCheckpoint, SetPSNRLogging, L.LightningModule):
    family, stage = "genie", "tokenizer"

    def __init__(
        self,
        frame_size: int = 64,
        channels: int = 3,
        patch_size: int = 4,
        d_model: int = 512,
        num_heads: int = 8,
        enc_layers: int = 8,
        dec_layers: int = 8,
        num_codes: int = 1024,
        code_dim: int = 32,
        quantizer: str = "vq",
        fsq_levels: list[int] | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        encoder: str = "st",
        lr: float = 3e-4,
        min_lr: float = 3e-4,
        betas: list[float] = (0.9, 0.9),
        weight_decay: float = 1e-4,
        warmup_steps: int = 10000,
    ):
        super().__init__()
        self.save_hyperparameters()
        plain_hparams(self)
        self.tokenizer = VideoTokenizer(**{k: self.hparams[k] for k in TOKENIZER_KEYS})

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = to_signed(batch["frames"])
        recon, _, vq_loss, stats = self.tokenizer(x)
        mse = F.mse_loss(recon, x)
        loss = mse + vq_loss
        b = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log_dict({"train/mse": mse, "train/vq_loss": vq_loss}, batch_size=b)
        self.log_dict({f"train/codebook_{k}": v for k, v in stats.items()}, batch_size=b)
        return loss

    @torch.no_grad()
    def reconstruct(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, C) -> its reconstruction through the tokens, uint8 (B, T, H, W, C)."""
        return to_uint8(self.tokenizer(to_signed(frames))[0])

    def _evaluate(self, batch: dict, prefix: str) -> None:
        frames = batch["frames"]
        x = to_signed(frames)
        recon, _, vq_loss, stats = self.tokenizer(x)
        metrics = {
            f"{prefix}/loss": F.mse_loss(recon, x) + vq_loss,
            **{f"{prefix}/codebook_{k}": v for k, v in stats.items()},
        }
        self.log_dict(metrics, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self.set_psnr.add(f"{prefix}/psnr_recon", mse(to_uint8(recon), frames))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        h = self.hparams
        return adamw_warmup_cosine(
            self, self.parameters(), h.lr, h.betas, h.weight_decay, h.warmup_steps, min_lr=h.min_lr
        )


class GenieDynamicsModule(FamilyCheckpoint, SetPSNRLogging, L.LightningModule):
    family, stage = "genie", "dynamics"

    def __init__(
        self,
        tokenizer_ckpt: str | None = None,
        tokenizer_hparams: dict | None = None,
        frame_size: int = 64,
        channels: int = 3,
        max_frames: int = 16,
        num_latent_actions: int = 6,
        lam_patch_size: int = 16,
        lam_d_model: int = 512,
        lam_num_heads: int = 8,
        lam_enc_layers: int = 8,
        lam_dec_layers: int = 8,
        lam_code_dim: int = 32,
        dyn_d_model: int = 512,
        dyn_num_heads: int = 8,
        dyn_num_layers: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        mask_rate_min: float = 0.5,
        copy_gate: bool = False,
        maskgit_steps: int = 25,
        temperature: float = 1.0,
        context_frames: int = 4,
        rollout_horizon: int = 4,
        delta_t: int = 4,
        rollout_batches: int = 2,
        rollout_clips: int = 8,
        lr: float = 3e-5,
        min_lr: float = 3e-6,
        betas: list[float] = (0.9, 0.9),
        weight_decay: float = 1e-4,
        warmup_steps: int = 5000,
        env_game: str | None = None,
        num_env_actions: int = 0,
    ):
        super().__init__()
        # the frozen tokenizer: from the tokenizer stage's checkpoint the first time, then from tokenizer_hparams
        self.tokenizer, tokenizer_hparams = frozen_stage(
            VideoTokenizer, tokenizer_hparams, tokenizer_ckpt, "genie", "tokenizer",
            lambda h: {k: h[k] for k in TOKENIZER_KEYS if k in h},  # keys added later take their defaults
        )  # fmt: skip
        if tokenizer_hparams["frame_size"] != frame_size:
            raise ValueError(
                f"tokenizer frame_size {tokenizer_hparams['frame_size']} != dynamics frame_size {frame_size}"
            )
        self.save_hyperparameters()
        plain_hparams(self)
        self.lam = LatentActionModel(
            frame_size, channels, lam_patch_size, lam_d_model, lam_num_heads, lam_enc_layers,
            lam_dec_layers, num_latent_actions, lam_code_dim, mlp_ratio, dropout,
        )  # fmt: skip
        grid = (frame_size // tokenizer_hparams["patch_size"],) * 2
        self.dynamics = DynamicsModel(
            self.tokenizer.num_codes, num_latent_actions, grid, dyn_d_model, dyn_num_heads, dyn_num_layers,
            mlp_ratio, dropout, copy_gate,
        )  # fmt: skip
        # latent action x recorded control over each evaluation epoch's transitions (not in the state dict)
        self.action_probe = (
            ActionProbe(num_latent_actions, env_game, num_env_actions) if num_env_actions else None
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: no dead-code restarts, no dropout
        return self

    def world_model(self, **overrides) -> GenieWorldModel:
        """The current weights as a WorldModel (latent actions); overrides e.g. maskgit_steps=8, seed=0."""
        h = self.hparams
        kwargs = dict(
            max_frames=h.max_frames, context_length=h.context_frames, maskgit_steps=h.maskgit_steps,
            temperature=h.temperature,
        )  # fmt: skip
        kwargs.update(overrides)
        return GenieWorldModel(self.tokenizer, self.lam, self.dynamics, **kwargs)

    @torch.no_grad()
    def latent_actions(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, C) -> long (B, T): the LAM's latent action from frame t to t+1 (last one 0)."""
        actions = self.lam.encode(to_signed(frames))[1]
        return torch.cat([actions, actions.new_zeros(actions.shape[0], 1)], 1)

    def _losses(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(loss, logs, the LAM's latent actions long (B, T-1)) of a batch of frames uint8 (B, T, H, W, C)."""
        x = to_signed(frames)
        with torch.no_grad():
            tokens = self.tokenizer.encode(x)[1]  # (B, T, N)
        pred, actions, lam_vq, stats = self.lam(x)
        lam_mse = F.mse_loss(pred, x[:, 1:])
        prev = torch.cat([actions.new_full((actions.shape[0], 1), -1), actions], 1)  # indices: stop-grad
        mask = training_mask(tokens.shape, (self.hparams.mask_rate_min, 1.0), device=tokens.device)
        before = F.pad(tokens[:, :-1], (0, 0, 1, 0), value=-1)  # (B, T, N): each frame's previous codes
        logits, _ = self.dynamics(tokens.masked_fill(mask, self.dynamics.mask_id), prev, prev_tokens=before)
        ce = F.cross_entropy(logits[mask], tokens[mask])
        acc = (logits[mask].argmax(-1) == tokens[mask]).float().mean()
        loss = lam_mse + lam_vq + ce
        logs = {
            "loss": loss, "lam_mse": lam_mse, "lam_vq_loss": lam_vq, "dyn_ce": ce, "dyn_token_acc": acc,
            "action_usage": stats["usage"], "action_entropy": stats["perplexity"].log(),
        }  # fmt: skip
        return loss, logs, actions

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logs, _ = self._losses(batch["frames"])
        b = batch["frames"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log_dict({f"train/{k}": v for k, v in logs.items() if k != "loss"}, batch_size=b)
        return loss

    def _evaluate(self, batch: dict, batch_idx: int, prefix: str) -> None:
        frames = batch["frames"]
        with seeded(batch_idx, self.device):  # the dynamics loss's masks
            _, logs, latent = self._losses(frames)
        self.log_dict({f"{prefix}/{k}": v for k, v in logs.items()}, on_epoch=True, sync_dist=True,
                      batch_size=frames.shape[0])  # fmt: skip
        if self.action_probe is not None and "actions" in batch:
            self.action_probe.add(latent, batch["actions"][:, : latent.shape[1]])
        if batch_idx >= self.hparams.rollout_batches:
            return
        h = self.hparams
        clips = {k: v[: h.rollout_clips] for k, v in batch.items() if k in ("frames", "actions", "seeds")}
        horizon = min(h.rollout_horizon, frames.shape[1] - h.context_frames)
        gen = torch.Generator().manual_seed(batch_idx)  # rollouts (latent actions the LAM infers), ΔtPSNR
        metrics = evaluate_rollout(self.world_model(), clips, gen, context=h.context_frames, horizon=horizon,
                                   prefix=prefix, meter=self, shuffled=False, delta_t=h.delta_t)  # fmt: skip
        self.log_dict(metrics, on_epoch=True, sync_dist=True, batch_size=clips["frames"].shape[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def _log_action_nmi(self, prefix: str) -> None:
        """Log `{prefix}/action_nmi`, `_shuffled` and `_p` over the epoch's transitions (all ranks); the table
        goes to `eval_records[f"{prefix}/action_nmi"]`."""
        if self.action_probe is None:
            return
        reduce = None
        if self.trainer.world_size > 1:
            reduce = lambda t: self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").cpu()  # noqa: E731
        out = self.action_probe.compute(reduce)
        self.action_probe.reset()
        if out is not None:
            self.log(f"{prefix}/action_nmi", out["nmi"])
            self.log(f"{prefix}/action_nmi_shuffled", out["nmi_shuffled"])
            self.log(f"{prefix}/action_nmi_p", out["nmi_p"])
            self.eval_records[f"{prefix}/action_nmi"] = out

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        if self.action_probe is not None:
            self.action_probe.reset()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        if self.action_probe is not None:
            self.action_probe.reset()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_action_nmi("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_action_nmi("test")

    def configure_optimizers(self):
        h = self.hparams
        params = [p for n, p in self.named_parameters() if not n.startswith("tokenizer.")]
        return adamw_warmup_cosine(
            self, params, h.lr, h.betas, h.weight_decay, h.warmup_steps, min_lr=h.min_lr
        )
