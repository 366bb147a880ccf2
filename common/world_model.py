"""The WorldModel interface every family implements (DESIGN.md), and loading one by checkpoint.

Play, evaluation and benchmarks only talk to this interface, so they never import a family directly.
Frames are uint8 (B, H, W, C) / (B, T, H, W, C); actions are long (B,) / (B, T).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

# family name (as stored in every checkpoint) -> "module:Class" of its WorldModel
FAMILIES: dict[str, str] = {
    "genie": "genie.world_model:GenieWorldModel",
    "diamond": "diamond.world_model:DiamondWorldModel",
    "oasis": "oasis.world_model:OasisWorldModel",
}


@dataclass
class Step:
    """One generated step. frames: uint8 (B, H, W, C); reward: float (B,) or None; done: bool (B,) or None."""

    frames: Tensor
    reward: Tensor | None = None
    done: Tensor | None = None


@runtime_checkable
class Policy(Protocol):
    """An agent a checkpoint carries (e.g. DIAMOND's actor-critic): acts on the frames it is shown."""

    num_actions: int

    def act(self, frames: Tensor) -> Tensor:
        """frames: uint8 (B, H, W, C) the current observation -> long (B,) actions; recurrent state advances."""

    def reset(self) -> None:
        """Forget the recurrent state: the next act() starts an episode."""


@runtime_checkable
class WorldModel(Protocol):
    num_actions: int
    frame_shape: tuple[int, int, int]  # H, W, C
    context_length: int  # frames needed by reset()
    policy: Policy | None  # the checkpoint's agent, None when it carries none; reset() resets it

    def reset(self, frames: Tensor, actions: Tensor | None = None) -> None:
        """frames: uint8 (B, T, H, W, C) real context; actions: long (B, T) taken at those frames, or None."""

    def step(self, actions: Tensor) -> Step:
        """actions: long (B,) -> the next frame (and reward / done where the family predicts them)."""

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> WorldModel: ...


def check_actions(actions: Tensor, num_actions: int) -> Tensor:
    """Validate (B,) actions against [0, num_actions); a one-line error names the bad value."""
    actions = torch.as_tensor(actions, dtype=torch.long)
    if actions.numel() and (actions.min() < 0 or actions.max() >= num_actions):
        bad = actions[(actions < 0) | (actions >= num_actions)][0].item()
        raise ValueError(
            f"action {bad} out of range: this model has {num_actions} actions (0..{num_actions - 1})"
        )
    return actions


def load_world_model(path: str | Path, device: str = "cpu") -> WorldModel:
    """Open any worldplay checkpoint: the family is read from the file, then its WorldModel loads it."""
    from common.checkpoint import read_meta

    family = read_meta(path)["family"]
    if family not in FAMILIES:
        raise ValueError(f"{path}: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    module_name, cls_name = FAMILIES[family].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls.from_checkpoint(path, device=device)
