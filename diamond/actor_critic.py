"""DIAMOND's agent: a conv encoder, an LSTM cell, a policy head and a value head (DIAMOND §3, App. C).

Structure and `state_dict()` keys as DIAMOND's `src/models/actor_critic.py` (`ActorCritic`), so the
`actor_critic.` keys of a DIAMOND checkpoint load unchanged:

    encoder.encoder  Sequential: Conv3x3(C, ch0), then per level i a SmallResBlock(ch[i-1], ch[i])
                     followed by MaxPool2d(2) where down[i]; a SmallResBlock is
                     x -> skip(x) + Conv3x3(SiLU(GroupNorm(x))), skip a 1x1 conv when widths differ
    lstm             LSTMCell(ch[-1] * (size / 2^sum(down))^2, lstm_dim)
    actor_linear     Linear(lstm_dim, num_actions): policy logits
    critic_linear    Linear(lstm_dim, 1): value

One step sees one frame, float (B, C, H, W) in [-1, 1]. DIAMOND acts by sampling the softmax of the
logits (`src/coroutines/env_loop.py`), in the real environment and in imagination alike; its test
episodes use epsilon 0 (`config/trainer.yaml`, collection.test). `ActorCriticPolicy` wraps the network
as worldplay's `Policy` (common/world_model.py): uint8 frames in, actions out, the LSTM state kept
between calls and zeroed by `reset()`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from common.frames import to_signed
from diamond.blocks import GroupNorm

LSTMCellState = tuple[Tensor, Tensor]  # (hx, cx), each (B, lstm_dim)
AC = "actor_critic."


class SmallResBlock(nn.Module):
    """(B, in, H, W) -> (B, out, H, W): skip(x) + conv3x3(silu(groupnorm(x))). Keys `f.0.norm.*`, `f.2.*`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.f = nn.Sequential(
            GroupNorm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.skip_projection = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.skip_projection(x) + self.f(x)


class ActorCriticEncoder(nn.Module):
    """(B, C, H, W) -> (B, channels[-1], H / 2^sum(down), W / 2^sum(down))."""

    def __init__(self, img_channels: int, channels: list[int], down: list[int]) -> None:
        super().__init__()
        if len(channels) != len(down):
            raise ValueError(f"ActorCriticEncoder: channels {channels} and down {down} differ in length")
        layers: list[nn.Module] = [nn.Conv2d(img_channels, channels[0], 3, padding=1)]
        for i, c in enumerate(channels):
            layers.append(SmallResBlock(channels[max(0, i - 1)], c))
            if down[i]:
                layers.append(nn.MaxPool2d(2))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class ActorCritic(nn.Module):
    """DIAMOND's actor-critic. Keys match DIAMOND's `actor_critic.` state dict with the prefix removed."""

    def __init__(
        self,
        img_channels: int,
        img_size: int,
        num_actions: int,
        lstm_dim: int = 512,
        channels: list[int] = (32, 32, 64, 64),
        down: list[int] = (1, 1, 1, 1),
    ) -> None:
        super().__init__()
        channels, down = [int(c) for c in channels], [int(d) for d in down]
        self.num_actions, self.lstm_dim = num_actions, lstm_dim
        self.frame_shape = (img_size, img_size, img_channels)  # (H, W, C) of the frames it sees
        self.encoder = ActorCriticEncoder(img_channels, channels, down)
        side = img_size // 2 ** sum(down)
        self.lstm = nn.LSTMCell(channels[-1] * side * side, lstm_dim)
        self.critic_linear = nn.Linear(lstm_dim, 1)
        self.actor_linear = nn.Linear(lstm_dim, num_actions)
        # DIAMOND's initialisation: zero heads, Xavier / orthogonal LSTM weights, forget-gate bias 1
        for head in (self.actor_linear, self.critic_linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        nn.init.xavier_uniform_(self.lstm.weight_ih)
        nn.init.orthogonal_(self.lstm.weight_hh)
        nn.init.zeros_(self.lstm.bias_ih)
        nn.init.zeros_(self.lstm.bias_hh)
        with torch.no_grad():
            self.lstm.bias_ih[lstm_dim : 2 * lstm_dim] = 1.0

    def forward(
        self, obs: Tensor, state: LSTMCellState | None = None
    ) -> tuple[Tensor, Tensor, LSTMCellState]:
        """obs: float (B, C, H, W) in [-1, 1]; state: (hx, cx) each (B, lstm_dim), or None for zeros.

        Returns policy logits (B, num_actions), value (B,) and the new (hx, cx). DIAMOND's
        `ActorCritic.predict_act_value`.
        """
        x = self.encoder(obs).flatten(1)
        hx, cx = self.lstm(x, state)
        return self.actor_linear(hx), self.critic_linear(hx).squeeze(1), (hx, cx)


def infer_actor_critic_hparams(
    sd: dict[str, Tensor], frame_size: int, source: str = "state dict", prefix: str = ""
) -> dict | None:
    """ActorCritic keyword arguments (lstm_dim, channels, down) implied by the shapes of `sd`.

    `prefix` is prepended to every key ("actor_critic." for a whole DIAMOND agent). None when `sd` has
    no key under `prefix + "lstm."`, i.e. no agent. The Sequential index of each SmallResBlock tells
    which levels are followed by a (key-less) MaxPool2d; the LSTM input width tells whether the last is.
    """
    if f"{prefix}lstm.weight_ih" not in sd and not any(k.startswith(prefix + "lstm.") for k in sd):
        return None
    enc = f"{prefix}encoder.encoder."
    blocks = sorted(int(k[len(enc) :].split(".")[0]) for k in sd if k.startswith(enc) and ".f.2.weight" in k)
    for key in (f"{prefix}lstm.weight_ih", f"{prefix}lstm.weight_hh", f"{enc}0.weight"):
        if key not in sd:
            raise ValueError(f"{source}: missing key {key!r}")
    if not blocks:
        raise ValueError(f"{source}: missing key {enc + '1.f.2.weight'!r}")
    channels = [int(sd[f"{enc}{j}.f.2.weight"].shape[0]) for j in blocks]
    down = [int(b - a == 2) for a, b in zip(blocks, blocks[1:])]
    lstm_dim = int(sd[f"{prefix}lstm.weight_hh"].shape[1])
    side2 = sd[f"{prefix}lstm.weight_ih"].shape[1] // channels[-1]
    side = math.isqrt(side2)
    total = round(math.log2(frame_size / side)) if side else -1
    last = total - sum(down)
    if side * side * channels[-1] != sd[f"{prefix}lstm.weight_ih"].shape[1] or last not in (0, 1):
        raise ValueError(
            f"{source}: key {prefix + 'lstm.weight_ih'!r} input width "
            f"{sd[f'{prefix}lstm.weight_ih'].shape[1]} does not fit {channels[-1]} channels of a "
            f"{frame_size}x{frame_size} frame after {sum(down)} or {sum(down) + 1} poolings"
        )
    return {"lstm_dim": lstm_dim, "channels": channels, "down": down + [last]}


class ActorCriticPolicy:
    """An ActorCritic as a worldplay Policy: `act(frames uint8 (B, H, W, C)) -> long (B,)`.

    Samples the softmax of the logits (DIAMOND's behaviour; `greedy=True` takes the argmax), from
    `generator` when given. The LSTM state carries over between calls (one call per environment step)
    until `reset()`. After each call `last_logits` (B, A) and `last_value` (B,) hold the network's
    outputs (for a player's header).
    """

    def __init__(self, net: ActorCritic, generator: torch.Generator | None = None, greedy: bool = False):
        self.net = net
        self.num_actions = net.num_actions
        self.generator = generator
        self.greedy = greedy
        self.state: LSTMCellState | None = None
        self.last_logits: Tensor | None = None
        self.last_value: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.net.lstm.weight_hh.device

    def reset(self) -> None:
        """Zero the recurrent state (the next act() starts a new episode)."""
        self.state = None

    @torch.no_grad()
    def act(self, frames: Tensor) -> Tensor:
        """frames: uint8 (B, H, W, C) the current observation -> actions long (B,) in [0, num_actions)."""
        size = self.net.frame_shape
        if frames.ndim != 4 or tuple(frames.shape[1:]) != size:
            raise ValueError(
                f"act: frames must be (B, {', '.join(map(str, size))}) uint8, got {tuple(frames.shape)}"
            )
        if self.state is not None and self.state[0].shape[0] != frames.shape[0]:
            raise ValueError(
                f"act: a batch of {frames.shape[0]} frames, but the policy's state holds "
                f"{self.state[0].shape[0]}: reset() the policy first"
            )
        x = to_signed(frames.to(self.device), channels_first=True)
        self.last_logits, self.last_value, self.state = self.net(x, self.state)
        if self.greedy:
            return self.last_logits.argmax(-1)
        probs = self.last_logits.float().softmax(-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)


# ------------------------------------------------------------------------------------------- training loss
@torch.no_grad()
def lambda_returns(rewards: Tensor, ends: Tensor, next_values: Tensor, gamma: float, lam: float) -> Tensor:
    """λ-returns of a segment whose last step is cut by the horizon (bootstrapped from its next value).

        G_t = r_t + γ (1 - d_t) [(1 - λ) V(s_{t+1}) + λ G_{t+1}]     for t < H - 1
        G_{H-1} = r_{H-1} + γ (1 - d_{H-1}) V(s_H)

    rewards, ends (1: the step ended the episode), next_values = V(s_{t+1}): float (B, H). Returns float
    (B, H), no gradient. DIAMOND's `compute_lambda_returns` (src/models/actor_critic.py) with the
    truncation at the segment's last step, where its imagination horizon equals its backup interval (15).
    """
    if not rewards.shape == ends.shape == next_values.shape or rewards.ndim != 2:
        raise ValueError(
            f"lambda_returns: rewards {tuple(rewards.shape)}, ends {tuple(ends.shape)} and next_values "
            f"{tuple(next_values.shape)} must be the same (B, H)"
        )
    not_end = 1.0 - ends.float()
    out = torch.empty_like(next_values, dtype=torch.float32)
    later = next_values[:, -1].float()  # G_{t+1} stands in for V(s_H) at the last step: λ-mix of equals
    for t in reversed(range(rewards.shape[1])):
        mix = (1 - lam) * next_values[:, t].float() + lam * later
        out[:, t] = rewards[:, t].float() + gamma * not_end[:, t] * mix
        later = out[:, t]
    return out


def actor_critic_loss(
    logits: Tensor,
    actions: Tensor,
    values: Tensor,
    rewards: Tensor,
    ends: Tensor,
    next_values: Tensor,
    valid: Tensor | None = None,
    gamma: float = 0.985,
    lam: float = 0.95,
    weight_value: float = 1.0,
    weight_entropy: float = 0.001,
    sign_rewards: bool = True,
) -> dict[str, Tensor]:
    """DIAMOND's actor-critic objective on an imagined segment (DIAMOND §3 / App. C, `ActorCritic.forward`):

        loss = mean_t[-log π(a_t | s_t) (G_t - V(s_t))]          REINFORCE with the value as baseline
             + weight_value · mean_t[(V(s_t) - G_t)^2]            value regression on λ-returns
             - weight_entropy · mean_t[H(π(· | s_t))]             entropy bonus

    logits (B, H, A), actions long (B, H), values (B, H) with gradient; rewards, ends, next_values
    (B, H) without (`lambda_returns`); valid bool (B, H): the step is inside its episode (False after an
    imagined end), None for all. Rewards become their sign first (`sign_rewards`; DIAMOND clips them so).
    Defaults are DIAMOND's config/trainer.yaml actor_critic_loss. Returns {loss, loss_actions,
    loss_values, loss_entropy, entropy (bits), returns (mean G_t)}.
    """
    if sign_rewards:
        rewards = rewards.sign()
    returns = lambda_returns(rewards, ends, next_values.detach(), gamma, lam)
    valid = torch.ones_like(actions, dtype=torch.bool) if valid is None else valid.bool()
    n = valid.sum().clamp(min=1)
    dist = torch.distributions.Categorical(logits=logits.float())
    entropy = (dist.entropy() * valid).sum() / n
    advantage = (returns - values).detach()
    loss_actions = (-dist.log_prob(actions) * advantage * valid).sum() / n
    loss_values = weight_value * ((values.float() - returns) ** 2 * valid).sum() / n
    loss_entropy = -weight_entropy * entropy
    return {
        "loss": loss_actions + loss_values + loss_entropy,
        "loss_actions": loss_actions.detach(),
        "loss_values": loss_values.detach(),
        "loss_entropy": loss_entropy.detach(),
        "entropy": entropy.detach() / math.log(2),
        "returns": ((returns * valid).sum() / n).detach(),
    }
