"""Tests-only fakes for play and bench: a tiny WorldModel and a matching Env (no family needed).

The fake dynamics roll the frame by the action's number of pixels; the fake env does the same, so a
model driven with the env's actions reproduces it exactly. Reward 1 on action 1; done after `episode` steps.
`FakeWorldModel(agent=True)` carries a `FakeAgent` as its policy (WorldModel.policy), else None.
`FakeModule` is the fake family's LightningModule, what a `playfake` checkpoint loads into.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from common.play.context import Context
from common.world_model import Step, check_actions

BREAKOUT = ["NOOP", "FIRE", "RIGHT", "LEFT"]
PROCGEN_FAKE = ["NOOP", "LEFT", "RIGHT", "UP"]  # 4 of procgen's names, for a 4-action fake


def pattern(seed: int, shape=(64, 64, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def roll(frame: np.ndarray, action: int) -> np.ndarray:
    return np.roll(frame, shift=int(action), axis=1)


class FakeAgent:
    """A Policy whose action is the shown frame's top-left red value modulo num_actions; records the frames
    it acted on and its resets."""

    def __init__(self, num_actions: int = 4) -> None:
        self.num_actions = num_actions
        self.seen: list[torch.Tensor] = []
        self.resets = 0

    @staticmethod
    def choose(frame: np.ndarray, num_actions: int = 4) -> int:
        """The action it takes on one frame uint8 (H, W, C)."""
        return int(frame[0, 0, 0]) % num_actions

    def act(self, frames: torch.Tensor) -> torch.Tensor:
        assert frames.dtype == torch.uint8 and frames.ndim == 4
        self.seen.append(frames.clone())
        return frames[:, 0, 0, 0].long() % self.num_actions

    def reset(self) -> None:
        self.resets += 1


class FakeWorldModel:
    latent_actions, infer_actions, vector_actions = False, None, False

    def __init__(
        self, num_actions: int = 4, context_length: int = 4, episode: int = 50, reward: bool = True,
        agent: bool = False,
    ):  # fmt: skip
        self.policy = FakeAgent(num_actions) if agent else None
        self.num_actions = num_actions
        self.frame_shape = (64, 64, 3)
        self.context_length = context_length
        self.episode = episode
        self.predicts_reward = reward
        self.resets = 0
        self.net = torch.nn.Linear(2, 2)  # something for compile=true to find

    def reset(self, frames: torch.Tensor, actions: torch.Tensor | None = None) -> None:
        assert frames.dtype == torch.uint8 and frames.shape[2:] == self.frame_shape
        assert frames.shape[1] >= self.context_length
        self.last = frames[:, -1].clone()
        self.t = 0
        self.resets += 1
        if self.policy is not None:
            self.policy.reset()

    def step(self, actions: torch.Tensor) -> Step:
        actions = check_actions(actions, self.num_actions)
        self.last = torch.stack([torch.roll(f, int(a), dims=1) for f, a in zip(self.last, actions)])
        self.t += 1
        if not self.predicts_reward:
            return Step(self.last.clone())
        reward = (actions == 1).float()
        done = torch.full_like(actions, self.t >= self.episode, dtype=torch.bool)
        return Step(self.last.clone(), reward, done)

    def seed(self, seed: int) -> None:
        self.seeded = seed  # the fake dynamics draw nothing


class FakeModule(L.LightningModule):
    """The fake family's playing stage, as common.loader builds it from a checkpoint (`FAKE_FAMILY`):
    hyperparameters in, `world_model()` out."""

    def __init__(self, num_actions: int = 4, context_length: int = 4, agent: bool = False):
        super().__init__()
        self.save_hyperparameters()

    def world_model(self) -> FakeWorldModel:
        h = self.hparams
        return FakeWorldModel(h.num_actions, h.context_length, agent=h.agent)


FAKE_FAMILY = ("x", "tests.test_play_fakes:FakeModule")  # common.loader.FAMILIES["playfake"]


def fake_checkpoint_content(
    num_actions: int = 4, context_length: int = 4, agent: bool = False, **extra
) -> dict:
    """The content of a `playfake` checkpoint (register FAKE_FAMILY in common.loader.FAMILIES first)."""
    hp = {"num_actions": num_actions, "context_length": context_length, "agent": agent}
    return {
        "worldplay": {"family": "playfake", "stage": "x"},
        "hyper_parameters": hp,
        "state_dict": {},
        **extra,
    }


class FakeEnv:
    source, env_id, fps = "atari", "FakeBreakout", 15
    frame_shape = (64, 64, 3)
    deterministic = True  # a level's frames follow from its seed and the actions

    def __init__(self, action_meanings=BREAKOUT, episode: int = 1000):
        self.action_meanings = list(action_meanings)
        self.num_actions = len(action_meanings)
        self.episode = episode
        self.closed = False

    def reset(self, seed: int) -> np.ndarray:
        self.frame, self.t = pattern(seed), 0
        return self.frame

    def step(self, action: int):
        assert 0 <= action < self.num_actions
        self.frame, self.t = roll(self.frame, action), self.t + 1
        return self.frame, float(action == 1), self.t >= self.episode

    def close(self) -> None:
        self.closed = True


def fake_context(context_length: int = 4, future: int = 30, num_actions: int = 4):
    """A dataset-like context source: episode i is FakeEnv's level i driven by fixed pseudo-random actions."""

    def source(index: int) -> Context:
        env = FakeEnv()
        rng = np.random.default_rng(100 + index)
        actions = rng.integers(0, num_actions, size=context_length + future).astype(np.int64)
        frames = [env.reset(index)]
        for a in actions[:-1]:
            frames.append(env.step(int(a))[0])
        frames = np.stack(frames)
        t = context_length
        return Context(frames[:t], actions[:t], index, frames[t:], actions[t - 1 : -1])

    return source


def test_fake_model_matches_fake_env():
    source = fake_context()
    ctx = source(0)
    model = FakeWorldModel()
    model.reset(torch.from_numpy(ctx.frames)[None], torch.from_numpy(ctx.actions)[None])
    for k in range(5):
        out = model.step(torch.tensor([ctx.future_actions[k]]))
        assert np.array_equal(out.frames[0].numpy(), ctx.future_frames[k])
