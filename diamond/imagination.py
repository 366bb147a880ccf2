"""Imagined rollouts: DIAMOND's agent acting inside its world model, never in the real environment.

From real context frames of the dataset, as DIAMOND's `WorldModelEnv` with its env loop
(`src/envs/world_model_env.py`, `src/coroutines/env_loop.py`):

1. the world model is reset on the `n = context_length` frames and the actions taken at them, which burns
   its reward/end LSTM in over the n - 1 context transitions;
2. the agent's LSTM is burnt in on the first n - 1 context frames (without gradient: the burn-in only
   sets the state);
3. for `horizon` steps the agent acts on the frame on show (actions sampled from its softmax), the
   world model's sampler generates the next frame and its reward/end model samples a reward sign and an
   end flag. The agent sees generated frames as uint8, as it sees real ones.

The loss needs the agent's outputs with their gradient (logits, values: backpropagated through the
LSTM over the whole segment, as DIAMOND does) and the bootstrap value V(s_H) of the frame after the
last step. DIAMOND restarts an imagined episode that ends within its 15-step segment from new real
frames; here the steps after an end are marked invalid and left out of the loss (`Imagined.valid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from common.frames import to_signed
from diamond.actor_critic import ActorCritic


@dataclass
class Imagined:
    """An imagined segment of B episodes, H steps, A actions.

    logits float (B, H, A) and values float (B, H) carry the agent's gradient; actions long (B, H);
    rewards float (B, H) in {-1, 0, 1}; ends float (B, H), 1 where the world model predicted the end;
    next_values float (B, H) = V(s_{t+1}) without gradient (the last one the bootstrap V(s_H));
    valid bool (B, H): step t is inside its episode (no end predicted before t);
    frames uint8 (B, H, H_img, W_img, C): the generated frames, when asked for, else None.
    """

    logits: Tensor
    values: Tensor
    actions: Tensor
    rewards: Tensor
    ends: Tensor
    next_values: Tensor
    valid: Tensor
    frames: Tensor | None = None

    @property
    def returns(self) -> Tensor:
        """Sum of the predicted rewards of each episode's valid steps: float (B,)."""
        return (self.rewards * self.valid).sum(1)


def _to_model(frames: Tensor) -> Tensor:
    """uint8 (B, H, W, C) -> the agent's input float (B, C, H, W) in [-1, 1], channels_last."""
    return to_signed(frames, channels_first=True).contiguous(memory_format=torch.channels_last)


def imagine(
    actor_critic: ActorCritic,
    world_model,
    frames: Tensor,
    actions: Tensor,
    horizon: int,
    generator: torch.Generator | None = None,
    keep_frames: bool = False,
) -> Imagined:
    """Roll the agent out for `horizon` steps in `world_model` from real context frames.

    actor_critic: the agent being trained (gradient kept); world_model: a DiamondWorldModel (any
    WorldModel whose step() returns rewards and ends), frozen; frames uint8 (B, n, H, W, C) with
    n >= world_model.context_length real frames, actions long (B, n) taken at them; generator: the
    agent's action sampling (None: torch's global generator). Raises ValueError (one line) when the
    world model predicts no rewards or ends.
    """
    n = world_model.context_length
    if frames.ndim != 5 or frames.shape[1] < n or actions.shape != frames.shape[:2]:
        raise ValueError(
            f"imagine: frames (B, T >= {n}, H, W, C) and actions (B, T) expected, got "
            f"{tuple(frames.shape)} and {tuple(actions.shape)}"
        )
    if horizon < 1:
        raise ValueError(f"imagine: horizon must be >= 1, got {horizon}")
    frames, actions = frames[:, -n:], actions[:, -n:]
    device = next(actor_critic.parameters()).device
    world_model.reset(frames, actions)
    state = None
    with torch.no_grad():  # burn-in: the agent's state after the context frames before the last
        for t in range(n - 1):
            _, _, state = actor_critic(_to_model(frames[:, t].to(device)), state)
    obs = frames[:, -1].to(device)
    logits, values, acts, rewards, ends, shown = [], [], [], [], [], []
    for _ in range(horizon):
        step_logits, value, state = actor_critic(_to_model(obs), state)
        probs = step_logits.detach().float().softmax(-1)
        action = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        step = world_model.step(action)
        if step.reward is None or step.done is None:
            raise ValueError(
                "imagine: the world model predicts no rewards or ends (no reward/end model): "
                "an agent cannot learn in it"
            )
        logits.append(step_logits)
        values.append(value)
        acts.append(action)
        rewards.append(step.reward.to(device).float())
        ends.append(step.done.to(device).float())
        obs = step.frames.to(device)
        if keep_frames:
            shown.append(obs)
    with torch.no_grad():
        _, last_value, _ = actor_critic(_to_model(obs), state)  # V(s_H); the state does not advance
    values_t = torch.stack(values, 1)
    ends_t = torch.stack(ends, 1)
    ended_before = torch.cat((torch.zeros_like(ends_t[:, :1]), ends_t[:, :-1].cumsum(1)), 1) > 0
    return Imagined(
        logits=torch.stack(logits, 1),
        values=values_t,
        actions=torch.stack(acts, 1),
        rewards=torch.stack(rewards, 1),
        ends=ends_t,
        next_values=torch.cat((values_t[:, 1:].detach(), last_value[:, None]), 1),
        valid=~ended_before,
        frames=torch.stack(shown, 1) if keep_frames else None,
    )
