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
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
