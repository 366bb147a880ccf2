"""The frozen earlier stage inside a later one: Genie's dynamics stage carries the tokenizer, Oasis' DiT
stage the VAE.

The first time, the later stage reads the earlier stage's checkpoint: the earlier network's constructor
arguments from its hyperparameters and its weights, stored under the stage's name ("tokenizer.",
"vae."). It keeps both, the arguments in its own hyperparameters (`<stage>_hparams`) and the weights in
its state dict, so that its own checkpoint is self-contained: rebuilt from it, the network comes from
those arguments and Lightning copies the weights in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from common.checkpoint import check_family
from common.hparams import plain


def stage_weights(path: str | Path, family: str, stage: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(hyperparameters, weights) of a `family`/`stage` checkpoint's network, the one stored under
    "<stage>.", with that prefix stripped from the weights' names (ready for its `load_state_dict`).
    One-line errors: a missing or unreadable file, another family's or stage's checkpoint, no such weights."""
    ckpt = check_family(path, family, stage)
    prefix = f"{stage}."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{path}: no weights under '{prefix}' in this {family}/{stage} checkpoint")
    return dict(ckpt.get("hyper_parameters") or {}), state


def frozen_stage(
    network: Callable[..., nn.Module],
    arguments: dict[str, Any] | None,
    ckpt: str | Path | None,
    family: str,
    stage: str,
    arguments_of: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[nn.Module, dict[str, Any]]:
    """(the earlier stage's network, frozen, and its constructor arguments, plain values).

    `arguments`: the constructor arguments a later-stage checkpoint saved (`<stage>_hparams`), or None:
    then `ckpt`, the earlier stage's checkpoint, gives them (`arguments_of(its hyperparameters)`) and the
    weights. Frozen: no gradients, eval mode (no dropout, no codebook restarts); the later stage's `train()`
    must put it back into eval mode. A one-line error when both `arguments` and `ckpt` are None."""
    state = None
    if arguments is None:
        if ckpt is None:
            raise ValueError(f"{stage}_ckpt is null: give the path of a checkpoint of {family}/{stage}")
        hparams, state = stage_weights(ckpt, family, stage)
        arguments = arguments_of(hparams)
    arguments = plain(arguments)
    net = network(**arguments)
    if state is not None:
        net.load_state_dict(state)
    return net.requires_grad_(False).eval(), arguments
