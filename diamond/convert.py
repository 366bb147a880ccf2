"""Import a DIAMOND Atari agent checkpoint (`Agent.state_dict()`) as a worldplay DiamondModule checkpoint.

    python -m diamond.convert SRC.pt OUT.ckpt [--sigma-data 0.5 --sigma-offset-noise 0.3 ...]
    python -m diamond.convert --reverse RUN/checkpoints/world_model/last.ckpt OUT.pt  # inverse

DIAMOND saves a dict of plain tensors with prefixes `denoiser.`, `rew_end_model.` and `actor_critic.`.
worldplay's networks keep DIAMOND's module names, so every key maps unchanged; the agent
(`actor_critic.*`, diamond/actor_critic.py) is optional: a checkpoint without it converts to a world
model without a policy, one with it to a world model whose `policy` is DIAMOND's agent. The network
sizes are read from the tensor shapes; what shapes cannot tell (EDM sigma_data, offset noise, sampler
settings) comes from flags with DIAMOND's defaults. The file is read with weights_only=True.
"""

from __future__ import annotations

import argparse
import math
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

KEPT_PREFIXES = ("denoiser.", "rew_end_model.", "actor_critic.")
DROPPED_PREFIXES: tuple[str, ...] = ()
AC = "actor_critic."
DEN = "denoiser.inner_model."
REW = "rew_end_model."


def read_diamond_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a DIAMOND agent state dict; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a tensor file we can read safely"
        raise ValueError(
            f"{path}: not a DIAMOND agent state dict (torch.load weights_only failed: {type(e).__name__})"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd:
        raise ValueError(
            f"{path}: this is a Lightning checkpoint, not a DIAMOND agent state dict (Agent.state_dict())"
        )
    if (
        not isinstance(sd, dict)
        or not sd
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items())
    ):
        raise ValueError(
            f"{path}: not a DIAMOND agent state dict (expected a dict of tensors keyed 'denoiser.*', ...)"
        )
    for key in sd:
        if not key.startswith(KEPT_PREFIXES + DROPPED_PREFIXES):
            raise ValueError(f"{path}: not a DIAMOND agent state dict (unexpected key {key!r})")
    for required in (DEN + "noise_emb.weight", REW + "lstm.weight_hh_l0"):
        if required not in sd:
            raise ValueError(f"{path}: not a DIAMOND Atari agent state dict (missing key {required!r})")
    return sd


def _shape(sd: dict[str, Tensor], key: str, source: str) -> torch.Size:
    if key not in sd:
        raise ValueError(f"{source}: missing key {key!r}")
    return sd[key].shape


def _levels(sd: dict[str, Tensor], prefix: str, source: str) -> tuple[list[int], list[int], list[bool]]:
    """depths, channels, attn flags of consecutive ResBlocks levels `{prefix}{i}.resblocks.{j}`."""
    depths, channels, attn = [], [], []
    i = 0
    while f"{prefix}{i}.resblocks.0.conv1.weight" in sd:
        j = 0
        while f"{prefix}{i}.resblocks.{j}.conv1.weight" in sd:
            j += 1
        depths.append(j)
        channels.append(_shape(sd, f"{prefix}{i}.resblocks.0.conv1.weight", source)[0])
        attn.append(f"{prefix}{i}.resblocks.0.attn.qkv_proj.weight" in sd)
        i += 1
    if not depths:
        raise ValueError(f"{source}: missing key {prefix + '0.resblocks.0.conv1.weight'!r}")
    return depths, channels, attn


def infer_hparams(sd: dict[str, Tensor], source: str = "state dict") -> dict[str, Any]:
    """DiamondModule constructor arguments implied by the tensor shapes of a DIAMOND-layout state dict."""
    img_channels = _shape(sd, DEN + "conv_out.weight", source)[0]
    conv_in = _shape(sd, DEN + "conv_in.weight", source)
    context_length = conv_in[1] // img_channels - 1
    cond_channels = _shape(sd, DEN + "cond_proj.0.weight", source)[1]
    num_actions, per_step = _shape(sd, DEN + "act_emb.0.weight", source)
    if per_step * context_length != cond_channels:
        raise ValueError(
            f"{source}: key {DEN + 'act_emb.0.weight'!r} has width {per_step}, expected "
            f"cond_channels / context = {cond_channels} / {context_length}"
        )
    depths, channels, attn = _levels(sd, DEN + "unet.d_blocks.", source)

    rew_depths, rew_channels, rew_attn = _levels(sd, REW + "encoder.blocks.", source)
    # the encoder's last entry is the 2-block attention stage at the lowest resolution, not a level
    rew_depths, rew_channels, rew_attn = rew_depths[:-1], rew_channels[:-1], rew_attn[:-1]
    rew_actions, rew_cond = _shape(sd, REW + "act_emb.weight", source)
    if rew_actions != num_actions:
        raise ValueError(
            f"{source}: key {REW + 'act_emb.weight'!r} has {rew_actions} actions, denoiser has {num_actions}"
        )
    lstm_dim = _shape(sd, REW + "lstm.weight_hh_l0", source)[1]
    lstm_in = _shape(sd, REW + "lstm.weight_ih_l0", source)[1]
    side = math.isqrt(lstm_in // rew_channels[-1])
    if side * side * rew_channels[-1] != lstm_in:
        raise ValueError(
            f"{source}: key {REW + 'lstm.weight_ih_l0'!r} input width {lstm_in} is not C * side^2"
        )
    return {
        "num_actions": int(num_actions),
        "frame_size": int(side * 2 ** (len(rew_depths) - 1)),
        "img_channels": int(img_channels),
        "context_length": int(context_length),
        "cond_channels": int(cond_channels),
        "depths": depths,
        "channels": [int(c) for c in channels],
        "attn_depths": attn,
        "rew_lstm_dim": int(lstm_dim),
        "rew_cond_channels": int(rew_cond),
        "rew_depths": rew_depths,
        "rew_channels": [int(c) for c in rew_channels],
        "rew_attn_depths": rew_attn,
    }


def check_state_dict(expected: dict[str, Tensor], got: dict[str, Tensor], source: str) -> None:
    """One-line error naming the first missing, unexpected or wrongly shaped key."""
    for key, value in expected.items():
        if key not in got:
            raise ValueError(f"{source}: missing key {key!r}")
        if got[key].shape != value.shape:
            raise ValueError(
                f"{source}: key {key!r} has shape {tuple(got[key].shape)}, expected {tuple(value.shape)}"
            )
    for key in got:
        if key not in expected:
            raise ValueError(f"{source}: unexpected key {key!r}")


def infer_agent_hparams(sd: dict[str, Tensor], hparams: dict[str, Any], source: str) -> dict | None:
    """The `actor_critic` argument of DiamondModule (None without `actor_critic.*` keys); checks that the
    agent acts in the denoiser's action space."""
    from diamond.actor_critic import infer_actor_critic_hparams

    agent = infer_actor_critic_hparams(sd, hparams["frame_size"], source, prefix=AC)
    key = AC + "actor_linear.weight"
    if agent is not None:
        agent_actions = _shape(sd, key, source)[0]
        if agent_actions != hparams["num_actions"]:
            raise ValueError(
                f"{source}: key {key!r} has {agent_actions} actions, denoiser has {hparams['num_actions']}"
            )
    return agent


def from_diamond(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """DIAMOND agent keys -> DiamondModule state-dict keys (the same names)."""
    return {k: v for k, v in sd.items() if k.startswith(KEPT_PREFIXES)}


def to_diamond(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """DiamondModule state-dict keys -> DIAMOND agent keys (denoiser.*, rew_end_model.*, actor_critic.*)."""
    return {k: v.detach().clone() for k, v in sd.items() if k.startswith(KEPT_PREFIXES)}


def module_from_diamond(sd: dict[str, Tensor], source: str = "state dict", **overrides: Any):
    """A DiamondModule holding the weights of a DIAMOND-layout state dict (strictly checked)."""
    from diamond.module import DiamondModule

    hparams = infer_hparams(sd, source)
    hparams["actor_critic"] = infer_agent_hparams(sd, hparams, source)
    module = DiamondModule(**{**hparams, **overrides})
    mapped = from_diamond(sd)
    check_state_dict(module.state_dict(), mapped, source)
    module.load_state_dict(mapped, strict=True)
    return module


def save_module_checkpoint(module, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a Lightning checkpoint of `module` atomically (DiamondModule.load_from_checkpoint reads it).

    `extra` entries are added to the checkpoint dict (plain containers only: it stays weights_only).
    The file is written to a unique temporary name in the same folder, then renamed over `out`.
    """
    import lightning

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt: dict[str, Any] = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": module.state_dict(),
        "hparams_name": "kwargs",
        "hyper_parameters": dict(module.hparams),
    }
    module.on_save_checkpoint(ckpt)
    ckpt.update(extra or {})
    tmp = out.with_name(f"{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def convert(src: str | Path, out: str | Path, **overrides: Any) -> Path:
    """DIAMOND agent .pt -> worldplay DiamondModule .ckpt."""
    sd = read_diamond_state_dict(src)
    return save_module_checkpoint(module_from_diamond(sd, str(src), **overrides), out)


def export(src: str | Path, out: str | Path) -> Path:
    """worldplay DiamondModule .ckpt -> DIAMOND-layout .pt (actor_critic.* when the module carries an agent)."""
    from common.checkpoint import check_family

    ckpt = check_family(src, "diamond")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_diamond(ckpt["state_dict"]), out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m diamond.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="DIAMOND agent state dict (.pt), or a worldplay checkpoint with --reverse")
    p.add_argument("out", help="output worldplay checkpoint (.ckpt), or DIAMOND-layout .pt with --reverse")
    p.add_argument("--reverse", action="store_true", help="worldplay checkpoint -> DIAMOND key layout")
    p.add_argument("--sigma-data", type=float, default=0.5)
    p.add_argument("--sigma-offset-noise", type=float, default=0.3)
    p.add_argument("--num-steps-denoising", type=int, default=3)
    p.add_argument("--sampler-order", type=int, default=1, choices=(1, 2))
    args = p.parse_args(argv)
    try:
        if args.reverse:
            path = export(args.src, args.out)
        else:
            path = convert(
                args.src,
                args.out,
                sigma_data=args.sigma_data,
                sigma_offset_noise=args.sigma_offset_noise,
                num_steps_denoising=args.num_steps_denoising,
                sampler_order=args.sampler_order,
            )
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
