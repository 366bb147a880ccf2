"""Convert open-oasis safetensors weights into a worldplay `dit`-stage checkpoint.

    python -m oasis.convert --dit oasis500m.safetensors --vae vit-l-20.safetensors oasis500m.ckpt
    python play.py checkpoint=oasis500m.ckpt            # slow on CPU

Hyperparameters are read from tensor shapes where the weights determine them (widths, depths, patch
sizes, latent channels, action dimension, DiT heads via the temporal rotary table); the rest are flags
(image size, VAE heads, window, scaling factor), with the released models' values as defaults.
The released DiT file stores each shared rotary `freqs` tensor under one name only (safetensors drops
aliases), so those missing aliases are accepted; any other missing key, unexpected key or wrong shape
stops the conversion with a one-line error naming it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from oasis.module import OasisDiTModule
from oasis.vae import OASIS_SCALING_FACTOR


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


def infer_vae_hparams(sd: dict[str, Tensor], path, height: int, width: int, heads: int) -> dict:
    enc_dim, _, patch, _ = _need(sd, "patch_embed.proj.weight", path, 4)
    dec_dim, latent_dim = _need(sd, "post_quant_conv.weight", path, 2)
    quant_out, _ = _need(sd, "quant_conv.weight", path, 2)
    hidden, _ = _need(sd, "encoder.0.mlp.fc1.weight", path, 2)
    for dim in (enc_dim, dec_dim):
        if dim % heads or (dim // heads) % 8:
            raise ConvertError(f"{path}: width {dim} does not split into {heads} heads (--vae-heads)")
    if height % patch or width % patch:
        raise ConvertError(
            f"{path}: image {height}x{width} (--height/--width) is not divisible by patch {patch}"
        )
    return dict(
        latent_dim=latent_dim, input_height=height, input_width=width, patch_size=patch,
        enc_dim=enc_dim, enc_depth=_count(sd, "encoder"), enc_heads=heads,
        dec_dim=dec_dim, dec_depth=_count(sd, "decoder"), dec_heads=heads,
        mlp_ratio=hidden / enc_dim, use_variational=quant_out == 2 * latent_dim,
    )  # fmt: skip


def infer_dit_hparams(sd: dict[str, Tensor], path) -> dict:
    hidden, channels, patch, _ = _need(sd, "x_embedder.proj.weight", path, 4)
    (half_head,) = _need(sd, "blocks.0.t_attn.rotary_emb.freqs", path, 1)
    mlp_hidden, _ = _need(sd, "blocks.0.s_mlp.fc1.weight", path, 2)
    _, num_actions = _need(sd, "external_cond.weight", path, 2)
    head_dim = 2 * half_head
    if hidden % head_dim:
        raise ConvertError(f"{path}: hidden size {hidden} is not a multiple of the head dim {head_dim}")
    return dict(
        in_channels=channels, patch_size=patch, hidden_size=hidden, depth=_count(sd, "blocks"),
        num_heads=hidden // head_dim, mlp_ratio=mlp_hidden / hidden, num_actions=num_actions,
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
    height: int = 360,
    width: int = 640,
    vae_heads: int = 16,
    max_frames: int = 32,
    scaling_factor: float = OASIS_SCALING_FACTOR,
    context_frames: int = 1,
) -> Path:
    vae_sd, dit_sd = read_safetensors(vae_path), read_safetensors(dit_path)
    vae_hparams = infer_vae_hparams(vae_sd, vae_path, height, width, vae_heads)
    dit_hparams = infer_dit_hparams(dit_sd, dit_path)
    if dit_hparams["in_channels"] != vae_hparams["latent_dim"]:
        raise ConvertError(
            f"{dit_path}: DiT takes {dit_hparams['in_channels']} latent channels, "
            f"{vae_path} makes {vae_hparams['latent_dim']}"
        )
    module = OasisDiTModule(
        num_actions=dit_hparams["num_actions"], vae_hparams=vae_hparams, scaling_factor=scaling_factor,
        patch_size=dit_hparams["patch_size"], hidden_size=dit_hparams["hidden_size"], depth=dit_hparams["depth"],
        num_heads=dit_hparams["num_heads"], mlp_ratio=dit_hparams["mlp_ratio"], max_frames=max_frames,
        context_frames=context_frames, warmup_steps=1,
    )  # fmt: skip
    load_strict(module.vae, vae_sd, vae_path)
    # aliases of the shared rotary tables (one Parameter under many names): any one stored name sets them all
    stored = {k for k in dit_sd if k.endswith("rotary_emb.freqs")}
    for kind in ("s_attn", "t_attn"):
        if not any(f".{kind}." in k for k in stored):
            raise ConvertError(f"{dit_path}: missing key 'blocks.0.{kind}.rotary_emb.freqs'")
    load_strict(module.dit, dit_sd, dit_path, allow_missing=lambda k: k.endswith("rotary_emb.freqs"))
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
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m oasis.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--dit", required=True, help="DiT weights (oasis500m.safetensors)")
    p.add_argument("--vae", required=True, help="ViT-VAE weights (vit-l-20.safetensors)")
    p.add_argument("out", help="output checkpoint (.ckpt)")
    p.add_argument("--height", type=int, default=360, help="frame height (not in the weights; default 360)")
    p.add_argument("--width", type=int, default=640, help="frame width (not in the weights; default 640)")
    p.add_argument("--vae-heads", type=int, default=16, help="VAE attention heads (not in the weights)")
    p.add_argument("--max-frames", type=int, default=32, help="DiT sliding window (default 32)")
    p.add_argument("--scaling-factor", type=float, default=OASIS_SCALING_FACTOR, help="latent scale")
    p.add_argument("--context-frames", type=int, default=1, help="context frames the world model expects")
    a = p.parse_args(argv)
    try:
        out = convert(a.dit, a.vae, a.out, a.height, a.width, a.vae_heads, a.max_frames, a.scaling_factor,
                      a.context_frames)  # fmt: skip
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
