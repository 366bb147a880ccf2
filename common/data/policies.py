"""Collection policies: what acts in the environment while a dataset is collected (`data.policy`).

- `random`: a uniformly drawn action every step (Genie App. F's CoinRun data; DIAMOND's random data).
- `random_repeat`: a uniform action held for exactly `data.action_repeat` steps.
- `sticky_random`: a uniform action held for a uniform number of steps in [`data.sticky.min`,
  `data.sticky.max`], then the next one (which may repeat the last). With a fresh action every frame a
  CoinRun agent mostly jitters in place and the camera with it; a person holds a key for a while. The hold
  is uniform rather than geometric so that it is bounded on both sides (no one-frame taps below `min`,
  no runs beyond `max`) and its mean is (min + max) / 2.

Every policy draws from numpy's default_rng([episode seed, 7919]): an episode is the same whenever and
wherever it is collected, so a dataset resumes and recollects exactly. `random` and `random_repeat` draw
one action per hold; `sticky_random` draws an action, then its hold length.

A training loop (common/loop.py, common/data/append.py) collects with an *actor*, which sees the frames:
`RandomActor` plays one of the policies above, `AgentActor` a trained agent (a common.world_model `Policy`,
e.g. DIAMOND's actor-critic) with DIAMOND's epsilon-greedy exploration; their shards name the policy
`agent`. Both continue an episode that an earlier collection left in progress (`resume`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from common.frames import frame_batch

POLICIES = ("random", "random_repeat", "sticky_random")


class Policy:
    """A collection policy for one episode: `policy()` -> the next action (int in [0, num_actions)).

    kind: one of POLICIES; seed: the episode seed; action_repeat: the hold of `random_repeat`;
    sticky: {"min", "max"} hold lengths (steps, 1 <= min <= max) of `sticky_random`.
    ValueError (one line naming the data key) for an unknown kind or bad hold lengths."""

    def __init__(
        self,
        kind: str,
        num_actions: int,
        seed: int,
        action_repeat: int = 1,
        sticky: dict[str, int] | None = None,
    ):
        params = self.params(kind, action_repeat, sticky)
        if kind == "random":
            self.min = self.max = 1
        elif kind == "random_repeat":
            self.min = self.max = params["action_repeat"]
        else:
            self.min, self.max = params["min"], params["max"]
        self.kind, self.n = kind, num_actions
        self.rng = np.random.default_rng([seed, 7919])
        self.left, self.action = 0, 0  # steps left to hold self.action

    @staticmethod
    def params(kind: str, action_repeat: int = 1, sticky: dict[str, int] | None = None) -> dict[str, int]:
        """The parameters that define policy `kind` (what a dataset records beside its name): {} for
        random, {"action_repeat"} for random_repeat, {"min", "max"} for sticky_random; checked."""
        if kind not in POLICIES:
            raise ValueError(f"data.policy: unknown policy {kind!r} ({', '.join(POLICIES)})")
        if kind == "random":
            return {}
        if kind == "random_repeat":
            if int(action_repeat) < 1:
                raise ValueError(f"data.action_repeat={action_repeat}: hold each action for >= 1 step")
            return {"action_repeat": int(action_repeat)}
        if not sticky or "min" not in sticky or "max" not in sticky:
            raise ValueError(
                "data.sticky needs min and max (steps to hold each action), e.g. {min: 4, max: 16}"
            )
        lo, hi = int(sticky["min"]), int(sticky["max"])
        if lo < 1:
            raise ValueError(f"data.sticky: min={lo}; hold each action for at least 1 step")
        if lo > hi:
            raise ValueError(f"data.sticky: min={lo} > max={hi}; set min <= max")
        return {"min": lo, "max": hi}

    def __call__(self) -> int:
        if self.left == 0:
            self.action = int(self.rng.integers(self.n))
            self.left = self.min if self.min == self.max else int(self.rng.integers(self.min, self.max + 1))
        self.left -= 1
        return self.action


def make_policy(
    kind: str, num_actions: int, seed: int, action_repeat: int = 1, sticky: dict[str, Any] | None = None
) -> Policy:
    """The collection policy `kind` for the episode of `seed` (arguments as `Policy`)."""
    return Policy(kind, num_actions, seed, action_repeat, dict(sticky) if sticky else None)


class RandomActor:
    """A collection policy of POLICIES as an actor of common/data/append.py (it ignores the frames).

    `resume(seed, frames)` replays the draws of the `len(frames)` steps already taken: the episode goes
    on exactly as it would have without the interruption."""

    name = "random"

    def __init__(self, kind: str, num_actions: int, action_repeat: int = 1, sticky: dict | None = None):
        self.kind, self.n, self.repeat, self.sticky = kind, num_actions, action_repeat, sticky
        self.params = Policy.params(kind, action_repeat, sticky)
        self.policy: Policy | None = None

    def start(self, seed: int) -> None:
        self.policy = make_policy(self.kind, self.n, seed, self.repeat, self.sticky)

    def resume(self, seed: int, frames: np.ndarray) -> None:
        self.start(seed)
        for _ in range(len(frames)):
            self.policy()

    def __call__(self, frame: np.ndarray) -> int:
        return self.policy()


class AgentActor:
    """A trained agent acting in one environment, epsilon-greedy (DIAMOND's collection: epsilon 0.01 in
    training, 0 in its test episodes; config/trainer.yaml `collection`).

    policy: a common.world_model `Policy` (`act(frames uint8 (B, H, W, C)) -> long (B,)`, `reset()`);
    each step it acts on the frame, then with probability `epsilon` a uniform action replaces its choice
    (its recurrent state advances either way). `rng_seed` seeds the exploration draws.
    `resume(seed, frames)`: the agent's state is burnt in on the last `burn_in` frames (H, W, C) of the
    episode so far (the agent has changed since they were collected: its state is rebuilt, not restored).
    """

    name = "agent"

    def __init__(self, policy, epsilon: float, rng_seed: int | list[int] = 0, burn_in: int = 64):
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"loop.epsilon={epsilon}: a probability in [0, 1]")
        self.policy, self.epsilon, self.burn_in = policy, float(epsilon), int(burn_in)
        self.n = int(policy.num_actions)
        self.rng = np.random.default_rng(rng_seed)
        self.params = {"epsilon": self.epsilon}

    def start(self, seed: int) -> None:
        self.policy.reset()

    def resume(self, seed: int, frames: np.ndarray) -> None:
        self.policy.reset()
        for frame in frames[len(frames) - min(len(frames), self.burn_in) :]:
            self.policy.act(frame_batch(frame))

    def __call__(self, frame: np.ndarray) -> int:
        action = int(self.policy.act(frame_batch(frame))[0])
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            action = int(self.rng.integers(self.n))
        return action
