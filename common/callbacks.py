"""Evaluation callback: sample videos (real | generated) and FVD at the end of validation and test.

The LightningModules compute their own val/test metrics (PSNR, rollouts, ΔtPSNR, F1, ...). This
callback adds what needs whole clips and files:

- a sample video from fixed held-out clips (the first `num_videos` clips of the first val/test batch),
  real on the left and generated on the right, one row per clip, written to
  `<run_dir>/videos/<stage>/<split>_step<N>.mp4` and logged to W&B when a WandbLogger is active;
- FVD (`<split>/fvd`) over up to `fvd_num_videos` clips when `fvd_weights` names an I3D TorchScript file;
  FID and LPIPS (`<split>/fid`, `<split>/lpips`) over those clips' generated frames (after the real context)
  against the real ones when `fid_weights` / `lpips_weights` name TorchScript files (common/frame_distances.py);
- after a test, in the run directory (`video_dir` when set): `test_records.json`, the values behind the
  test metrics that a module keeps in `eval_records` (per-clip ΔtPSNR errors with their bootstrap
  interval, the latent action x control table behind action_nmi), merged over stages like metrics.json;
  and, for a world model of latent actions (`WorldModel.latent_actions`: Genie dynamics),
  `latent_actions.mp4` (`latent_action_video`): one row per test level (the first frame of its first test
  clip; `latent_action_levels` levels), one column per latent action held for `latent_action_steps`
  frames, columns labelled with the latent action and the control it matches best with its lift (from
  the `test/action_nmi` record), rows with the level.

Generation goes through the declared interfaces only (common/world_model.py), never by probing a module:
1. a module that plays (`PlaysWorldModel`: `world_model() -> WorldModel`): a rollout from
   `context_length` real frames with the clip's actions (common.evaluation.clip_actions: the batch's, or
   for latent actions those `infer_actions` reads from the frames), the world model seeded with 0 so a
   video shows the same draws each time; the real context is shown on both sides, then `horizon` steps;
2. a stage that reconstructs (`Reconstructs`: tokenizer / VAE, `reconstruct(frames uint8 (B, T, H, W, C))
   -> uint8 (B, T, H, W, C)`);
3. neither: skipped with one info line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from common import frame_distances
from common import fvd as fvd_lib
from common.evaluation import clip_actions, latent_action_video
from common.metrics import rollout
from common.video import labelled_grid, side_by_side, upscale, write_video
from common.world_model import PlaysWorldModel, Reconstructs

log = logging.getLogger(__name__)


class EvalVideoCallback(Callback):
    """Sample videos and FVD at validation/test end. All arguments are primitives (Hydra-friendly).

    num_videos: clips shown in the sample video (rows); 0 disables videos.
    video_fps: frames per second of the written video.
    horizon: rollout steps after the real context (capped by the clip length).
    fvd_weights: path of an I3D TorchScript file (loaded at setup: a wrong path fails at once), or None
        to skip FVD (one line says so).
    fvd_num_videos: clips collected over the split's batches for FVD (and FID / LPIPS).
    fid_weights, lpips_weights: TorchScript feature networks for FID / LPIPS (common/frame_distances.py),
        loaded at setup, or None to skip them (one line says so).
    video_dir: folder for videos; None = `<Hydra run dir>/videos` (or `<trainer.default_root_dir>/videos`).
    upscale_factor: nearest-neighbour upscaling of the written video (64x64 frames are small).
    latent_action_levels: rows (distinct test levels) of latent_actions.mp4; 0 disables it.
    latent_action_steps: frames each latent action is held for in latent_actions.mp4.
    """

    def __init__(
        self,
        num_videos: int = 4,
        video_fps: int = 15,
        horizon: int = 8,
        fvd_weights: str | None = None,
        fvd_num_videos: int = 64,
        video_dir: str | None = None,
        upscale_factor: int = 2,
        latent_action_levels: int = 4,
        latent_action_steps: int = 8,
        fid_weights: str | None = None,
        lpips_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.num_videos = num_videos
        self.video_fps = video_fps
        self.horizon = horizon
        self.fvd_weights = fvd_weights
        self.fvd_num_videos = fvd_num_videos
        self.video_dir = video_dir
        self.upscale_factor = upscale_factor
        self.latent_action_levels = latent_action_levels
        self.latent_action_steps = latent_action_steps
        self._starts: dict[int, Tensor] = {}  # test level seed (or clip index) -> its first frame
        self._detector = None
        self.frame_weights = {"FID": fid_weights, "LPIPS": lpips_weights}
        self._frame_nets: dict = {}  # "FID" / "LPIPS" -> loaded network
        self._context = 0  # real context frames at the start of the collected clips
        self._fvd_skip_logged = False
        self._skip_logged: set[str] = set()
        self._reset()
        self.written: list[Path] = []  # videos written so far (tests and users can read it)

    # ------------------------------------------------------------------------------------ state

    def _reset(self) -> None:
        self._clips: dict | None = None
        self._fvd_real: list[Tensor] = []
        self._fvd_fake: list[Tensor] = []

    def _fvd_enabled(self) -> bool:
        if not self.fvd_weights:
            if not self._fvd_skip_logged:
                log.info(fvd_lib.skip_reason(None))
                self._fvd_skip_logged = True
            return False
        if self._detector is None:
            self._detector = fvd_lib.load_i3d(self.fvd_weights)
        return True

    def _frame_networks(self) -> dict:
        """The FID / LPIPS networks given (loaded once); a missing one is logged once and skipped."""
        for metric, weights in self.frame_weights.items():
            if not weights:
                if metric not in self._skip_logged:
                    log.info(frame_distances.skip_reason(metric, None))
                    self._skip_logged.add(metric)
            elif metric not in self._frame_nets:
                self._frame_nets[metric] = frame_distances.load_network(metric, weights)
        return self._frame_nets

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Load the I3D, FID and LPIPS files before any step: a wrong path fails at once, in one line."""
        if self.fvd_weights and self._detector is None:
            self._detector = fvd_lib.load_i3d(self.fvd_weights)
        self._frame_networks()

    # ------------------------------------------------------------------------------------ hooks

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()
        self._starts = {}

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not trainer.sanity_checking:
            self._collect(pl_module, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(pl_module, batch, batch_idx, dataloader_idx)
        if dataloader_idx == 0 and isinstance(batch, dict) and "frames" in batch:
            self._collect_starts(pl_module, batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After the module's epoch end (its eval_records are complete) and before common.ema swaps the
        averaged weights out (callbacks run in list order; conf/callbacks/default.yaml lists ema last)."""
        if trainer.is_global_zero:
            records = getattr(pl_module, "eval_records", None)
            if records:
                self._safely(self._write_records, trainer, pl_module, records, what="test records")
            if self._starts:  # held only for a world model of latent actions
                self._safely(self._write_latent_actions, trainer, pl_module, what="latent action video")
        self._starts = {}

    # ------------------------------------------------------------------------------------ work

    def _collect(self, pl_module: LightningModule, batch, batch_idx: int, dataloader_idx: int) -> None:
        if dataloader_idx != 0 or not isinstance(batch, dict) or "frames" not in batch:
            return
        if self._clips is None and self.num_videos > 0:
            self._clips = {
                k: v[: self.num_videos].detach().cpu() for k, v in batch.items() if torch.is_tensor(v)
            }
        collected = sum(v.shape[0] for v in self._fvd_real)
        if collected < self.fvd_num_videos and (self._fvd_enabled() | bool(self._frame_networks())):
            pair = self._safely(self._generate, pl_module, batch, what="FVD clips")
            if pair is not None:
                real, fake = pair
                take = self.fvd_num_videos - collected
                self._fvd_real.append(real[:take].cpu())
                self._fvd_fake.append(fake[:take].cpu())

    def _finish(self, trainer: Trainer, pl_module: LightningModule, split: str) -> None:
        if self._clips is not None and trainer.is_global_zero:
            clips = {k: v.to(pl_module.device) for k, v in self._clips.items()}
            pair = self._safely(self._generate, pl_module, clips, what="sample video")
            if pair is not None:
                self._safely(self._write_video, trainer, pl_module, split, *pair, what="sample video")
        if self._fvd_real:
            real, fake = torch.cat(self._fvd_real), torch.cat(self._fvd_fake)
            if real.shape[0] >= 2 and self._detector is not None:
                value = fvd_lib.fvd(self._detector, real, fake)
                pl_module.log(f"{split}/fvd", value, on_epoch=True, sync_dist=True, batch_size=real.shape[0])
            elif self._detector is not None:
                log.info(f"FVD skipped for {split}: only {real.shape[0]} clip(s) collected, need at least 2")
            frames_real = real[:, self._context :].flatten(0, 1)  # the generated frames and their targets
            frames_fake = fake[:, self._context :].flatten(0, 1)
            for metric, net in self._frame_networks().items():
                distance = frame_distances.fid if metric == "FID" else frame_distances.lpips
                value = self._safely(distance, net, frames_real, frames_fake, what=f"{metric} for {split}")
                if value is not None:
                    n = frames_real.shape[0]
                    pl_module.log(
                        f"{split}/{metric.lower()}", value, on_epoch=True, sync_dist=True, batch_size=n
                    )
        self._reset()

    @torch.inference_mode()
    def _generate(self, pl_module: LightningModule, batch: dict) -> tuple[Tensor, Tensor] | None:
        """(real, generated) uint8 (B, T', H, W, C) for the batch, or None when the module cannot generate."""
        frames = batch["frames"]
        was_training = pl_module.training
        pl_module.eval()
        try:
            if isinstance(pl_module, PlaysWorldModel):
                world_model = pl_module.world_model()
                context = max(1, int(world_model.context_length))
                horizon = min(self.horizon, frames.shape[1] - context)
                if horizon < 1:
                    return self._skip(
                        f"clips of {frames.shape[1]} frames leave no step after {context} context"
                    )
                world_model.seed(0)
                self._context = context
                generated = rollout(world_model, frames, clip_actions(world_model, batch), context, horizon)
                real = frames[:, : context + horizon]
                return real, torch.cat([frames[:, :context], generated.to(frames.device)], dim=1)
            if isinstance(pl_module, Reconstructs):
                return frames, pl_module.reconstruct(frames)
            return self._skip(f"{type(pl_module).__name__} has neither world_model() nor reconstruct()")
        finally:
            pl_module.train(was_training)

    @staticmethod
    def _safely(fn, *args, what: str):
        """Evaluation extras never stop a training run: a failure is one warning line, then skipped."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - reported, the run goes on
            log.warning(f"{what} skipped: {type(e).__name__}: {e}")
            return None

    def _skip(self, why: str) -> None:
        if why not in self._skip_logged:
            log.info(f"eval videos skipped: {why}")
            self._skip_logged.add(why)
        return None

    def _out_dir(self, trainer: Trainer) -> Path:
        if self.video_dir:
            return Path(self.video_dir)
        return self._run_dir(trainer) / "videos"

    def _run_dir(self, trainer: Trainer) -> Path:
        """Where test records and latent_actions.mp4 go: `video_dir` when set, else the run directory."""
        if self.video_dir:
            return Path(self.video_dir)
        try:
            from hydra.core.hydra_config import HydraConfig

            return Path(HydraConfig.get().runtime.output_dir)
        except (ImportError, ValueError):
            return Path(trainer.default_root_dir)

    def _collect_starts(self, pl_module: LightningModule, batch: dict) -> None:
        """Keep the first frame of the first clip of each new test level (batch["seeds"]; without seeds,
        of each clip) until `latent_action_levels` are held; only for a world model of latent actions."""
        if len(self._starts) >= self.latent_action_levels or not _plays_latent_actions(pl_module):
            return
        frames = batch["frames"]
        seeds = batch.get("seeds")
        for i in range(frames.shape[0]):
            if len(self._starts) >= self.latent_action_levels:
                return
            key = int(seeds[i]) if seeds is not None else len(self._starts)
            if key not in self._starts:
                self._starts[key] = frames[i, 0].detach().cpu()

    def _write_records(self, trainer: Trainer, pl_module: LightningModule, records: dict) -> None:
        """Merge `records` (metric name -> JSON-ready dict) into <run dir>/test_records.json, atomically."""
        import json
        import os

        path = self._run_dir(trainer) / "test_records.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = json.loads(path.read_text()) if path.is_file() else {}
        stage = getattr(pl_module, "stage", "") or "model"
        for name, record in records.items():
            merged[name] = {"stage": stage, "global_step": trainer.global_step, **record}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, path)
        self.written.append(path)

    @torch.inference_mode()
    def _write_latent_actions(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """latent_actions.mp4: rows = test levels, columns = latent actions, labelled (module docstring)."""
        levels = list(self._starts)
        starts = torch.stack([self._starts[k] for k in levels]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            cells = _as_uint8(latent_action_video(pl_module.world_model(), starts, self.latent_action_steps))
        finally:
            pl_module.train(was_training)
        probe = (getattr(pl_module, "eval_records", None) or {}).get("test/action_nmi") or {}
        best, lift = probe.get("best_control"), probe.get("best_lift")
        columns = []
        for a in range(cells.shape[1]):
            label = f"latent {a}"
            if best and best[a] is not None:  # the control it matches: x lift = P(control | a) / P(control)
                label += f"\n{best[a]} {lift[a]:.1f}x"
            columns.append(label)
        rows = [f"level {k}" for k in levels]
        grid = labelled_grid(cells, columns, rows, self.upscale_factor)
        path = write_video(self._run_dir(trainer) / "latent_actions.mp4", grid, fps=self.video_fps)
        self.written.append(path)

    def _write_video(self, trainer: Trainer, pl_module: LightningModule, split: str, real, fake) -> None:
        """Rows of real | generated, one per clip, written as mp4 and sent to W&B."""
        real, fake = _as_uint8(real), _as_uint8(fake)
        rows = [side_by_side(r, f) for r, f in zip(real, fake)]  # each (T, H, 2W + gap, C)
        gap = np.full((rows[0].shape[0], 2, rows[0].shape[2], rows[0].shape[3]), 255, dtype=np.uint8)
        parts = []
        for i, row in enumerate(rows):
            parts += [row] if i == 0 else [gap, row]
        grid = upscale(np.concatenate(parts, axis=1), self.upscale_factor)
        stage = getattr(pl_module, "stage", "") or "model"
        path = self._out_dir(trainer) / stage / f"{split}_step{trainer.global_step}.mp4"
        write_video(path, grid, fps=self.video_fps)
        self.written.append(path)
        for logger in trainer.loggers:
            if any(c.__name__ == "WandbLogger" for c in type(logger).__mro__):  # Lightning's or a subclass
                import wandb

                video = wandb.Video(str(path), fps=self.video_fps, format="mp4")
                logger.experiment.log({f"{split}/video": video, "trainer/global_step": trainer.global_step})


def _plays_latent_actions(pl_module: LightningModule) -> bool:
    return isinstance(pl_module, PlaysWorldModel) and pl_module.world_model().latent_actions


def _as_uint8(video: Tensor | np.ndarray) -> np.ndarray:
    """(B, T, H, W, C) tensor/array -> uint8 numpy; float input is taken as [0, 1]."""
    array = video.detach().cpu() if isinstance(video, Tensor) else torch.as_tensor(video)
    if array.dtype != torch.uint8:
        array = (array.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return array.numpy()
