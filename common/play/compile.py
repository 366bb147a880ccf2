"""Opt-in torch.compile of a WorldModel's networks (`compile=true`), falling back with a warning.

The networks are the `nn.Module` attributes of the world model; each is replaced by its compiled
version, then one warm-up step (on the real context) checks that the compiled path runs here (CPU
inductor needs a C++ compiler). Anything failing restores the eager modules and warns.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def compile_world_model(world_model, warmup) -> bool:
    """Compile the world model's nn.Module attributes in place; `warmup()` runs one reset + step.

    Returns True when the compiled path ran, False (with a warning, eager modules restored) otherwise.
    """
    eager = {name: value for name, value in vars(world_model).items() if isinstance(value, nn.Module)}
    if not eager:
        warnings.warn(
            "compile=true: this world model exposes no network to compile; running eager", stacklevel=2
        )
        return False
    try:
        for name, module in eager.items():
            setattr(world_model, name, torch.compile(module))
        warmup()
        return True
    except Exception as e:  # noqa: BLE001 - any compile failure falls back to eager
        for name, module in eager.items():
            setattr(world_model, name, module)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warnings.warn(f"compile=true failed ({type(e).__name__}: {first[:200]}); running eager", stacklevel=2)
        return False
