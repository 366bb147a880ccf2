"""Oasis' spatio-temporal DiT (v-prediction), with a key/value cache for the context frames.

Module structure and parameter names follow open-oasis `dit.py` / `attention.py` so that the released
`oasis500m.safetensors` loads as is: x_embedder.proj, t_embedder.mlp.{0,2}, external_cond,
spatial_rotary_emb.freqs, temporal_rotary_emb.freqs, blocks.{i}.{s,t}_attn.{to_qkv,to_out},
blocks.{i}.{s,t}_mlp.{fc1,fc2}, blocks.{i}.{s,t}_adaLN_modulation.1, final_layer.{linear,adaLN_modulation.1}.
Every block's attention holds the model-level rotary modules (one tensor under many state-dict names,
which is why the released file stores only one name of each). LayerNorms have no affine parameters.

Shapes: latents x (B, T, C, H, W); noise levels t (B, T) long in [0, 1000); actions (B, T, A) float
(one-hot / multi-hot / continuous). Tokens inside are (B, T, h, w, D) with h = H / patch, w = W / patch.
Each block: spatial attention (within a frame, 2-D 'pixel' rotary) + MLP, then causal temporal
attention (per token position, 1-D 'lang' rotary) + MLP; each of the two halves is modulated by
shift / scale / gate from the per-frame condition c = timestep embedding + linear(action).

Because temporal attention is causal and everything else acts within a frame, frame t never depends
on frames after it. `context_kv` runs the context frames once and returns each block's temporal keys /
values; `forward_cached` then runs only the new frame(s) against them (exactly the uncached output).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from oasis.blocks import Mlp, PatchEmbed
from oasis.init import init_vit_weights
from oasis.rotary import RotaryEmbedding, apply_rotary, rotation

KV = tuple[Tensor, Tensor]  # keys, values: (B * h * w, heads, T, head_dim), rotated


class KVWindow(NamedTuple):
    """Cached temporal keys / values of `length` context frames, in buffers with room after them.

    keys, values (B * h * w, heads, length + spare, head_dim). Attention writes the keys / values of up
    to `spare` new frames into the free slots in place (each sampling step overwrites the same slots),
    so a step copies one frame's keys instead of concatenating the whole window.
    """

    keys: Tensor
    values: Tensor
    length: int


def past_length(past: KV | KVWindow) -> int:
    return past.length if isinstance(past, KVWindow) else past[0].shape[-2]


class PreparedStep(NamedTuple):
    """One sampling step's conditioning of a single new frame (see DiT.prepare_steps); tensors (B, 1, D)."""

    block_mods: list  # per block: (spatial (shift, scale, gate) x 2, temporal (same) x 2)
    final_mod: tuple[Tensor, Tensor]  # final layer (shift, scale)
    s_angles: Tensor  # spatial rotary, complex (h * w, r / 2) (oasis.rotary.rotation)
    t_angles: Tensor  # temporal rotary at the new frame's position, complex (1, r / 2)


def adaln(mlp: nn.Module, c: Tensor, chunks: int) -> tuple[Tensor, ...]:
    """c (B, T, D) -> `chunks` modulations (B, T, 1, 1, D) in adaLN's order: (shift, scale, gate, ...)."""
    return tuple(mlp(c[:, :, None, None]).chunk(chunks, dim=-1))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN (DiT `models.py`): x (B, T, h, w, D), shift / scale (B, T, 1, 1, D) -> x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Integer noise level (N,) -> sinusoidal features (cos | sin, 256) -> MLP -> (N, D)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    @staticmethod
    def sinusoidal(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
        half = dim // 2
        steps = torch.arange(half, dtype=torch.float32, device=t.device)
        freqs = torch.exp(-math.log(max_period) * steps / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return F.pad(emb, (0, dim % 2))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.sinusoidal(t, self.frequency_embedding_size))


class SpatialAxialAttention(nn.Module):
    """Non-causal attention among the h * w tokens of each frame, 2-D rotary over all head channels."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary_emb: RotaryEmbedding):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.rotary_emb = rotary_emb

    def forward(self, x: Tensor, angles: Tensor | None = None) -> Tensor:
        """x (B, T, h, w, D); angles (h * w, head_dim) or its `rotation` (complex); computed when None."""
        b, t, h, w, _ = x.shape
        qkv = self.to_qkv(x)
        qkv = rearrange(qkv, "b t h w (three n d) -> three (b t) n (h w) d", three=3, n=self.heads)
        if angles is None:
            angles = rearrange(self.rotary_emb.axial_angles(h, w), "h w r -> (h w) r")
        q, k = apply_rotary(angles, qkv[:2])  # queries and keys rotated together
        out = F.scaled_dot_product_attention(q, k, qkv[2])
        return self.to_out(rearrange(out, "(b t) n (h w) d -> b t h w (n d)", b=b, h=h))


class TemporalAxialAttention(nn.Module):
    """Causal attention along time for each token position, 1-D rotary over all head channels.

    forward(x, past) with past = (keys, values) of P earlier frames (or a KVWindow of them): x holds the
    frames at positions P..P+T-1; returns (output, (keys, values) of x alone). With kv_only the output
    is None (only the keys / values are computed).
    """

    def __init__(
        self, dim: int, heads: int, dim_head: int, rotary_emb: RotaryEmbedding, is_causal: bool = True
    ):
        super().__init__()
        self.heads = heads
        self.is_causal = is_causal
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.rotary_emb = rotary_emb

    def forward(
        self,
        x: Tensor,
        past: KV | KVWindow | None = None,
        angles: Tensor | None = None,
        kv_only: bool = False,
    ) -> tuple[Tensor | None, KV]:
        """x (B, T, h, w, D); angles (T, head_dim) or its `rotation` (complex) for positions P..P+T-1."""
        b, t, h, w, _ = x.shape
        qkv = self.to_qkv(x)
        qkv = rearrange(qkv, "b t h w (three n d) -> three (b h w) n t d", three=3, n=self.heads)
        p = 0 if past is None else past_length(past)
        if angles is None:
            angles = self.rotary_emb.angles(torch.arange(p, p + t, device=x.device))
        q, k = apply_rotary(angles, qkv[:2])  # queries and keys rotated together
        v = qkv[2]
        if kv_only:
            return None, (k, v)
        if past is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=self.is_causal)
        else:
            if isinstance(past, KVWindow) and p + t <= past.keys.shape[-2]:  # write into the free slots
                past.keys[..., p : p + t, :].copy_(k)
                past.values[..., p : p + t, :].copy_(v)
                k_all, v_all = past.keys[..., : p + t, :], past.values[..., : p + t, :]
            else:
                k_all, v_all = (
                    torch.cat((past[0][..., :p, :], k), dim=-2),
                    torch.cat((past[1][..., :p, :], v), -2),
                )
            mask = None
            if self.is_causal and t > 1:
                key_pos = torch.arange(p + t, device=x.device)
                mask = key_pos[None, :] <= (p + torch.arange(t, device=x.device))[:, None]
            out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
        out = rearrange(out, "(b h w) n t d -> b t h w (n d)", b=b, h=h, w=w)
        return self.to_out(out), (k, v)


class SpatioTemporalDiTBlock(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float,
        spatial_rotary_emb: RotaryEmbedding,
        temporal_rotary_emb: RotaryEmbedding,
        is_causal: bool = True,
    ):
        super().__init__()
        d, head = hidden_size, hidden_size // num_heads
        hidden = int(hidden_size * mlp_ratio)
        self.s_norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.s_attn = SpatialAxialAttention(d, num_heads, head, spatial_rotary_emb)
        self.s_norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.s_mlp = Mlp(d, hidden, approximate="tanh")
        self.s_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.t_norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.t_attn = TemporalAxialAttention(d, num_heads, head, temporal_rotary_emb, is_causal)
        self.t_norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.t_mlp = Mlp(d, hidden, approximate="tanh")
        self.t_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def modulations(self, c: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """c (B, T, D) -> the spatial and the temporal half's (shift, scale, gate) x 2, each (B, T, 1, 1, D)."""
        return adaln(self.s_adaLN_modulation, c, 6), adaln(self.t_adaLN_modulation, c, 6)

    def forward(
        self,
        x: Tensor,
        c: Tensor | None,
        past: KV | KVWindow | None = None,
        s_angles=None,
        t_angles=None,
        mods=None,
        kv_only: bool = False,
    ) -> tuple[Tensor | None, KV]:
        """x (B, T, h, w, D), c (B, T, D) -> (x, temporal (keys, values) of these frames).

        past: cached temporal (keys, values) of earlier frames; s_angles / t_angles: rotary tables
        (computed by the attention modules when None); mods: `modulations(c)` precomputed (c unused);
        kv_only: stop once the temporal keys / values are known (x is returned as None)."""
        s_mods, t_mods = self.modulations(c) if mods is None else mods
        shift1, scale1, gate1, shift2, scale2, gate2 = s_mods
        x = x + gate1 * self.s_attn(modulate(self.s_norm1(x), shift1, scale1), s_angles)
        x = x + gate2 * self.s_mlp(modulate(self.s_norm2(x), shift2, scale2))
        shift1, scale1, gate1, shift2, scale2, gate2 = t_mods
        attn, kv = self.t_attn(modulate(self.t_norm1(x), shift1, scale1), past, t_angles, kv_only)
        if kv_only:
            return None, kv
        x = x + gate1 * attn
        x = x + gate2 * self.t_mlp(modulate(self.t_norm2(x), shift2, scale2))
        return x, kv


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor | None, mod: tuple[Tensor, Tensor] | None = None) -> Tensor:
        shift, scale = adaln(self.adaLN_modulation, c, 2) if mod is None else mod
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Spatio-temporal DiT predicting v for every frame: (B, T, C, H, W) -> (B, T, C, H, W).

    Heads are hidden_size // num_heads wide (any even width; as in open-oasis, attention is
    num_heads * head wide, which is less than hidden_size when num_heads does not divide it). Spatial
    attention turns the leading 4 * (head // 4) channels of each head, temporal attention all of them.
    external_cond_dim = 0: no action layer, the condition is ignored (open-oasis' DiT run with
    external_cond=None; its nn.Identity path, which adds a hidden_size-wide condition as it is, is not
    offered).
    """

    def __init__(
        self,
        input_h: int = 18,
        input_w: int = 32,
        patch_size: int = 2,
        in_channels: int = 16,
        hidden_size: int = 1024,
        depth: int = 16,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        external_cond_dim: int = 25,
        max_frames: int = 32,
    ):
        super().__init__()
        head = hidden_size // num_heads if num_heads > 0 else 0
        if head < 2 or head % 2:
            raise ValueError(
                f"head width hidden_size // num_heads = {hidden_size} // {num_heads} = {head} must be even "
                "and at least 2: the temporal rotary table turns channel pairs (open-oasis' DiT cannot run "
                "odd widths)"
            )
        self.in_channels = self.out_channels = in_channels
        self.patch_size = patch_size
        self.max_frames = max_frames
        self.external_cond_dim = external_cond_dim
        self.x_embedder = PatchEmbed(
            input_h, input_w, patch_size, in_channels, hidden_size, what="latent grid"
        )
        self.t_embedder = TimestepEmbedder(hidden_size)
        # open-oasis: RotaryEmbedding(dim=head // 2, "pixel", max_freq=256), head // 4 frequencies, which a
        # table of width 2 * (head // 4) holds too when head // 2 is odd; and RotaryEmbedding(dim=head)
        self.spatial_rotary_emb = RotaryEmbedding(2 * (head // 4), kind="pixel", max_freq=256)
        self.temporal_rotary_emb = RotaryEmbedding(head, kind="lang")
        self.external_cond = nn.Linear(external_cond_dim, hidden_size) if external_cond_dim > 0 else None
        rope_s, rope_t = self.spatial_rotary_emb, self.temporal_rotary_emb
        self.blocks = nn.ModuleList(
            [SpatioTemporalDiTBlock(hidden_size, num_heads, mlp_ratio, rope_s, rope_t) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        init_vit_weights(self, self.x_embedder.proj)
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zero = [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        for block in self.blocks:
            zero += [block.s_adaLN_modulation[-1], block.t_adaLN_modulation[-1]]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def condition(self, t: Tensor, external_cond: Tensor | None) -> Tensor:
        """t (B, T) noise levels, external_cond (B, T, A) -> c (B, T, D)."""
        b, n = t.shape
        c = rearrange(self.t_embedder(t.reshape(b * n)), "(b t) d -> b t d", b=b)
        if external_cond is not None and self.external_cond is not None:
            c = c + self.external_cond(external_cond.to(c.dtype))
        return c

    def _angles(self, past: list[KV] | list[KVWindow] | None, frames: int) -> tuple[Tensor, Tensor]:
        """Complex rotary tables: spatial (h * w, r / 2) and temporal (frames, r / 2) after the past."""
        h, w = self.x_embedder.grid_size
        s_angles = rearrange(self.spatial_rotary_emb.axial_angles(h, w), "h w r -> (h w) r")
        p = 0 if past is None else past_length(past[0])
        t_angles = self.temporal_rotary_emb.angles(torch.arange(p, p + frames, device=s_angles.device))
        return rotation(s_angles), rotation(t_angles)

    def _run(
        self,
        x: Tensor,
        t: Tensor,
        external_cond: Tensor | None,
        past: list[KV] | list[KVWindow] | None,
        prepared: PreparedStep | None = None,
        output: bool = True,
    ):
        b, n, _, height, width = x.shape
        tokens = self.x_embedder(rearrange(x, "b t c h w -> (b t) c h w"))
        tokens = rearrange(tokens, "(b t) h w d -> b t h w d", b=b)
        if prepared is None:
            c, block_mods, final_mod = self.condition(t, external_cond), [None] * len(self.blocks), None
            s_angles, t_angles = self._angles(past, n)
        else:
            c, block_mods, final_mod = None, prepared.block_mods, prepared.final_mod
            s_angles, t_angles = prepared.s_angles, prepared.t_angles
        kvs = []
        for i, block in enumerate(self.blocks):
            p_i = None if past is None else past[i]
            kv_only = not output and i == len(self.blocks) - 1  # context_kv: the last block's keys suffice
            tokens, kv = block(tokens, c, p_i, s_angles, t_angles, block_mods[i], kv_only)
            kvs.append(kv)
        if not output:
            return None, kvs
        out = self.final_layer(tokens, c, final_mod)  # (B, T, h, w, p * p * C)
        p = self.patch_size
        out = rearrange(out, "b t h w (p q c) -> b t c (h p) (w q)", p=p, q=p, c=self.out_channels)
        return out, kvs

    def forward(self, x: Tensor, t: Tensor, external_cond: Tensor | None = None) -> Tensor:
        """x (B, T, C, H, W), t (B, T) long, external_cond (B, T, A) -> v (B, T, C, H, W)."""
        return self._run(x, t, external_cond, None)[0]

    def context_kv(
        self, x: Tensor, t: Tensor, external_cond: Tensor | None = None, spare: int = 0
    ) -> list[KVWindow]:
        """Run the context frames x (B, T, C, H, W) once; per block a KVWindow of their temporal keys /
        values, (B*h*w, heads, T + spare, d) with `spare` free slots for the frames sampled after them."""
        windows = []
        for k, v in self._run(x, t, external_cond, None, output=False)[1]:
            n, heads, length, d = k.shape
            keys, values = k.new_empty(n, heads, length + spare, d), v.new_empty(n, heads, length + spare, d)
            keys[..., :length, :].copy_(k)
            values[..., :length, :].copy_(v)
            windows.append(KVWindow(keys, values, length))
        return windows

    def prepare_steps(
        self, t: Tensor, external_cond: Tensor | None, past: list[KV] | list[KVWindow]
    ) -> list[PreparedStep]:
        """What every sampling step of one new frame after `past` shares, computed once.

        t (B, S) the new frame's noise level at each of S steps; external_cond (B, 1, A) its condition.
        Returns S PreparedStep: per block the adaLN modulations, the final layer's, and the rotary tables.
        """
        b, steps = t.shape
        cond = None if external_cond is None else external_cond.expand(b, steps, -1)
        c = self.condition(t, cond)  # (B, S, D)
        per_block = [block.modulations(c) for block in self.blocks]
        final = adaln(self.final_layer.adaLN_modulation, c, 2)
        s_angles, t_angles = self._angles(past, 1)
        at = lambda mods, i: tuple(m[:, i : i + 1] for m in mods)  # noqa: E731
        return [
            PreparedStep([(at(sm, i), at(tm, i)) for sm, tm in per_block], at(final, i), s_angles, t_angles)
            for i in range(steps)
        ]

    def forward_cached(
        self,
        x: Tensor,
        t: Tensor,
        external_cond: Tensor | None,
        past: list[KV] | list[KVWindow],
        prepared: PreparedStep | None = None,
    ) -> Tensor:
        """v for frames that follow the cached context: x (B, T_new, C, H, W) -> (B, T_new, C, H, W).
        With `prepared` (one new frame; from `prepare_steps`), t and external_cond are not used."""
        return self._run(x, t, external_cond, past, prepared)[0]
