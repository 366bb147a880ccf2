"""OasisWorldModel: ViT-VAE latents + causal DiT sampled with diffusion forcing, one frame per step.

Frame j of the model is conditioned on the action that led to it (the action taken at frame j - 1;
zeros for the first frame). `reset(frames, actions)` encodes the real context; `step(actions)`
samples the next latent with DDIM (`sample_next`: context at stabilization_level - 1, sliding window of
max_frames, cached context keys / values), decodes it and appends it to the context.

Actions: long (B,) indices (one-hot over num_actions), or float (B, num_actions) vectors (multi-hot,
or Oasis' 25-d Minecraft action vectors with continuous camera entries).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from common.frames import to_signed, to_uint8
from common.loader import load_world_model
from common.world_model import Step, check_actions
from oasis.diffusion import DiffusionForcing
from oasis.dit import DiT
from oasis.vae import AutoencoderKL


@torch.no_grad()
def sample_next(
    dit: nn.Module,
    diffusion: DiffusionForcing,
    context: Tensor,
    context_cond: Tensor | None,
    cond: Tensor | None,
    max_frames: int,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The latent frame after `context`, sampled with DDIM (open-oasis generate.py, one new frame).

    context (B, T, C, H, W) clean latents (T >= 1), of which the last max_frames - 1 are used (sliding
    window); context_cond (B, T, A) their conditions (zeros when None and cond is given); cond (B, A) the
    new frame's condition (the action that leads to it). Returns (B, C, H, W).

    use_cache (needs a `DiT`): the context runs through the network once (`DiT.context_kv`) and each DDIM
    step runs only the new frame against its cached temporal keys / values, with the per-step conditioning
    computed up front (`DiT.prepare_steps`). Without it every step recomputes the whole window
    (`dit(x, t, cond)`, any v-prediction network), as open-oasis does. Both give the same frame.
    """
    b = context.shape[0]
    if cond is not None and context_cond is None:  # unconditioned context frames
        context_cond = cond.new_zeros(*context.shape[:2], cond.shape[-1])
    keep = max_frames - 1
    context = context[:, -keep:]
    context_cond = None if context_cond is None else context_cond[:, -keep:]
    dev = context.device
    x = diffusion.initial_noise(context[:, :1].shape, dev, generator)  # (B, 1, C, H, W)
    t_ctx = torch.full(context.shape[:2], diffusion.context_level, dtype=torch.long, device=dev)
    new_cond = None if cond is None else cond[:, None]
    timesteps = diffusion.ddim_timesteps()
    t_steps = torch.tensor([t for t, _ in timesteps], device=dev).expand(b, -1)  # (B, S)
    if use_cache:
        past = dit.context_kv(context, t_ctx, context_cond, spare=1)  # a free slot for the new frame
        prepared = dit.prepare_steps(t_steps, new_cond, past)
    else:
        full_cond = None if cond is None else torch.cat((context_cond, new_cond), dim=1)
    for j, (t, t_next) in enumerate(timesteps):
        t_now = t_steps[:, j : j + 1]
        if use_cache:
            v = dit.forward_cached(x, t_now, new_cond, past, prepared[j])
        else:
            v = dit(torch.cat((context, x), 1), torch.cat((t_ctx, t_now), 1), full_cond)[:, -1:]
        x = diffusion.ddim_step(x, v, t, t_next)
    return x[:, 0]


class OasisWorldModel:
    policy = None  # no agent in these checkpoints (WorldModel.policy)
    latent_actions = False  # the environment's actions (WorldModel.latent_actions)
    infer_actions = None
    vector_actions = True  # step() also takes float (B, num_actions) vectors: `action_vectors`

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
        self.generator: torch.Generator | None = None  # the DDIM noise's (CPU); None: torch's global RNG

    def seed(self, seed: int) -> None:
        """The DDIM starting noise comes from a CPU generator seeded with `seed` from now on (the same
        frames on any device; WorldModel.seed)."""
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    # ---- frames <-> latents ---------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, H, W, C) -> scaled latents (B, T, C, h, w) (posterior means)."""
        b = frames.shape[0]
        x = to_signed(rearrange(frames.to(self.device), "b t h w c -> (b t) h w c"), channels_first=True)
        z = self.vae.encode(x).mean * self.scaling_factor
        return rearrange(z, "(b t) (h w) c -> b t c h w", b=b, h=self.vae.seq_h)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """scaled latents (N, C, h, w) -> uint8 (N, H, W, C)."""
        x = self.vae.decode(rearrange(latents, "n c h w -> n (h w) c") / self.scaling_factor)
        return to_uint8(x, channels_first=True)

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
        z = sample_next(
            self.dit, self.diffusion, self.latents, self.conds, cond, self.dit.max_frames, self.use_cache,
            self.generator,
        )  # fmt: skip
        keep = self.dit.max_frames - 1
        self.latents = torch.cat((self.latents, z[:, None]), dim=1)[:, -keep:]
        self.conds = torch.cat((self.conds, cond[:, None]), dim=1)[:, -keep:]
        return Step(frames=self.decode(z).cpu())

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> OasisWorldModel:
        """A `dit`-stage checkpoint (trained here or written by `python -m oasis.convert`)."""
        return load_world_model(path, device, family="oasis")
