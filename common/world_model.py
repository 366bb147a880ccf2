"""The WorldModel interface every family implements (DESIGN.md).

Play, evaluation and benchmarks only talk to this interface, so they never import a family directly, and
never ask which family they hold: what a family offers beyond reset/step is declared here
(`latent_actions` and `infer_actions`, `vector_actions`, `policy`, `seed`). Frames are uint8
(B, H, W, C) / (B, T, H, W, C); actions are long (B,) / (B, T). A checkpoint becomes a WorldModel through
`common.loader.load_world_model(path)` (or a family's `from_checkpoint`, the same loader).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


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
    # True: actions are the model's own latent actions (Genie), which `infer_actions` reads from real
    # frames; False: the environment's actions, and `infer_actions` is None
    latent_actions: bool
    # True: step() / reset() also take float (B, num_actions) action vectors (multi-hot, or open-oasis'
    # 25-d Minecraft vectors with camera entries) besides long indices
    vector_actions: bool

    def reset(self, frames: Tensor, actions: Tensor | None = None) -> None:
        """frames: uint8 (B, T, H, W, C) real context; actions: long (B, T) taken at those frames, or None."""

    def step(self, actions: Tensor) -> Step:
        """actions: long (B,) -> the next frame (and reward / done where the family predicts them)."""

    def seed(self, seed: int) -> None:
        """Every random draw of step() from now on comes from a torch.Generator seeded with `seed`, so the
        same seed, context and actions give the same frames (and rewards / ends)."""

    # latent_actions only: uint8 (B, T, H, W, C) real frames -> long (B, T - 1), the latent action from
    # frame t to t + 1; None for a model of environment actions
    infer_actions: Callable[[Tensor], Tensor] | None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> WorldModel:
        """common.loader.load_world_model, failing unless the checkpoint is of this class's family."""


@runtime_checkable
class PlaysWorldModel(Protocol):
    """A LightningModule whose stage plays (Genie dynamics, DIAMOND, Oasis dit): its current weights as a
    WorldModel (shared, not copied). Evaluation callbacks roll it out."""

    def world_model(self) -> WorldModel: ...


@runtime_checkable
class Reconstructs(Protocol):
    """A LightningModule of a reconstruction stage (Genie tokenizer, Oasis vae)."""

    def reconstruct(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, H, W, C) -> its reconstruction, uint8 (B, T, H, W, C)."""


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
    """Open any worldplay checkpoint (common.loader: one memory-mapped read, the family from the file)."""
    from common.loader import load_world_model as load

    return load(path, device)
