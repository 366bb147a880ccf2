"""DiamondWorldModel: DIAMOND as a worldplay WorldModel (play, evaluation, benchmarks).

reset() keeps the last `context_length` (4) real frames and actions and burns the reward/end LSTM in
over the transitions of all given frames; step(a) replaces the last action by a, samples the next frame
with the diffusion sampler, samples a reward in {-1, 0, 1} and a done flag from the reward/end
model's logits (as DIAMOND's WorldModelEnv does), then shifts the frame/action buffers.
`policy` is DIAMOND's agent when the checkpoint carries one (diamond/actor_critic.py), else None;
reset() resets its recurrent state.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from common.frames import to_signed, to_uint8
from common.loader import load_world_model
from common.world_model import Policy, Step, check_actions
from diamond.denoiser import Denoiser
from diamond.reward_end import RewEndModel
from diamond.sampler import DiffusionSampler


class DiamondWorldModel:
    latent_actions = False  # the environment's actions (WorldModel.latent_actions)
    infer_actions = None
    vector_actions = False

    def __init__(
        self,
        denoiser: Denoiser,
        rew_end_model: RewEndModel,
        sampler: DiffusionSampler,
        num_actions: int,
        frame_shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.denoiser = denoiser
        self.rew_end_model = rew_end_model
        self.sampler = sampler
        self.num_actions = num_actions
        self.frame_shape = tuple(frame_shape)
        self.context_length = denoiser.inner_model.num_steps_conditioning
        self.generator = generator
        self.policy = policy
        self.obs: Tensor | None = None  # (B, n, C, H, W) in [-1, 1]
        self.act: Tensor | None = None  # (B, n) long
        self.state: tuple[Tensor, Tensor] | None = None  # reward/end LSTM state

    @property
    def device(self) -> torch.device:
        return self.denoiser.inner_model.noise_emb.weight.device

    def seed(self, seed: int) -> None:
        """The sampler's noise and the reward / end draws come from a generator on the model's device
        seeded with `seed` from now on (WorldModel.seed)."""
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def _sample(self, logits: Tensor) -> Tensor:
        """One class per row of logits (B, K) -> long (B,), drawn from `generator` (Categorical's draw)."""
        return torch.multinomial(logits.softmax(-1), 1, True, generator=self.generator)[:, 0]

    @torch.no_grad()
    def reset(self, frames: Tensor, actions: Tensor | None = None) -> None:
        """frames: uint8 (B, T, H, W, C), T >= context_length; actions: long (B, T) taken at those frames."""
        n = self.context_length
        if frames.ndim != 5 or frames.shape[1] < n or tuple(frames.shape[2:]) != self.frame_shape:
            raise ValueError(
                f"reset: frames must be (B, T >= {n}, {', '.join(map(str, self.frame_shape))}) uint8, "
                f"got {tuple(frames.shape)}"
            )
        b, t = frames.shape[:2]
        if actions is None:
            actions = torch.zeros(b, t, dtype=torch.long)
        actions = check_actions(actions, self.num_actions).to(self.device)
        if tuple(actions.shape) != (b, t):
            raise ValueError(f"reset: actions must be ({b}, {t}), got {tuple(actions.shape)}")
        x = to_signed(frames.to(self.device), channels_first=True)
        self.obs, self.act, self.state = x[:, -n:].clone(), actions[:, -n:].clone(), None
        if self.policy is not None:
            self.policy.reset()
        if t >= 2:  # burn-in of the reward/end model over the context transitions
            _, _, self.state = self.rew_end_model(x[:, :-1], actions[:, :-1], x[:, 1:])

    @torch.no_grad()
    def step(self, actions: Tensor) -> Step:
        """actions: long (B,) -> Step(frames uint8 (B, H, W, C), reward (B,) in {-1, 0, 1}, done (B,))."""
        if self.obs is None:
            raise RuntimeError("step() before reset(): give the world model its context frames first")
        actions = check_actions(actions, self.num_actions).to(self.device).reshape(-1)
        if actions.shape[0] != self.obs.shape[0]:
            raise ValueError(f"step: {actions.shape[0]} actions for a batch of {self.obs.shape[0]}")
        self.act[:, -1] = actions
        next_obs, _ = self.sampler.sample(self.obs, self.act, generator=self.generator)
        logits_rew, logits_end, self.state = self.rew_end_model(
            self.obs[:, -1:], self.act[:, -1:], next_obs.unsqueeze(1), self.state
        )
        reward = self._sample(logits_rew[:, 0]).float() - 1.0
        done = self._sample(logits_end[:, 0]).bool()
        self.obs = torch.cat((self.obs[:, 1:], next_obs.unsqueeze(1)), dim=1)
        self.act = torch.cat((self.act[:, 1:], torch.zeros_like(self.act[:, :1])), dim=1)
        return Step(frames=to_uint8(next_obs, channels_first=True), reward=reward, done=done)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> DiamondWorldModel:
        """A DIAMOND checkpoint (trained here or written by `python -m diamond.convert`)."""
        return load_world_model(path, device, family="diamond")
