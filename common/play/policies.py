"""Action sources for headless play and the player's `m` mode: random, the checkpoint's agent, a fixed
sequence, a file.

`policy=random` draws uniformly (for Oasis' 25-d Minecraft vectors: a few buttons and a small camera
move, `MinecraftRandomPolicy`); `policy=agent` is the agent the checkpoint carries (`WorldModel.policy`,
e.g. DIAMOND's actor-critic), acting on the frame on show (`AgentPolicy`); `policy=dataset` replays the
real actions of the held-out episode; `policy=file:PATH` replays actions stored in PATH (.npy, .json
list, or text with one integer per line / whitespace separated). Every action is checked against the
model's action count (one-line errors).

All are `PlayPolicy`s: `begin(frames)` once per context (the frames the world model was reset on), then
`policy(step, frame)` -> the action of that step, frame the one on show (uint8 (H, W, C)).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from common.frames import frame_batch


def action_batch(action: int | np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """One action -> a batch of one: an index -> long (1,); a float vector (A,) -> float32 (1, A)."""
    if isinstance(action, np.ndarray) and action.ndim == 1:
        return torch.from_numpy(action).to(device, torch.float32)[None]
    return torch.tensor([int(action)], dtype=torch.long, device=device)


class PlayPolicy:
    """An action source of the player: `begin(frames)` when a context starts, then one call per step."""

    def begin(self, frames: np.ndarray) -> None:
        """frames: uint8 (T, H, W, C), the context the world model was just reset on (its last frame is the
        one on show). Only policies that look at frames use it."""

    def __call__(self, step: int, frame: np.ndarray | None = None) -> int | np.ndarray:
        """step: steps since the context; frame: uint8 (H, W, C) on show -> an action index (or a vector)."""
        raise NotImplementedError


class RandomPolicy(PlayPolicy):
    """Uniform actions in [0, num_actions) from a seeded generator."""

    def __init__(self, num_actions: int, seed: int = 0) -> None:
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def __call__(self, step: int, frame: np.ndarray | None = None) -> int:
        return int(self.rng.integers(self.num_actions))


class AgentPolicy(PlayPolicy):
    """The agent a checkpoint carries (a `common.world_model.Policy`, e.g. DIAMOND's actor-critic) as a
    play policy: each step it acts on the frame on show.

    begin(frames): its recurrent state is reset and burned in on the frames before the one on show, as
    DIAMOND burns its agent in on the context before it imagines (and `common.evaluate_agent` does), so
    its first action already sees the context's motion. How it picks (sampled from its softmax for
    DIAMOND, as DIAMOND plays) is the agent's own.
    """

    def __init__(self, agent, device: str | torch.device = "cpu") -> None:
        self.agent = agent
        self.num_actions = agent.num_actions
        self.device = torch.device(device)

    def _act(self, frame: np.ndarray) -> int:
        frames = frame_batch(frame).to(self.device)  # (1, H, W, C)
        return int(self.agent.act(frames)[0])

    def begin(self, frames: np.ndarray) -> None:
        self.agent.reset()
        for frame in frames[:-1]:
            self._act(frame)

    def __call__(self, step: int, frame: np.ndarray | None = None) -> int:
        if frame is None:
            raise ValueError("the agent acts on the frame on show: none was given")
        return self._act(frame)


class MinecraftRandomPolicy(PlayPolicy):
    """Plausible random 25-d Minecraft vectors (open-oasis order): 0-2 buttons held (never ESC or the
    inventory) and a camera move of at most +-max_degrees in pitch and yaw, scaled as open-oasis does."""

    def __init__(self, seed: int = 0, max_degrees: float = 5.0) -> None:
        from common.play.keymaps import CAMERA_MAX_DEGREES, MINECRAFT_ACTIONS

        self.rng = np.random.default_rng(seed)
        self.size = len(MINECRAFT_ACTIONS)
        self.camera = [MINECRAFT_ACTIONS.index(n) for n in ("cameraX", "cameraY")]
        skip = {"ESC", "inventory", "cameraX", "cameraY"}
        self.buttons = [i for i, n in enumerate(MINECRAFT_ACTIONS) if n not in skip]
        self.camera_scale = max_degrees / CAMERA_MAX_DEGREES

    def __call__(self, step: int, frame: np.ndarray | None = None) -> np.ndarray:
        vector = np.zeros(self.size, dtype=np.float32)
        vector[self.rng.choice(self.buttons, size=self.rng.integers(3), replace=False)] = 1.0
        vector[self.camera] = self.rng.uniform(-self.camera_scale, self.camera_scale, size=2)
        return vector


class SequencePolicy(PlayPolicy):
    """Replays a fixed action sequence; `len()` is how many steps it can drive."""

    def __init__(self, actions: np.ndarray, name: str = "sequence") -> None:
        self.actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        self.name = name

    def __len__(self) -> int:
        return len(self.actions)

    def __call__(self, step: int, frame: np.ndarray | None = None) -> int:
        if step >= len(self.actions):
            raise ValueError(f"{self.name}: only {len(self.actions)} actions, step {step} asked for more")
        return int(self.actions[step])


def load_actions(path: str | Path, num_actions: int) -> np.ndarray:
    """Read an action file (.npy, .json, or text of integers) -> int64 (T,), each in [0, num_actions)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"action file not found: {path}")
    try:
        if path.suffix == ".npy":
            actions = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            actions = np.asarray(json.loads(path.read_text()))
        else:
            actions = np.asarray(path.read_text().split(), dtype=np.float64)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a list of integer actions ({e})") from None
    actions = np.asarray(actions).reshape(-1)
    if actions.size == 0:
        raise ValueError(f"{path}: no actions in file")
    if not np.all(np.mod(actions, 1) == 0):
        raise ValueError(f"{path}: actions must be integers")
    actions = actions.astype(np.int64)
    bad = actions[(actions < 0) | (actions >= num_actions)]
    if bad.size:
        raise ValueError(
            f"{path}: action {bad[0]} out of range, this model has {num_actions} (0..{num_actions - 1})"
        )
    return actions


def make_policy(
    spec: str, num_actions: int, seed: int = 0, dataset_actions: np.ndarray | None = None,
    minecraft: bool = False, agent: AgentPolicy | None = None,
) -> PlayPolicy:  # fmt: skip
    """`random` | `agent` | `dataset` | `file:PATH` -> a PlayPolicy (actions: indices; 25-d float32 vectors
    from `random` when `minecraft`: the model takes Oasis' Minecraft action vectors). `agent`: the
    checkpoint's, None when it carries none (then `policy=agent` is an error the caller words)."""
    if spec == "random":
        return MinecraftRandomPolicy(seed) if minecraft else RandomPolicy(num_actions, seed)
    if spec == "agent":
        if agent is None:
            raise ValueError("policy=agent: the checkpoint carries no agent; use policy=random")
        return agent
    if spec == "dataset":
        if dataset_actions is None:
            raise ValueError("policy=dataset needs context=dataset (the held-out episode's actions)")
        return SequencePolicy(dataset_actions, "dataset episode")
    if spec.startswith("file:"):
        path = spec.removeprefix("file:")
        return SequencePolicy(load_actions(path, num_actions), path)
    raise ValueError(f"policy={spec!r}: expected random, agent, dataset or file:PATH")
