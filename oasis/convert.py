"""Convert open-oasis safetensors weights into a worldplay `dit`-stage checkpoint.

    python -m oasis.convert --dit oasis500m.safetensors --vae vit-l-20.safetensors oasis500m.ckpt
    python play.py checkpoint=oasis500m.ckpt            # slow on CPU

Sizes come from the files wherever they determine them. The DiT file determines all of the DiT's: widths,
depth, patch, latent channels, the action dimension (none: open-oasis' external_cond_dim=0, converted as
one action that changes nothing), and the heads (width from the temporal rotary table, count from the
attention width). The VAE file holds widths, depths, patch, latent channels and the bottleneck, but not
the frame size (no stored table depends on it) nor the encoder and decoder head counts (qkv is 3 x width
for any count): flags give them, defaulting to the released vit-l-20's only for that layout; for any other
a missing one is a one-line error naming the flag. Window and latent scale are flags with open-oasis'
values. The sizes not read from a file are printed.
The released DiT file stores each shared rotary `freqs` tensor under one name only (safetensors drops
aliases), so those missing aliases are accepted; any other missing key, unexpected key, wrong shape or size
that open-oasis' own model could not run stops the conversion with a one-line error naming it.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from oasis.module import OasisDiTModule
from oasis.vae import OASIS_SCALING_FACTOR

# open-oasis vae.py ViT_L_20_Shallow_Encoder: the sizes its weights show, and those they do not store
RELEASED_VAE = dict(patch_size=20, latent_dim=16, enc_dim=1024, enc_depth=6, dec_dim=1024, dec_depth=12)
RELEASED_VAE_UNSTORED = dict(input_height=360, input_width=640, enc_heads=16, dec_heads=16)
UNSTORED_VAE_FLAGS = dict(input_height="--height", input_width="--width", enc_heads="--vae-encoder-heads",
                          dec_heads="--vae-decoder-heads")  # fmt: skip


class ConvertError(ValueError):
    """Bad input for the converter (one-line message)."""


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConvertError(f"{path}: not a safetensors file ({str(e).splitlines()[0]})") from None


def _need(sd: dict[str, Tensor], key: str, path: str | Path, dims: int) -> tuple[int, ...]:
    if key not in sd:
        raise ConvertError(f"{path}: missing key {key!r}")
    if sd[key].dim() != dims:
        raise ConvertError(f"{path}: {key} has shape {tuple(sd[key].shape)}, expected {dims} dimensions")
    return tuple(sd[key].shape)


def _count(sd: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _ratio(hidden: int, dim: int) -> float:
    """mlp_ratio such that int(dim * mlp_ratio) == hidden, as both open-oasis and worldplay size the MLP."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _mlp_ratio(sd: dict[str, Tensor], path, candidates: tuple[tuple[str, int], ...]) -> float:
    """mlp_ratio from the first (fc1 key, block width) present; 4.0 when no block has an MLP (depth 0)."""
    for key, dim in candidates:
        if key in sd:
            return _ratio(_need(sd, key, path, 2)[0], dim)
    return 4.0


def infer_vae_hparams(
    sd: dict[str, Tensor],
    path,
    height: int | None = None,
    width: int | None = None,
    enc_heads: int | None = None,
    dec_heads: int | None = None,
) -> dict:
    """AutoencoderKL constructor arguments: sizes from the weights; frame size and heads from the caller.

    The weights hold the widths, depths, patch size, latent channels and whether the bottleneck is
    variational; not the frame size (the rotary tables are not stored) nor the head counts (qkv is
    width x 3 width for any count). Those default to the released vit-l-20-shallow-encoder's only for
    that layout; for any other a missing one stops with a one-line error naming its flag.
    """
    enc_dim, _, patch, _ = _need(sd, "patch_embed.proj.weight", path, 4)
    dec_dim, latent_dim = _need(sd, "post_quant_conv.weight", path, 2)
    quant_out, _ = _need(sd, "quant_conv.weight", path, 2)
    if quant_out not in (latent_dim, 2 * latent_dim):
        raise ConvertError(
            f"{path}: quant_conv makes {quant_out} channels for {latent_dim} latent channels "
            f"(post_quant_conv); expected {latent_dim} or {2 * latent_dim} (mean and log-variance)"
        )
    sizes = dict(patch_size=patch, latent_dim=latent_dim, enc_dim=enc_dim, enc_depth=_count(sd, "encoder"),
                 dec_dim=dec_dim, dec_depth=_count(sd, "decoder"))  # fmt: skip
    given = dict(input_height=height, input_width=width, enc_heads=enc_heads, dec_heads=dec_heads)
    missing = [k for k, v in given.items() if v is None]
    if missing and sizes != RELEASED_VAE:
        flags = ", ".join(UNSTORED_VAE_FLAGS[k] for k in missing)
        flags += " (--vae-heads sets both)" if {"enc_heads", "dec_heads"} <= set(missing) else ""
        layout = (
            f"encoder {enc_dim}x{sizes['enc_depth']}, decoder {dec_dim}x{sizes['dec_depth']}, patch {patch}"
        )
        raise ConvertError(
            f"{path}: not the released vit-l-20 layout ({layout}) and its weights do not store "
            f"frame size or head counts: pass {flags}"
        )
    given = {k: RELEASED_VAE_UNSTORED[k] if v is None else v for k, v in given.items()}
    for part, dim, heads in (
        ("encoder", enc_dim, given["enc_heads"]),
        ("decoder", dec_dim, given["dec_heads"]),
    ):
        if heads < 1 or dim % heads:
            flag = UNSTORED_VAE_FLAGS[f"{part[:3]}_heads"]
            raise ConvertError(f"{path}: {part} width {dim} does not split into {heads} heads ({flag})")
    height, width = given["input_height"], given["input_width"]
    if height < 1 or width < 1 or height % patch or width % patch:
        raise ConvertError(
            f"{path}: image {height}x{width} (--height/--width) is not divisible by patch {patch}"
        )
    mlp_ratio = _mlp_ratio(
        sd, path, (("encoder.0.mlp.fc1.weight", enc_dim), ("decoder.0.mlp.fc1.weight", dec_dim))
    )
    return dict(sizes, **given, mlp_ratio=mlp_ratio, use_variational=quant_out == 2 * latent_dim)


def _rotary(sd: dict[str, Tensor], path, kind: str) -> tuple[str, Tensor]:
    """The stored name and value of the DiT's shared spatial ('s') or temporal ('t') rotary table.

    The table is one Parameter under `{spatial|temporal}_rotary_emb.freqs` and every block's
    `blocks.{i}.{s|t}_attn.rotary_emb.freqs`; safetensors stores one of those names, a state dict all."""
    top = "spatial_rotary_emb.freqs" if kind == "s" else "temporal_rotary_emb.freqs"
    names = sorted(
        k for k in sd if k == top or re.fullmatch(rf"blocks\.\d+\.{kind}_attn\.rotary_emb\.freqs", k)
    )
    if not names:
        raise ConvertError(f"{path}: missing key 'blocks.0.{kind}_attn.rotary_emb.freqs' (or {top!r})")
    _need(sd, names[0], path, 1)
    for name in names[1:]:
        if sd[name].shape != sd[names[0]].shape or not torch.equal(sd[name], sd[names[0]]):
            raise ConvertError(f"{path}: {name} differs from {names[0]}, one shared table in open-oasis' DiT")
    return names[0], sd[names[0]]


def lang_freqs(dim: int) -> Tensor:
    """open-oasis' temporal table for head width `dim`: 1 / 10000^(2i / dim), i < dim // 2."""
    return 1.0 / 10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)


def infer_dit_hparams(sd: dict[str, Tensor], path) -> dict:
    """DiT constructor arguments, all from the weights.

    Head width: the temporal rotary table holds head // 2 frequencies 1 / 10000^(2i / head) (even widths;
    an odd width leaves the same count, told apart by the values, and open-oasis cannot run it); heads:
    to_qkv has 3 * heads * head rows. num_actions 0: no `external_cond` layer (external_cond_dim=0).
    """
    hidden, channels, patch, _ = _need(sd, "x_embedder.proj.weight", path, 4)
    t_name, t_freqs = _rotary(sd, path, "t")
    s_name, s_freqs = _rotary(sd, path, "s")
    head = 2 * t_freqs.numel()
    if t_freqs.numel() >= 2 and torch.allclose(t_freqs.float(), lang_freqs(head + 1)):
        raise ConvertError(
            f"{path}: {t_name} is the temporal rotary table of an odd head width {head + 1}, which "
            "open-oasis' DiT cannot run (its rotary cache is head-wide, the table even)"
        )
    if head < 2:
        raise ConvertError(f"{path}: {t_name} is empty: a head width under 2, which open-oasis cannot build")
    if s_freqs.numel() != head // 4:
        raise ConvertError(
            f"{path}: {s_name} has {s_freqs.numel()} entries, expected {head // 4} for the head width {head} "
            f"that {t_name} gives: the two tables contradict each other"
        )
    depth = _count(sd, "blocks")
    heads = hidden // head
    if depth:
        rows, _ = _need(sd, "blocks.0.s_attn.to_qkv.weight", path, 2)
        heads = rows // 3 // head
        if rows % (3 * head) or heads < 1 or hidden // heads != head:
            raise ConvertError(
                f"{path}: blocks.0.s_attn.to_qkv.weight has {rows} rows, not 3 x heads x {head} for any "
                f"heads with {hidden} // heads = {head} (the head width that {t_name} gives)"
            )
    if "external_cond.weight" in sd:
        _, num_actions = _need(sd, "external_cond.weight", path, 2)
    elif "external_cond.bias" in sd:
        raise ConvertError(f"{path}: missing key 'external_cond.weight' (external_cond.bias is there)")
    else:
        num_actions = 0  # open-oasis DiT(external_cond_dim=0): no action layer
    return dict(
        in_channels=channels, patch_size=patch, hidden_size=hidden, depth=depth, num_heads=heads,
        mlp_ratio=_mlp_ratio(sd, path, (("blocks.0.s_mlp.fc1.weight", hidden),)), num_actions=num_actions,
    )  # fmt: skip


def load_strict(module: torch.nn.Module, sd: dict[str, Tensor], path, allow_missing=lambda k: False) -> None:
    """Copy `sd` into `module`: every key must exist with the right shape (one-line errors)."""
    own = module.state_dict()
    for key in sd:
        if key not in own:
            raise ConvertError(f"{path}: unexpected key {key!r}")
    for key, value in own.items():
        if key not in sd:
            if allow_missing(key):
                continue
            raise ConvertError(f"{path}: missing key {key!r}")
        if sd[key].shape != value.shape:
            raise ConvertError(
                f"{path}: {key} has shape {tuple(sd[key].shape)}, this model expects {tuple(value.shape)}"
            )
    module.load_state_dict(sd, strict=False)


def convert(
    dit_path: str | Path,
    vae_path: str | Path,
    out: str | Path,
    height: int | None = None,
    width: int | None = None,
    enc_heads: int | None = None,
    dec_heads: int | None = None,
    max_frames: int = 32,
    scaling_factor: float = OASIS_SCALING_FACTOR,
    context_frames: int = 1,
) -> tuple[Path, list[str]]:
    """Write the worldplay checkpoint `out`; returns it and one line per size it did not read from a file.

    height / width / enc_heads / dec_heads: see `infer_vae_hparams` (None: the released layout's).
    Errors: ConvertError (one line) for any file that open-oasis' own constructors and forward would not
    turn into a model of these sizes, naming the file, the key or value and the flag to set.
    """
    vae_sd, dit_sd = read_safetensors(vae_path), read_safetensors(dit_path)
    vae_hparams = infer_vae_hparams(vae_sd, vae_path, height, width, enc_heads, dec_heads)
    dit_hparams = infer_dit_hparams(dit_sd, dit_path)
    if dit_hparams["in_channels"] != vae_hparams["latent_dim"]:
        raise ConvertError(
            f"{dit_path}: DiT takes {dit_hparams['in_channels']} latent channels, "
            f"{vae_path} makes {vae_hparams['latent_dim']}"
        )
    frame_h, frame_w, patch = (
        vae_hparams["input_height"],
        vae_hparams["input_width"],
        vae_hparams["patch_size"],
    )
    grid_h, grid_w, dit_patch = frame_h // patch, frame_w // patch, dit_hparams["patch_size"]
    if grid_h % dit_patch or grid_w % dit_patch:
        raise ConvertError(
            f"{dit_path}: DiT patch {dit_patch} does not tile the latent grid {grid_h}x{grid_w} that "
            f"{vae_path} makes of {frame_h}x{frame_w} frames (--height/--width)"
        )
    actions = dit_hparams["num_actions"]
    dit_kwargs = {k: dit_hparams[k] for k in ("patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio")}
    module = OasisDiTModule(
        num_actions=max(actions, 1), vae_hparams=vae_hparams, scaling_factor=scaling_factor, **dit_kwargs,
        max_frames=max_frames, context_frames=context_frames, warmup_steps=1,
    )  # fmt: skip
    load_strict(module.vae, vae_sd, vae_path)
    if (
        actions == 0
    ):  # one action through a layer that adds exactly 0: open-oasis' DiT run without a condition
        torch.nn.init.zeros_(module.dit.external_cond.weight)
        torch.nn.init.zeros_(module.dit.external_cond.bias)

    def not_stored(key: str) -> bool:
        # aliases of the shared rotary tables (one Parameter under many names): one stored name sets them all
        return key.endswith("rotary_emb.freqs") or (actions == 0 and key.startswith("external_cond."))

    load_strict(module.dit, dit_sd, dit_path, allow_missing=not_stored)
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": L.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    module.on_save_checkpoint(ckpt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out, size_notes(vae_hparams, dit_hparams, vae_path, dit_path, height, width, enc_heads, dec_heads)


def size_notes(vae: dict, dit: dict, vae_path, dit_path, *given_vae_sizes: int | None) -> list[str]:
    """One line per model: the sizes the weights do not store, and where each came from."""
    names = ("input_height", "input_width", "enc_heads", "dec_heads")
    defaulted = [UNSTORED_VAE_FLAGS[k] for k, v in zip(names, given_vae_sizes) if v is None]
    source = f"released layout's, not in {vae_path}: {' '.join(defaulted)}" if defaulted else "as given"
    head = dit["hidden_size"] // dit["num_heads"]
    actions = f"{dit['num_actions']}-d actions" if dit["num_actions"] else (
        "no action input (external_cond_dim=0): one action, which changes nothing"
    )  # fmt: skip
    return [
        f"VAE: encoder heads {vae['enc_heads']}, decoder heads {vae['dec_heads']}, "
        f"frames {vae['input_height']}x{vae['input_width']} ({source})",
        f"DiT: heads {dit['num_heads']} of width {head}, {actions} (read from {dit_path})",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m oasis.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--dit", required=True, help="DiT weights (oasis500m.safetensors)")
    p.add_argument("--vae", required=True, help="ViT-VAE weights (vit-l-20.safetensors)")
    p.add_argument("out", help="output checkpoint (.ckpt)")
    unstored = "not in the weights; default: the released vit-l-20 layout's"
    p.add_argument("--height", type=int, help=f"frame height ({unstored}, 360)")
    p.add_argument("--width", type=int, help=f"frame width ({unstored}, 640)")
    p.add_argument("--vae-encoder-heads", type=int, help=f"VAE encoder attention heads ({unstored}, 16)")
    p.add_argument("--vae-decoder-heads", type=int, help=f"VAE decoder attention heads ({unstored}, 16)")
    p.add_argument("--vae-heads", type=int, help="both of the above (the specific flags take precedence)")
    p.add_argument("--max-frames", type=int, default=32, help="DiT sliding window (default 32)")
    p.add_argument("--scaling-factor", type=float, default=OASIS_SCALING_FACTOR, help="latent scale")
    p.add_argument("--context-frames", type=int, default=1, help="context frames the world model expects")
    a = p.parse_args(argv)
    enc_heads = a.vae_heads if a.vae_encoder_heads is None else a.vae_encoder_heads
    dec_heads = a.vae_heads if a.vae_decoder_heads is None else a.vae_decoder_heads
    try:
        out, notes = convert(a.dit, a.vae, a.out, a.height, a.width, enc_heads, dec_heads, a.max_frames,
                             a.scaling_factor, a.context_frames)  # fmt: skip
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(note)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
