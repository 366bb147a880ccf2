"""A per-patch encoder: each patch's token is a function of that patch's pixels alone.

Genie's tokenizer encoder (§2.1) is an ST-transformer, so a patch's code depends on the whole frame and on
the earlier frames: a patch that did not change between two frames can still change its token when
something moved elsewhere. With this encoder (`VideoTokenizer(encoder="patch")`) a static patch keeps its
token exactly and a small motion changes only the tokens of the patches it touches, which is what the
dynamics model predicts next. The decoder stays an ST-transformer, so the reconstruction still uses the
context of the whole clip.

(B, T, N, D) -> (B, T, N, D): a stack of pre-norm residual feed-forward blocks with a final LayerNorm.
"""

from __future__ import annotations

from torch import Tensor, nn

from genie.st_transformer import FeedForward


class PatchMLP(nn.Module):
    """`num_layers` residual blocks x + FF(LayerNorm(x)) applied to every token on its own, then LayerNorm.

    forward(x (B, T, N, D)) -> (y (B, T, N, D), []): the empty list stands where an ST-transformer returns
    its keys/values, so the two encoders are interchangeable."""

    def __init__(self, d_model: int, num_layers: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))
        self.ffs = nn.ModuleList(FeedForward(d_model, mlp_ratio, dropout) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> tuple[Tensor, list]:
        for norm, ff in zip(self.norms, self.ffs):
            x = x + ff(norm(x))
        return self.norm_out(x), []
