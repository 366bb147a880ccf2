"""Opt-in torch.compile of a WorldModel's networks (`compile=true`), falling back with a warning.

Families call their networks through several methods (`forward`, cached variants, encode/decode), so
compiling a top-level `forward` alone may never run. What gets compiled is the `forward` of each network
(the `nn.Module` attributes of the world model) and of every repeated block inside them (members of an
`nn.ModuleList` / `nn.Sequential`): whichever top-level method runs, the blocks run compiled. One warm-up
step (on the real context) checks that the compiled path runs here (CPU inductor needs a C++ compiler);
any failure restores eager `forward`s and warns.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def compile_targets(world_model) -> list[nn.Module]:
    """The world model's networks and the repeated blocks inside them (each module once)."""
    roots = [v for v in vars(world_model).values() if isinstance(v, nn.Module)]
    targets: dict[int, nn.Module] = {}
    for root in roots:
        targets[id(root)] = root
        for module in root.modules():
            if isinstance(module, (nn.ModuleList, nn.Sequential)):
                for block in module:
                    targets.setdefault(id(block), block)
    return list(targets.values())


def compile_world_model(world_model, warmup) -> bool:
    """Compile in place; `warmup()` runs one reset + step through the compiled code.

    Returns True when the compiled path ran, False (with a warning, eager restored) otherwise.
    """
    targets = compile_targets(world_model)
    if not targets:
        warnings.warn(
            "compile=true: this world model exposes no network to compile; running eager", stacklevel=2
        )
        return False
    # every target's compiled wrapper shares one code object: allow one cache entry per block type
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), 8 * len(targets)))
    try:
        for module in targets:
            module.forward = torch.compile(module.forward)
        warmup()
        return True
    except Exception as e:  # noqa: BLE001 - any compile failure falls back to eager
        for module in targets:
            if "forward" in vars(module):
                del module.forward  # back to the class's eager forward
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warnings.warn(f"compile=true failed ({type(e).__name__}: {first[:200]}); running eager", stacklevel=2)
        return False
