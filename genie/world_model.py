"""GenieWorldModel: play a trained Genie frame by frame with latent actions (DESIGN.md WorldModel).

reset(frames) tokenizes real context frames and infers the latent actions between them with the
LAM (any given actions are ignored: Genie's actions are its own latent ones). step(latent_action)
samples the next frame's tokens with MaskGIT and decodes them. Generation is fast because both
ST-transformers are causal in time: the temporal keys/values of the context frames are computed
once per generated frame and reused by every MaskGIT step (`use_cache=False` recomputes them, the
reference the cached path must match). The window holds at most `max_frames` frames, the clip
length the models were trained on; when it slides, the caches are rebuilt once.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from common.frames import to_signed, to_uint8
from common.loader import load_world_model
from common.world_model import Step, check_actions
from genie.dynamics import DynamicsModel
from genie.lam import LatentActionModel
from genie.maskgit import sample_frame
from genie.tokenizer import VideoTokenizer


class GenieWorldModel:
    policy = None  # no agent in these checkpoints (WorldModel.policy)
    latent_actions = True  # actions are the LAM's latent actions; infer_actions reads them from frames
    vector_actions = False

    def __init__(
        self,
        tokenizer: VideoTokenizer,
        lam: LatentActionModel,
        dynamics: DynamicsModel,
        max_frames: int,
        context_length: int = 1,
        maskgit_steps: int = 25,
        temperature: float = 1.0,
        use_cache: bool = True,
        seed: int | None = None,
    ):
        self.tokenizer, self.lam, self.dynamics = tokenizer.eval(), lam.eval(), dynamics.eval()
        self.num_actions = dynamics.num_actions
        self.frame_shape = (tokenizer.frame_size, tokenizer.frame_size, tokenizer.channels)
        self.context_length, self.max_frames = context_length, max_frames
        self.maskgit_steps, self.temperature, self.use_cache = maskgit_steps, temperature, use_cache
        self.device = next(dynamics.parameters()).device
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.seed(seed)
        self.tokens: Tensor | None = None

    def seed(self, seed: int) -> None:
        """MaskGIT's sampling draws from a generator seeded with `seed` from now on (WorldModel.seed)."""
        self.generator.manual_seed(int(seed))

    @torch.inference_mode()
    def reset(self, frames: Tensor, actions: Tensor | None = None) -> None:
        """frames: uint8 (B, T, H, W, C) real context; actions are ignored (latent actions are inferred)."""
        if frames.ndim != 5 or tuple(frames.shape[2:]) != self.frame_shape:
            raise ValueError(f"reset expects frames (B, T, {self.frame_shape}), got {tuple(frames.shape)}")
        x = to_signed(frames[:, -self.max_frames :].to(self.device))
        self.tokens = self.tokenizer.encode(x)[1]
        prev = torch.full(self.tokens.shape[:2], -1, dtype=torch.long, device=self.device)
        if x.shape[1] > 1:
            prev[:, 1:] = self.lam.encode(x)[1]
        self.prev_actions = prev
        self.dyn_kv = self.dec_kv = None

    @torch.inference_mode()
    def infer_actions(self, frames: Tensor) -> Tensor:
        """The latent actions the LAM reads from real frames: uint8 (B, T, H, W, C) -> long (B, T-1).
        Long videos go through the LAM in windows of `max_frames` that overlap by one frame."""
        x = to_signed(frames.to(self.device))
        out = []
        for start in range(0, x.shape[1] - 1, self.max_frames - 1):
            out.append(self.lam.encode(x[:, start : start + self.max_frames])[1])
        return torch.cat(out, dim=1)

    @torch.inference_mode()
    def step(self, actions: Tensor) -> Step:
        """actions: long (B,) latent actions in [0, num_actions) -> Step(frames uint8 (B, H, W, C))."""
        if self.tokens is None:
            raise RuntimeError("GenieWorldModel.step called before reset(frames)")
        act = check_actions(actions, self.num_actions).to(self.device).reshape(-1, 1)  # (B, 1)
        if self.tokens.shape[1] >= self.max_frames:  # slide the window; the first frame has no action
            self.tokens, self.prev_actions = self.tokens[:, 1:], self.prev_actions[:, 1:].clone()
            self.prev_actions[:, 0] = -1
            self.dyn_kv = self.dec_kv = None
        b, _, n = self.tokens.shape
        if self.use_cache:
            if self.dyn_kv is None:
                self.dyn_kv = self.dynamics(self.tokens, self.prev_actions, logits=False)[1]
            last = self.tokens[:, -1:]  # (B, 1, N): the copy gate's source (DynamicsModel)

            def logits_fn(masked: Tensor) -> Tensor:  # (B, N) -> (B, N, vocab), the new frame only
                return self.dynamics(masked[:, None], act, past=self.dyn_kv, prev_tokens=last)[0][:, 0]
        else:
            tokens, prev = self.tokens, torch.cat([self.prev_actions, act], 1)
            before = torch.nn.functional.pad(tokens, (0, 0, 1, 0), value=-1)  # (B, T + 1, N)

            def logits_fn(masked: Tensor) -> Tensor:  # (B, N) -> (B, N, vocab), from the whole window
                window = torch.cat([tokens, masked[:, None]], 1)  # (B, T + 1, N)
                return self.dynamics(window, prev, prev_tokens=before)[0][:, -1]

        new = sample_frame(
            logits_fn,
            b,
            n,
            self.dynamics.mask_id,
            self.maskgit_steps,
            self.temperature,
            self.generator,
            self.device,
        )[:, None]  # (B, 1, N)
        if self.use_cache:
            slides_next = self.tokens.shape[1] + 1 >= self.max_frames  # the next step drops every cache
            self.dyn_kv = None if slides_next else self.dynamics(new, act, past=self.dyn_kv, logits=False)[1]
            if self.dec_kv is None:
                self.dec_kv = self.tokenizer.decode_tokens(self.tokens)[1]
            frame, self.dec_kv = self.tokenizer.decode_tokens(new, past=self.dec_kv)
        else:
            frame = self.tokenizer.decode_tokens(torch.cat([self.tokens, new], 1))[0][:, -1:]
        self.tokens = torch.cat([self.tokens, new], 1)
        self.prev_actions = torch.cat([self.prev_actions, act], 1)
        return Step(frames=to_uint8(frame[:, 0]))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> GenieWorldModel:
        """A dynamics-stage checkpoint (self-contained: it holds the tokenizer too) -> GenieWorldModel."""
        return load_world_model(path, device, family="genie")
