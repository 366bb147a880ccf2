"""DIAMOND's reward / termination model: a CNN over (o_t, o_{t+1}) conditioned on a_t, then an LSTM.

Per transition the encoder sees both frames stacked on channels and the action embedding (through the
adaptive GroupNorm of its residual blocks); an LSTM carries state across transitions; a 2-layer head
emits 3 reward logits (sign of the reward + 1: -1, 0, +1) and 2 termination logits (not end, end).
In a rollout the LSTM is first "burnt in" over the transitions of the real context frames.
Frames are float in [-1, 1] (B, T, C, H, W); actions long (B, T).

`next_frame=False` (not DIAMOND's) gives the encoder (o_t, o_t) in place of (o_t, o_{t+1}), with the same
weights' shapes: the reward of a transition is then predicted from the frames and actions up to it, not
read off the frame it produced. Where the world model's generated frames barely respond to the action
(a small model, a small sprite), a reward model that reads the next frame pays imagined rewards that do
not depend on the agent's action, and an agent trained on them learns nothing about its actions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from diamond.blocks import Downsample, ResBlocks

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (1, B, lstm_dim)


class RewEndEncoder(nn.Module):
    """(B, in_channels, H, W), cond (B, D) -> (B, channels[-1], H / 2^(L-1), W / 2^(L-1)).

    One ResBlocks level per entry of `depths` (downsampling before every level but the first), then
    two ResBlocks with self-attention at the lowest resolution.
    """

    def __init__(
        self,
        in_channels: int,
        cond_channels: int,
        depths: list[int],
        channels: list[int],
        attn_depths: list[bool],
    ) -> None:
        super().__init__()
        if not len(depths) == len(channels) == len(attn_depths):
            raise ValueError(
                f"RewEndEncoder: depths {depths}, channels {channels}, attn_depths {attn_depths} differ"
            )
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        blocks = []
        for i, n in enumerate(depths):
            c_prev, c = channels[max(0, i - 1)], channels[i]
            blocks.append(ResBlocks([c_prev] + [c] * (n - 1), [c] * n, cond_channels, bool(attn_depths[i])))
        blocks.append(ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True))
        self.blocks = nn.ModuleList(blocks)
        self.downsamples = nn.ModuleList(
            [nn.Identity()] + [Downsample(c) for c in channels[:-1]] + [nn.Identity()]
        )

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block, down in zip(self.blocks, self.downsamples):
            x, _ = block(down(x), cond)
        return x


class RewEndModel(nn.Module):
    """Reward-sign and termination classifier over transitions. Keys match DIAMOND's `rew_end_model.`."""

    def __init__(
        self,
        img_channels: int,
        img_size: int,
        num_actions: int,
        lstm_dim: int,
        cond_channels: int,
        depths: list[int],
        channels: list[int],
        attn_depths: list[bool],
        next_frame: bool = True,
    ) -> None:
        super().__init__()
        self.next_frame = bool(next_frame)
        self.encoder = RewEndEncoder(2 * img_channels, cond_channels, depths, channels, attn_depths)
        self.act_emb = nn.Embedding(num_actions, cond_channels)
        lstm_in = channels[-1] * (img_size // 2 ** (len(depths) - 1)) ** 2
        self.lstm = nn.LSTM(lstm_in, lstm_dim, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(lstm_dim, lstm_dim), nn.SiLU(), nn.Linear(lstm_dim, 3 + 2, bias=False)
        )
        self._init_lstm()

    def _init_lstm(self) -> None:
        """Xavier input weights, orthogonal recurrent weights, zero biases except a forget-gate bias of 1."""
        for name, p in self.lstm.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(p)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)
                if name.startswith("bias_ih"):
                    n = p.shape[0]
                    nn.init.ones_(p[n // 4 : n // 2])

    def forward(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, state: LSTMState | None = None
    ) -> tuple[Tensor, Tensor, LSTMState]:
        """obs, next_obs: (B, T, C, H, W); act: (B, T); state: LSTM (h, c) or None (zeros).

        Returns reward logits (B, T, 3), end logits (B, T, 2) and the LSTM state after the last step.
        Without `next_frame`, next_obs is not read (obs stands in for it).
        """
        b, t = act.shape
        x = torch.cat((obs, next_obs if self.next_frame else obs), dim=2)
        x = self.encoder(
            rearrange(x, "b t c h w -> (b t) c h w"), self.act_emb(rearrange(act, "b t -> (b t)"))
        )
        x, state = self.lstm(rearrange(x, "(b t) c h w -> b t (c h w)", b=b, t=t), state)
        logits = self.head(x)
        return logits[..., :3], logits[..., 3:], state

    def loss(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, rew: Tensor, end: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Cross-entropies of reward sign and termination. rew: float (B, T), end: bool/long (B, T).

        Returns (loss_rew + loss_end, loss_rew, loss_end, logits_rew (B, T, 3), logits_end (B, T, 2)).
        """
        logits_rew, logits_end, _ = self(obs, act, next_obs)
        loss_rew = F.cross_entropy(logits_rew.flatten(0, 1), rew.sign().long().add(1).flatten())
        loss_end = F.cross_entropy(logits_end.flatten(0, 1), end.long().flatten())
        return loss_rew + loss_end, loss_rew, loss_end, logits_rew, logits_end
