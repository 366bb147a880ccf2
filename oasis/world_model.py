"""OasisWorldModel: ViT-VAE latents + causal DiT sampled with diffusion forcing, one frame per step.

Frame j of the model is conditioned on the action that led to it (the action taken at frame j - 1;
zeros for the first frame). `reset(frames, actions)` encodes the real context; `step(actions)`
samples the next latent with DDIM (context at stabilization_level - 1, sliding window of max_frames,
cached context keys / values), decodes it and appends it to the context.

Actions: long (B,) indices (one-hot over num_actions), or float (B, num_actions) vectors (multi-hot,
or Oasis' 25-d Minecraft action vectors with continuous camera entries).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from common.world_model import Step, check_actions
from oasis.diffusion import DiffusionForcing
from oasis.dit import DiT
from oasis.vae import AutoencoderKL


class OasisWorldModel:
    policy = None  # no agent in these checkpoints (WorldModel.policy)

    def __init__(
        self,
        vae: AutoencoderKL,
        dit: DiT,
        diffusion: DiffusionForcing,
        scaling_factor: float,
        num_actions: int,
        context_length: int = 1,
        use_cache: bool = True,
    ):
        self.vae, self.dit, self.diffusion = vae.eval(), dit.eval(), diffusion
        self.scaling_factor = float(scaling_factor)
        self.num_actions = num_actions
        self.frame_shape = (vae.input_height, vae.input_width, 3)
        self.context_length = context_length
        self.use_cache = use_cache
        self.latents: Tensor | None = None  # (B, T, C, h, w), scaled
        self.conds: Tensor | None = None  # (B, T, A)

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    # ---- frames <-> latents ---------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, H, W, C) -> scaled latents (B, T, C, h, w) (posterior means)."""
        b = frames.shape[0]
        x = rearrange(frames.to(self.device), "b t h w c -> (b t) c h w").float() / 127.5 - 1.0
        z = self.vae.encode(x).mean * self.scaling_factor
        return rearrange(z, "(b t) (h w) c -> b t c h w", b=b, h=self.vae.seq_h)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """scaled latents (N, C, h, w) -> uint8 (N, H, W, C)."""
        x = self.vae.decode(rearrange(latents, "n c h w -> n (h w) c") / self.scaling_factor)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)

    def action_vectors(self, actions: Tensor) -> Tensor:
        """long (...) indices -> one-hot (..., A); float (..., A) vectors pass through."""
        actions = torch.as_tensor(actions)
        if actions.is_floating_point():
            if actions.shape[-1] != self.num_actions:
                n = actions.shape[-1]
                raise ValueError(f"action vectors have {n} entries, this model takes {self.num_actions}")
            return actions.to(self.device, torch.float32)
        actions = check_actions(actions, self.num_actions)
        return F.one_hot(actions, self.num_actions).float().to(self.device)

    # ---- WorldModel interface -------------------------------------------------------------------

    def reset(self, frames: Tensor, actions: Tensor | None = None) -> None:
        """frames uint8 (B, T, H, W, C) real context; actions long (B, T) or float (B, T, A), or None."""
        if frames.dim() != 5 or tuple(frames.shape[2:]) != self.frame_shape:
            raise ValueError(f"reset expects uint8 frames (B, T, {', '.join(map(str, self.frame_shape))}), "
                             f"got {tuple(frames.shape)}")  # fmt: skip
        b, t = frames.shape[:2]
        keep = self.dit.max_frames - 1
        self.latents = self.encode(frames[:, -keep:])
        conds = torch.zeros(b, t, self.num_actions, device=self.device)
        if actions is not None and t > 1:
            conds[:, 1:] = self.action_vectors(actions[:, : t - 1])
        self.conds = conds[:, -keep:]

    @torch.no_grad()
    def step(self, actions: Tensor) -> Step:
        """actions (B,) long or (B, A) float -> Step(frames uint8 (B, H, W, C))."""
        if self.latents is None:
            raise RuntimeError("call reset(frames) before step()")
        cond = self.action_vectors(actions)
        z = self.diffusion.sample_next(
            self.dit, self.latents, self.conds, cond, self.dit.max_frames, use_cache=self.use_cache
        )
        keep = self.dit.max_frames - 1
        self.latents = torch.cat((self.latents, z[:, None]), dim=1)[:, -keep:]
        self.conds = torch.cat((self.conds, cond[:, None]), dim=1)[:, -keep:]
        return Step(frames=self.decode(z).cpu())

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> OasisWorldModel:
        """A `dit`-stage checkpoint (trained here or written by `python -m oasis.convert`)."""
        from common.checkpoint import check_family
        from oasis.module import OasisDiTModule

        check_family(path, "oasis", "dit")
        module = OasisDiTModule.load_from_checkpoint(path, map_location=device, weights_only=True)
        return module.to(device).world_model()
