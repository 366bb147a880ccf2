"""Genie's dynamics model (Genie §2.1): a MaskGIT transformer over video tokens.

tokens (B, T, N) with `mask_id` = num_codes marking masked tokens, and prev_actions (B, T) where
prev_actions[:, t] is the latent action that led into frame t (-1 for none, e.g. the first frame).
Each token embedding gets the embedding of its frame's incoming latent action *added*; an
ST-transformer (causal in time) predicts logits over the codebook for every token. The latent
actions are indices produced by the LAM, so no gradient flows back into the LAM (stop-gradient).
"""

from __future__ import annotations

from torch import Tensor, nn

from genie.attention import KV
from genie.st_transformer import STTransformer


class DynamicsModel(nn.Module):
    def __init__(
        self,
        num_codes: int = 1024,
        num_actions: int = 6,
        grid: tuple[int, int] = (16, 16),
        d_model: int = 512,
        num_heads: int = 8,
        num_layers: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.num_codes, self.num_actions, self.mask_id = num_codes, num_actions, num_codes
        self.token_embed = nn.Embedding(num_codes + 1, d_model)
        self.action_embed = nn.Embedding(num_actions, d_model)
        self.transformer = STTransformer(d_model, num_layers, num_heads, tuple(grid), mlp_ratio, dropout)
        self.head = nn.Linear(d_model, num_codes)

    def forward(
        self, tokens: Tensor, prev_actions: Tensor, past: list[KV] | None = None, logits: bool = True
    ) -> tuple[Tensor | None, list[KV]]:
        """tokens (B, T, N), prev_actions (B, T) -> (logits (B, T, N, num_codes), keys/values of past + T frames).

        logits=False skips the output head (None instead of logits): generation needs only the context's
        keys/values, and the head is the largest matmul of a frame."""
        has_action = (prev_actions >= 0)[..., None, None]
        act = self.action_embed(prev_actions.clamp_min(0))[:, :, None] * has_action
        h, kv = self.transformer(self.token_embed(tokens) + act, past)
        return (self.head(h) if logits else None), kv
