"""The play loop as a state machine, independent of pygame (the window feeds it commands and held keys).

A session drives a WorldModel (batch 1) and, when there is one, the real environment in lockstep with the
same action stream, and shows one of them (`view`: "model" or "env"). Commands:

    reset        new context (next held-out episode / next env seed)
    pause        pause / resume
    step_once    one step while paused
    view_model / view_env / toggle_view
    more_steps / fewer_steps   steps before an automatic reset
    toggle_policy              human keys <-> the checkpoint's agent (`m`); random actions without one
    toggle_help, quit

`tick(pressed)` advances one step unless paused; an automatic reset follows a predicted (or real) episode
end, or `max_steps` steps. Genie's latent actions cannot drive the real env: its env runs on the env's own
keymap (or random env actions) while the model takes the latent keys.

The agent: a checkpoint's `WorldModel.policy` (e.g. DIAMOND's actor-critic), found through the interface
only. While it plays it acts on the frame on show (the model's, or the real env's in the env view), its
recurrent state burned in on the frames shown before it took over (and on each new context); the same
action drives the real env in lockstep. A checkpoint without one gets random actions on `m`, and the
header says so.

Speed: the status carries the last model step's wall time and the rate steps really came at; when the
median of the last `SLOW_STEPS` model steps is over `SLOW_FACTOR` times the target frame period, one
warning goes to stderr and stays in the header (on a busy CPU, more torch threads can be far slower).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from common.play.context import Context, env_context, replay
from common.play.keymaps import Keymap
from common.play.policies import AgentPolicy, RandomPolicy, action_batch, make_policy

COMMANDS = (
    "reset",
    "pause",
    "step_once",
    "view_model",
    "view_env",
    "toggle_view",
    "more_steps",
    "fewer_steps",
    "toggle_policy",
    "toggle_help",
    "quit",
)
STEP_CHOICES = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
SLOW_STEPS = 5  # model steps whose median decides "slow" (the first ones may be warm-up)
SLOW_FACTOR = 3.0  # slow: the median step takes this many target frame periods
RATE_STEPS = 10  # steps the shown rate is measured over


@dataclass
class Status:
    """What the header shows."""

    view: str
    step: int
    max_steps: int
    episode: int
    action: str
    reward: float | None
    ret: float | None
    done: bool | None
    paused: bool
    policy: str  # who plays: "human", "agent" (the checkpoint's) or "random"
    message: str
    step_ms: float  # wall time of the last model step
    fps: float | None = None  # steps per second over the last RATE_STEPS steps (None: fewer than 2 yet)
    target_fps: float | None = None
    warning: str = ""  # the slow-step warning, once given
    agent: bool = False  # the checkpoint carries an agent (what `m` hands the controls to)


class Session:
    """One player: a world model, an optional real env, a context source, keymaps and the loop state.

    context: index -> Context (a held-out dataset episode), or None to take the context from the real env.
    make_env: builds the real environment (called once, on the first reset); None when there is none.
    keymap: keys -> model actions; env_keymap: keys -> env actions (None: same as keymap, i.e. same actions).
    fps: the target frame rate (for the slow-step warning; None: no warning).
    threads: torch CPU threads, named in the warning (None: torch.get_num_threads()).
    """

    def __init__(
        self,
        world_model,
        keymap: Keymap,
        context: Callable[[int], Context] | None = None,
        make_env: Callable[[], object] | None = None,
        env_keymap: Keymap | None = None,
        max_steps: int = 1000,
        seed: int = 0,
        device: str | torch.device = "cpu",
        view: str = "model",
        fps: float | None = None,
        threads: int | None = None,
    ) -> None:
        if context is None and make_env is None:
            raise ValueError(
                "no context: pass a dataset (context=dataset) or a real environment (context=env)"
            )
        self.world_model = world_model
        self.keymap = keymap
        self.env_keymap = env_keymap
        self.latent = env_keymap is not None
        self.context_source = context
        self.make_env = make_env
        self.env = None
        self.env_error = ""
        self.max_steps = max_steps
        self.seed = seed
        self.device = torch.device(device)
        self.view = view
        self.paused = False
        self.policy = "human"
        self.show_help = False
        self.running = True
        self.episode = -1
        self.message = ""  # from the last command
        self.key_note = ""  # about the keys held at the last step
        self.target_fps = fps
        self.threads = threads or torch.get_num_threads()
        self.warning = ""
        self._recent_ms: deque[float] = deque(maxlen=SLOW_STEPS)
        self._step_ends: deque[float] = deque(maxlen=RATE_STEPS + 1)
        self.random_model = make_policy(
            "random", world_model.num_actions, seed, minecraft=keymap.vector_actions
        )
        self.random_env: RandomPolicy | None = None
        policy = world_model.policy  # the checkpoint's agent (WorldModel.policy), None without one
        self.agent = AgentPolicy(policy, self.device) if policy is not None else None
        self._shown: deque[np.ndarray] = deque(
            maxlen=world_model.context_length
        )  # frames on show, oldest first
        self.context: Context | None = None
        self._step_once = False
        self._pending_reset = False
        self.reset()

    # --- commands -------------------------------------------------------------------------------------
    def command(self, name: str) -> None:
        if name not in COMMANDS:
            raise ValueError(f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
        self.message = ""
        if name == "reset":
            self.reset()
        elif name == "pause":
            self.paused = not self.paused
        elif name == "step_once":
            self._step_once = self.paused
        elif name in ("view_model", "view_env", "toggle_view"):
            want = {"view_model": "model", "view_env": "env"}.get(name)
            want = want or ("env" if self.view == "model" else "model")
            if want == "env" and self.env is None:
                self.message = f"no real environment: {self.env_error or 'none configured'}"
            else:
                self.view = want
        elif name == "more_steps":
            self.max_steps = next((s for s in STEP_CHOICES if s > self.max_steps), self.max_steps)
        elif name == "fewer_steps":
            self.max_steps = next((s for s in reversed(STEP_CHOICES) if s < self.max_steps), self.max_steps)
        elif name == "toggle_policy":
            if self.policy != "human":
                self.policy = "human"  # the header says so; the key notes show again
            elif self.agent is not None:
                self.policy, self.message = "agent", "the checkpoint's agent plays (m: back to your keys)"
                self.agent.begin(np.stack(self._shown))
            else:
                self.policy = "random"
                self.message = "random actions: this checkpoint carries no agent (m: back to your keys)"
        elif name == "toggle_help":
            self.show_help = not self.show_help
        elif name == "quit":
            self.running = False

    # --- loop -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """A new context: the next held-out episode (or env seed); the real env is replayed onto it."""
        self.episode += 1
        self._ensure_env()
        noop = self.env_keymap.default_action if self.latent else self.keymap.default_action
        if self.context_source is not None:
            self.context = self.context_source(self.episode)
            env_frame = self._replay_env(self.context)
        else:
            self.context = env_context(
                self.env, self.seed + self.episode, self.world_model.context_length, noop
            )
            env_frame = self.context.frames[-1]
        frames = torch.from_numpy(self.context.frames).to(self.device)[None]
        actions = None if self.latent else torch.from_numpy(self.context.actions).to(self.device)[None]
        with torch.inference_mode():
            self.world_model.reset(frames, actions)
        self.model_frame = self.context.frames[-1]
        self.env_frame = env_frame
        self._shown.clear()
        self._shown.extend(self.context.frames)
        if self.policy == "agent":
            self.agent.begin(self.context.frames)
        self.step_count = 0
        self.last_action = "-"
        self.model_reward: float | None = None
        self.model_return: float | None = None
        self.model_done: bool | None = None
        self.env_reward = 0.0
        self.env_return = 0.0
        self.env_done = False
        self.step_ms = 0.0
        self._pending_reset = False

    def tick(self, pressed: Sequence[str] = ()) -> bool:
        """Advance one step unless paused. pressed: key names held, in press order. True if it stepped."""
        if self._pending_reset:
            self.reset()
            return False
        if self.paused and not self._step_once:
            return False
        self._step_once = False
        model_action, env_action = self._actions(pressed)
        self.step(model_action, env_action)
        return True

    def step(self, model_action: int | np.ndarray, env_action: int | None = None) -> None:
        """One step of the model (and of the real env in lockstep, with env_action or the same action).

        model_action: an index, or a float32 (A,) vector for vector keymaps (Minecraft)."""
        env_action = model_action if env_action is None else env_action
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.world_model.step(action_batch(model_action, self.device))
        end = time.perf_counter()
        self.step_ms = 1000 * (end - start)
        self._step_ends.append(end)
        self._recent_ms.append(self.step_ms)
        self._check_speed()
        self.model_frame = out.frames[0].cpu().numpy()
        if out.reward is not None:
            self.model_reward = float(out.reward[0])
            self.model_return = (self.model_return or 0.0) + self.model_reward
        if out.done is not None:
            self.model_done = bool(out.done[0])
        if self.env is not None and not self.env_done:
            self.env_frame, self.env_reward, self.env_done = self.env.step(env_action)
            self.env_return += self.env_reward
        self.last_action = self._action_name(model_action, env_action)
        self._shown.append(self.frame)
        self.step_count += 1
        done = self.env_done if self.view == "env" else bool(self.model_done)
        if done or self.step_count >= self.max_steps:
            self._pending_reset = True

    # --- views ----------------------------------------------------------------------------------------
    @property
    def frame(self) -> np.ndarray:
        """The frame on show: uint8 (H, W, C)."""
        return self.env_frame if self.view == "env" else self.model_frame

    def status(self) -> Status:
        env = self.view == "env"
        return Status(
            view=self.view,
            step=self.step_count,
            max_steps=self.max_steps,
            episode=self.episode,
            action=self.last_action,
            reward=self.env_reward if env else self.model_reward,
            ret=self.env_return if env else self.model_return,
            done=self.env_done if env else self.model_done,
            paused=self.paused,
            policy=self.policy,
            message=self.message or self.key_note,
            step_ms=self.step_ms,
            fps=self.fps,
            target_fps=self.target_fps,
            warning=self.warning,
            agent=self.agent is not None,
        )

    @property
    def fps(self) -> float | None:
        """Steps per second over the last RATE_STEPS steps (model, env and drawing together)."""
        ends = self._step_ends
        return (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else None

    def close(self) -> None:
        if self.env is not None:
            self.env.close()

    # --- internals ------------------------------------------------------------------------------------
    def _unbound_note(self, pressed: Sequence[str]) -> str:
        unbound = self.keymap.unbound(pressed)
        if self.env_keymap is not None:
            unbound = [k for k in unbound if k in self.env_keymap.unbound(pressed)]
        return f"key {unbound[-1]!r}: no action bound (h for help)" if unbound else ""

    def _check_speed(self) -> None:
        """Warn once (stderr and header) when model steps are far slower than the target frame rate."""
        if self.warning or not self.target_fps or len(self._recent_ms) < SLOW_STEPS:
            return
        ms, period = statistics.median(self._recent_ms), 1000.0 / self.target_fps
        if ms <= SLOW_FACTOR * period:
            return
        self.warning = (
            f"model steps take {ms:.0f} ms, {ms / period:.0f}x the {period:.0f} ms of {self.target_fps:g} fps"
        )
        if self.threads > 1:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            self.warning += (
                f": try threads=1 (now threads={self.threads}; load {load:.1f} on {os.cpu_count()} CPUs)"
            )
        print(f"warning: {self.warning}", file=sys.stderr)

    def _ensure_env(self) -> None:
        if self.env is not None or self.make_env is None or self.env_error:
            return
        try:
            self.env = self.make_env()
        except Exception as e:  # noqa: BLE001 - a missing env only disables the env view
            self.env_error = f"{type(e).__name__}: {e}"
            if self.context_source is None:
                raise
            self.message = f"no real environment ({self.env_error})"
        if self.env is not None and self.latent:
            self.random_env = RandomPolicy(len(self.env_keymap.action_meanings), self.seed + 1)

    def _replay_env(self, context: Context) -> np.ndarray | None:
        if self.env is None:
            return None
        return replay(self.env, context)

    def _actions(self, pressed: Sequence[str]) -> tuple[int | np.ndarray, int | None]:
        """The actions of this step; sets `key_note`, what the held keys do not do (unbound keys, keys with
        no effect in this game, a combination it lacks)."""
        self.key_note = ""
        if self.policy == "agent":
            return self.agent(self.step_count, self.frame), None
        if self.policy == "random":
            model_action = self.random_model(self.step_count)
            env_action = self.random_env(self.step_count) if (self.latent and self.random_env) else None
            return model_action, env_action
        model_action, note = self.keymap.resolve(pressed)
        env_action = None
        if self.latent:  # the keys' meaning for the game is the env keymap's
            env_action, note = self.env_keymap.resolve(pressed)
        self.key_note = self._unbound_note(pressed) or note
        return model_action, env_action

    def _action_name(self, model_action: int | np.ndarray, env_action: int | None) -> str:
        name = self.keymap.describe(model_action)
        if self.latent and self.env is not None and env_action is not None:
            name += f" | env {self.env_keymap.describe(env_action)}"
        return name
