"""Genie's dynamics model (Genie §2.1): a MaskGIT transformer over video tokens.

tokens (B, T, N) with `mask_id` = num_codes marking masked tokens, and prev_actions (B, T) where
prev_actions[:, t] is the latent action that led into frame t (-1 for none, e.g. the first frame).
Each token embedding gets the embedding of its frame's incoming latent action *added*; an
ST-transformer (causal in time) predicts logits over the codebook for every token. The latent
actions are indices produced by the LAM, so no gradient flows back into the LAM (stop-gradient).

Optional copy gate (`copy_gate=True`, not in Genie): a learned scalar per token, g = w·h + b from the
token's output state h, is added to the logit of the code the same position held in the previous frame
(a copy mechanism, as the pointer-generator's, See et al. 2017 §2.2, with the previous frame as the source).
Most of a frame's tokens repeat those of the frame before (64% on CoinRun-tiny with the per-patch
tokenizer), which plain MaskGIT has to relearn from masked context; the gate makes "stay" one learned
scalar away, and the state h still decides where (and under which latent action) a token moves.
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
        copy_gate: bool = False,
    ):
        super().__init__()
        self.num_codes, self.num_actions, self.mask_id = num_codes, num_actions, num_codes
        self.token_embed = nn.Embedding(num_codes + 1, d_model)
        self.action_embed = nn.Embedding(num_actions, d_model)
        self.transformer = STTransformer(d_model, num_layers, num_heads, tuple(grid), mlp_ratio, dropout)
        self.head = nn.Linear(d_model, num_codes)
        self.copy_gate = nn.Linear(d_model, 1) if copy_gate else None
        if copy_gate:  # starts as plain MaskGIT: no preference for the previous frame's code
            nn.init.zeros_(self.copy_gate.weight)
            nn.init.zeros_(self.copy_gate.bias)

    def forward(
        self,
        tokens: Tensor,
        prev_actions: Tensor,
        past: list[KV] | None = None,
        logits: bool = True,
        prev_tokens: Tensor | None = None,
    ) -> tuple[Tensor | None, list[KV]]:
        """tokens (B, T, N), prev_actions (B, T) -> (logits (B, T, N, num_codes), keys/values of past + T frames).

        logits=False skips the output head (None instead of logits): generation needs only the context's
        keys/values, and the head is the largest matmul of a frame. prev_tokens: long (B, T, N), the
        unmasked codes of the frame before each of the T frames (-1 where there is none): with the copy
        gate, the logits of those codes get the gate's value; ValueError when the gate has none to use."""
        has_action = (prev_actions >= 0)[..., None, None]
        act = self.action_embed(prev_actions.clamp_min(0))[:, :, None] * has_action
        h, kv = self.transformer(self.token_embed(tokens) + act, past)
        if not logits:
            return None, kv
        out = self.head(h)
        if self.copy_gate is not None:
            if prev_tokens is None or prev_tokens.shape != tokens.shape:
                raise ValueError(f"DynamicsModel(copy_gate=True) needs prev_tokens of shape {tuple(tokens.shape)}, "
                                 f"got {None if prev_tokens is None else tuple(prev_tokens.shape)}")  # fmt: skip
            gate = self.copy_gate(h).to(out.dtype) * (prev_tokens >= 0)[..., None]  # (B, T, N, 1)
            out = out.scatter_add(-1, prev_tokens.clamp_min(0)[..., None], gate)
        return out, kv
