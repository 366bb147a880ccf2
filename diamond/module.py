"""DiamondModule: trains DIAMOND's denoiser and reward/termination model together on clips.

One optimiser step updates both networks (their parameters are disjoint, so summing the losses equals
DIAMOND's two separate AdamW optimisers), with DIAMOND's per-network gradient-norm clipping, weight
decay on weight matrices only, and a linear learning-rate warm-up stepped per step (then constant, as
DIAMOND, or a cosine decay to `min_lr`).

Batch (from common.data): frames uint8 (B, T, H, W, C), actions long (B, T), rewards float (B, T),
terminals bool (B, T); action t leads from frame t to t+1. Optional `mask` bool (B, T): frame t is real.
The denoiser learns p(frame t+n | frames t..t+n-1, actions t..t+n-1) on `denoiser_windows` random
windows per clip (n = context_length); the reward/end model sees every transition of the clip.
`rew_event_weight` > 1 weighs the cross-entropy of the event classes (rewards -1 and +1, end) that much
above the common one: under random play ~1-3% of Atari transitions pay a reward, and where the reward is
hard to see a tiny unweighted model stays at the prior's loss, predicting none (DIAMOND: 1, unweighted;
with `data.event_weight`, clips holding an event are also drawn more often, common/data/sampler.py).
`rew_next_frame=False` hides o_{t+1} from the reward/end model (diamond/reward_end.py says when that matters).
"""

from __future__ import annotations

import lightning as L
import torch
from einops import rearrange
from torch import Tensor
from torchmetrics.functional.classification import multiclass_stat_scores

from common.checkpoint import FamilyCheckpoint
from common.evaluation import evaluate_rollout
from common.frames import to_signed
from common.hparams import plain_hparams
from common.optim import adamw_warmup_cosine
from common.set_psnr_logging import SetPSNRLogging
from diamond.actor_critic import ActorCritic
from diamond.denoiser import Denoiser, sample_sigma
from diamond.reward_end import RewEndModel
from diamond.sampler import DiffusionSampler
from diamond.unet import InnerModel


def nonzero_f1_counts(pred: Tensor, target: Tensor, zero_class: int, num_classes: int = 3) -> Tensor:
    """Counts for a micro F1 over the classes other than `zero_class`: [true positives, predicted, actual].

    pred, target long (N,) in [0, num_classes) (rewards -1 / 0 / +1 as 0 / 1 / 2; ends 0 / 1). The per-class
    counts are torchmetrics' multiclass_stat_scores, summed over the event classes."""
    if pred.numel() == 0:  # no transition in the batch
        return torch.zeros(3, device=pred.device)
    # (classes, 5): true positives, false positives, true negatives, false negatives, support
    stats = multiclass_stat_scores(pred, target, num_classes, average=None)
    tp, fp, _, fn, _ = stats[torch.arange(num_classes, device=stats.device) != zero_class].sum(0)
    return torch.stack([tp, tp + fp, tp + fn]).float()


def event_f1(tp: float, predicted: float, events: float) -> float | None:
    """Micro F1 = 2 TP / (predicted + actual events) of the nonzero classes; None (undefined) when the split
    holds no event: its recall is 0 / 0, and the 1.0 that 0 / 0 := 1 gives would read as a perfect score."""
    return None if events == 0 else 2 * tp / (predicted + events)


class DiamondModule(FamilyCheckpoint, SetPSNRLogging, L.LightningModule):
    family = "diamond"
    stage = "world_model"

    def __init__(
        self,
        num_actions: int,
        frame_size: int = 64,
        img_channels: int = 3,
        context_length: int = 4,
        # denoiser network (DIAMOND Atari: cond 256, depths [2,2,2,2], channels [64,64,64,64])
        cond_channels: int = 256,
        depths: list[int] = (2, 2, 2, 2),
        channels: list[int] = (64, 64, 64, 64),
        attn_depths: list[bool] = (False, False, False, False),
        # EDM
        sigma_data: float = 0.5,
        sigma_offset_noise: float = 0.3,
        train_sigma_loc: float = -0.4,
        train_sigma_scale: float = 1.2,
        train_sigma_min: float = 2e-3,
        train_sigma_max: float = 20.0,
        denoiser_windows: int | None = 1,
        # reward / termination model
        rew_lstm_dim: int = 512,
        rew_cond_channels: int = 128,
        rew_depths: list[int] = (2, 2, 2, 2),
        rew_channels: list[int] = (32, 32, 32, 32),
        rew_attn_depths: list[bool] = (False, False, False, False),
        rew_event_weight: float = 1.0,
        rew_next_frame: bool = True,
        # sampler used by world_model()
        num_steps_denoising: int = 3,
        sampler_sigma_min: float = 2e-3,
        sampler_sigma_max: float = 5.0,
        sampler_rho: float = 7,
        sampler_order: int = 1,
        # optimisation
        lr: float = 1e-4,
        min_lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        warmup_steps: int = 100,
        max_grad_norm_denoiser: float = 1.0,
        max_grad_norm_rew_end: float = 100.0,
        # evaluation
        rollout_horizon: int = 8,
        # DIAMOND's agent (diamond/actor_critic.py): {lstm_dim, channels, down}, None for none. Carried with
        # the weights (imported checkpoints), frozen: this module trains the world model only.
        actor_critic: dict | None = None,
    ) -> None:
        super().__init__()
        if not rew_event_weight > 0:
            raise ValueError(
                f"model.world_model.rew_event_weight={rew_event_weight}: must be > 0 (1: unweighted)"
            )
        self.save_hyperparameters()
        plain_hparams(self)
        inner = InnerModel(
            img_channels, context_length, cond_channels, depths, channels, attn_depths, num_actions
        )
        self.denoiser = Denoiser(inner, sigma_data, sigma_offset_noise)
        self.rew_end_model = RewEndModel(
            img_channels,
            frame_size,
            num_actions,
            rew_lstm_dim,
            rew_cond_channels,
            rew_depths,
            rew_channels,
            rew_attn_depths,
            next_frame=rew_next_frame,
        )
        self.actor_critic = None
        if actor_critic is not None:
            self.actor_critic = ActorCritic(img_channels, frame_size, num_actions, **actor_critic)
            self.actor_critic.requires_grad_(False)
        self._f1_counts: dict[str, Tensor] = {}
        # NHWC convolutions: on this CPU a tiny training step is ~25% faster and a generated frame ~17%
        self.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------------------- inference
    def sampler(self) -> DiffusionSampler:
        hp = self.hparams
        return DiffusionSampler(
            self.denoiser, hp.num_steps_denoising, hp.sampler_sigma_min, hp.sampler_sigma_max, hp.sampler_rho,
            hp.sampler_order,
        )  # fmt: skip

    def world_model(self):
        """A DiamondWorldModel over the current weights (shared, not copied), with the agent as its policy."""
        from diamond.actor_critic import ActorCriticPolicy
        from diamond.world_model import DiamondWorldModel

        hp = self.hparams
        return DiamondWorldModel(
            self.denoiser,
            self.rew_end_model,
            self.sampler(),
            hp.num_actions,
            (hp.frame_size, hp.frame_size, hp.img_channels),
            policy=None if self.actor_critic is None else ActorCriticPolicy(self.actor_critic),
        )

    # ----------------------------------------------------------------------------------------- training
    def _check_batch(self, frames: Tensor, actions: Tensor) -> None:
        n, hp = self.hparams.context_length, self.hparams
        if frames.ndim != 5 or frames.shape[1] < n + 1:
            raise ValueError(f"diamond: frames must be (B, T >= {n + 1}, H, W, C), got {tuple(frames.shape)}")
        if tuple(frames.shape[2:]) != (hp.frame_size, hp.frame_size, hp.img_channels):
            raise ValueError(
                f"diamond: frames are {tuple(frames.shape[2:])}, model expects "
                f"{(hp.frame_size, hp.frame_size, hp.img_channels)} (H, W, C)"
            )
        if actions.numel() and (actions.min() < 0 or actions.max() >= hp.num_actions):
            raise ValueError(f"diamond: action out of range [0, {hp.num_actions}): {actions.max().item()}")

    def losses(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Denoising and reward/end losses of one batch (training and validation share it)."""
        hp = self.hparams
        frames, actions = batch["frames"], batch["actions"].long()
        self._check_batch(frames, actions)
        x = to_signed(frames, channels_first=True)  # (B, T, C, H, W)
        b, t = actions.shape
        n = hp.context_length
        mask = batch.get("mask")

        # denoiser: windows of n past frames + the next one
        num_windows = t - n
        k = num_windows if hp.denoiser_windows is None else min(hp.denoiser_windows, num_windows)
        starts = torch.randperm(num_windows, generator=generator)[:k].tolist()
        obs = torch.stack([x[:, i : i + n] for i in starts], dim=1)  # (B, k, n, C, H, W)
        act = torch.stack([actions[:, i : i + n] for i in starts], dim=1)  # (B, k, n)
        nxt = torch.stack([x[:, i + n] for i in starts], dim=1)  # (B, k, C, H, W)
        obs = rearrange(obs, "b k n c h w -> (b k) (n c) h w")
        act, nxt = rearrange(act, "b k n -> (b k) n"), rearrange(nxt, "b k c h w -> (b k) c h w")
        if mask is not None:  # keep windows whose target frame is real
            keep = torch.stack([mask[:, i + n] for i in starts], dim=1).flatten()
            obs, act, nxt = obs[keep], act[keep], nxt[keep]
        sigma = sample_sigma(
            nxt.shape[0],
            hp.train_sigma_loc,
            hp.train_sigma_scale,
            hp.train_sigma_min,
            hp.train_sigma_max,
            generator=generator,
        ).to(nxt.device)
        loss_den = self.denoiser.loss(nxt, obs, act, sigma, generator=generator)

        # reward / termination over every transition of the clip. Shards do not store the frame after a
        # terminal transition, so a clip's last transition is used only when it ends the episode, with
        # its last frame standing in for the missing final observation.
        rew, end = batch["rewards"], batch["terminals"].bool()
        next_x = torch.cat((x[:, 1:], x[:, -1:]), dim=1)
        logits_rew, logits_end, _ = self.rew_end_model(x, actions, next_x)
        tr_mask = (
            torch.ones_like(end) if mask is None else mask & torch.cat((mask[:, 1:], mask[:, -1:]), dim=1)
        )
        tr_mask = torch.cat((tr_mask[:, :-1], tr_mask[:, -1:] & end[:, -1:]), dim=1)
        target_rew = rew.sign().long().add(1)[tr_mask]
        target_end = end.long()[tr_mask]
        w = hp.rew_event_weight  # the event classes' weight: -1 and +1 rewards, end (DIAMOND: 1)
        w_rew, w_end = logits_rew.new_tensor([w, 1.0, w]), logits_end.new_tensor([1.0, w])
        loss_rew = torch.nn.functional.cross_entropy(logits_rew[tr_mask], target_rew, weight=w_rew)
        loss_end = torch.nn.functional.cross_entropy(logits_end[tr_mask], target_end, weight=w_end)
        return {
            "loss": loss_den + loss_rew + loss_end,
            "loss_denoising": loss_den,
            "loss_rew": loss_rew,
            "loss_end": loss_end,
            "pred_rew": logits_rew[tr_mask].argmax(-1),
            "target_rew": target_rew,
            "pred_end": logits_end[tr_mask].argmax(-1),
            "target_end": target_end,
        }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.losses(batch)
        b = batch["frames"].shape[0]
        for name in ("loss", "loss_denoising", "loss_rew", "loss_end"):
            self.log(f"train/{name}", out[name], prog_bar=name == "loss", batch_size=b)
        return out["loss"]

    # ----------------------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, prefix: str) -> None:
        b, t = batch["actions"].shape
        gen = torch.Generator().manual_seed(batch_idx)
        out = self.losses(batch, generator=gen)
        for name in ("loss", "loss_denoising", "loss_rew", "loss_end"):
            self.log(f"{prefix}/{name}", out[name], on_epoch=True, sync_dist=True, batch_size=b)
        for key, zero_class in (("rew", 1), ("end", 0)):
            c = nonzero_f1_counts(out[f"pred_{key}"], out[f"target_{key}"], zero_class)
            self._f1_counts[key] = self._f1_counts.get(key, torch.zeros(3, device=c.device)) + c
        n = self.hparams.context_length
        horizon = min(self.hparams.rollout_horizon, t - n)
        if horizon >= 1:  # rollouts, copy-last and psnr_next_shuffled, seeded by the batch index
            gen = torch.Generator().manual_seed(batch_idx)
            metrics = evaluate_rollout(
                self.world_model(), batch, gen, context=n, horizon=horizon, prefix=prefix, meter=self
            )
            self.log_dict(metrics, on_epoch=True, sync_dist=True, batch_size=b)

    def _log_f1(self, prefix: str) -> None:
        for key, c in self._f1_counts.items():
            c = self.trainer.strategy.reduce(c, reduce_op="sum") if self.trainer.world_size > 1 else c
            tp, npred, nact = c.tolist()
            f1 = event_f1(tp, npred, nact)
            name = "reward" if key == "rew" else "end"
            # no events: no F1 (W&B, CSV and metrics.json leave it out); the two counts below say why
            if f1 is not None:
                self.log(f"{prefix}/{name}_f1", f1)
            self.log(f"{prefix}/{name}_events", nact)  # nonzero rewards / terminations in the split's clips
            self.log(f"{prefix}/{name}_predicted", npred)  # how many the model predicted (the F1's context)
        self._f1_counts = {}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_f1("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_f1("test")

    # ----------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            (decay if p.ndim >= 2 and "emb" not in name else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": hp.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        warmup = max(1, hp.warmup_steps)
        return adamw_warmup_cosine(
            self, groups, hp.lr, hp.betas, hp.weight_decay, warmup, min_lr=hp.min_lr, eps=hp.eps, offset=0
        )

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """DIAMOND clips each network's gradient norm on its own (denoiser 1.0, reward/end 100)."""
        torch.nn.utils.clip_grad_norm_(self.denoiser.parameters(), self.hparams.max_grad_norm_denoiser)
        torch.nn.utils.clip_grad_norm_(self.rew_end_model.parameters(), self.hparams.max_grad_norm_rew_end)
