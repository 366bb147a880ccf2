"""Keymaps: which keys drive which action, per environment (no pygame needed: keys are pygame key names).

A keymap turns the keys held down (names as `pygame.key.name` gives them, in the order they were pressed)
into one action index of the model:

- Atari (as DIAMOND): W/A/S/D = up/left/down/right, Space = fire; the held combination is named the ALE
  way ("UPRIGHTFIRE") and mapped onto the game's minimal action set, dropping what the game lacks
  (Breakout has no UP: W+D+Space -> "RIGHTFIRE").
- procgen (CoinRun): arrows, Space = jump (up); combinations named the procgen way ("LEFT_UP").
- Crafter: WASD + crafter's own GUI keys for its action names (Space = do, Tab = sleep, R/T/F/P = place,
  1..6 = make).
- Genie: latent actions on keys 1..|A| (then 0, q, w, ...), with a legend.
- Minecraft (converted open-oasis weights, 25-d action vectors): held keys combine into one multi-hot
  vector in open-oasis' action order; arrows move the camera (`MinecraftKeymap`).
- No action names known (e.g. `context=file:` without a dataset or env): action i on the i-th key.

Keys the keymap does not bind are reported (`unbound`), never silently mapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

LATENT_KEYS = "1234567890qwrtyuiopzxcvbn"  # no e, h, m: those are player controls

ATARI_KEYS = {"w": "UP", "a": "LEFT", "s": "DOWN", "d": "RIGHT", "space": "FIRE"}
PROCGEN_KEYS = {"up": "UP", "left": "LEFT", "down": "DOWN", "right": "RIGHT", "space": "UP"}
CRAFTER_KEYS = {
    "a": "move_left",
    "d": "move_right",
    "w": "move_up",
    "s": "move_down",
    "space": "do",
    "tab": "sleep",
    "r": "place_stone",
    "t": "place_table",
    "f": "place_furnace",
    "p": "place_plant",
    "1": "make_wood_pickaxe",
    "2": "make_stone_pickaxe",
    "3": "make_iron_pickaxe",
    "4": "make_wood_sword",
    "5": "make_stone_sword",
    "6": "make_iron_sword",
}

MINECRAFT = "minecraft"  # the keymap source of Oasis' 25-d Minecraft action vectors
# open-oasis' ACTION_KEYS order (the DiT's external_cond inputs); cameraX is the pitch, cameraY the yaw
MINECRAFT_ACTIONS = ["inventory", "ESC"] + [f"hotbar.{i}" for i in range(1, 10)]
MINECRAFT_ACTIONS += ["forward", "back", "left", "right", "cameraX", "cameraY", "jump", "sneak", "sprint"]
MINECRAFT_ACTIONS += ["swapHands", "attack", "use", "pickItem", "drop"]
# open-oasis scales a camera move of d degrees (bins of 0.5 deg, at most 20 deg) to d / 20 in [-1, 1]
CAMERA_MAX_DEGREES = 20.0
CAMERA_STEP_DEGREES = 5.0  # one step with an arrow held
CAMERA_MOVES = {  # binding name -> (entry, sign); positive pitch looks down, positive yaw turns right
    "look_up": ("cameraX", -1.0),
    "look_down": ("cameraX", 1.0),
    "turn_left": ("cameraY", -1.0),
    "turn_right": ("cameraY", 1.0),
}
MINECRAFT_KEYS = {  # "ESC" stays unbound: Esc quits the player
    "w": "forward",
    "a": "left",
    "s": "back",
    "d": "right",
    "space": "jump",
    "left shift": "sneak",
    "left ctrl": "sprint",
    "r": "sprint",
    "up": "look_up",
    "down": "look_down",
    "left": "turn_left",
    "right": "turn_right",
    "j": "attack",
    "k": "use",
    "e": "inventory",
    "q": "drop",
    "f": "swapHands",
    **{str(i): f"hotbar.{i}" for i in range(1, 10)},
}
MINECRAFT_LEGEND = [
    ("w a s d", "forward / left / back / right"),
    ("space", "jump"),
    ("left shift", "sneak"),
    ("r / l-ctrl", "sprint (r while turning: ctrl+arrow is a control)"),
    ("arrows", f"look up / down, turn left / right ({CAMERA_STEP_DEGREES:g} deg a step)"),
    ("j / k", "attack / use"),
    ("1..9", "hotbar slot"),
    ("e / q / f", "inventory / drop / swap hands"),
]


@dataclass
class Keymap:
    """Held keys -> action index.

    bindings: key name -> component (directional keymaps: "UP"/"DOWN"/"LEFT"/"RIGHT"/"FIRE") or action
    name (discrete keymaps). action_meanings: the model's action names, index = action.
    combine: "atari" | "procgen" for directional keymaps, None for discrete ones (last bound key wins).
    hint: one line on the keys, shown in the player's header.
    """

    vector_actions: ClassVar[bool] = False  # True: actions are float vectors (A,), not indices

    bindings: dict[str, str]
    action_meanings: list[str]
    combine: str | None = None
    default_action: int | np.ndarray = 0
    legend: list[tuple[str, str]] = field(default_factory=list)
    hint: str = ""

    def __post_init__(self) -> None:
        if not self.legend:
            self.legend = [(key, name) for key, name in self.bindings.items()]

    @property
    def keys(self) -> set[str]:
        return set(self.bindings)

    @property
    def targets(self) -> set[str]:
        """What a key can be bound to: action names, and the directions of a directional keymap."""
        components = {"UP", "DOWN", "LEFT", "RIGHT", "FIRE"} if self.combine else set()
        return set(self.action_meanings) | components

    def describe(self, action: int) -> str:
        """An action as the header shows it."""
        return self.action_meanings[action]

    def unbound(self, pressed: Sequence[str]) -> list[str]:
        """The pressed keys this keymap has no action for."""
        return [k for k in pressed if k not in self.bindings]

    def action(self, pressed: Sequence[str]) -> int:
        """Keys held (in press order) -> action index; nothing bound held -> default_action (no-op)."""
        held = [k for k in pressed if k in self.bindings]
        if not held:
            return self.default_action
        if self.combine is None:
            return self.action_meanings.index(self.bindings[held[-1]])
        return self._combination({self.bindings[k] for k in held})

    def _combination(self, parts: set[str]) -> int:
        vertical = _one_of(parts, "UP", "DOWN")
        horizontal = _one_of(parts, "LEFT", "RIGHT")
        fire = "FIRE" if "FIRE" in parts else ""
        # most specific first, then drop what the game's action set lacks: vertical, horizontal, fire
        for v, h, f in [
            (vertical, horizontal, fire),
            ("", horizontal, fire),
            (vertical, "", fire),
            ("", "", fire),
            (vertical, horizontal, ""),
            ("", horizontal, ""),
            (vertical, "", ""),
        ]:
            name = self._name(v, h, f)
            if name in self.action_meanings:
                return self.action_meanings.index(name)
        return self.default_action

    def _name(self, vertical: str, horizontal: str, fire: str) -> str:
        if self.combine == "atari":
            return (vertical + horizontal + fire) or "NOOP"
        parts = [p for p in (horizontal, vertical) if p]  # procgen: "LEFT_UP", "RIGHT_DOWN", "UP"
        return "_".join(parts) or "NOOP"


@dataclass
class MinecraftKeymap(Keymap):
    """Held keys -> one float32 (25,) action vector in open-oasis' order (`MINECRAFT_ACTIONS`).

    Buttons held are 1 (several at once); each held arrow adds CAMERA_STEP_DEGREES to the pitch (cameraX)
    or yaw (cameraY) entry, scaled as open-oasis scales camera moves (degrees / 20). No key: zeros.
    """

    vector_actions: ClassVar[bool] = True

    @property
    def targets(self) -> set[str]:
        return (set(self.action_meanings) - {"cameraX", "cameraY"}) | set(CAMERA_MOVES)

    def action(self, pressed: Sequence[str]) -> np.ndarray:
        vector = np.zeros(len(self.action_meanings), dtype=np.float32)
        for name in {self.bindings[k] for k in pressed if k in self.bindings}:
            if name in CAMERA_MOVES:
                entry, sign = CAMERA_MOVES[name]
                vector[self.action_meanings.index(entry)] += sign * CAMERA_STEP_DEGREES / CAMERA_MAX_DEGREES
            else:
                vector[self.action_meanings.index(name)] = 1.0
        return vector

    def describe(self, action: np.ndarray) -> str:
        """e.g. "forward+jump pitch +5 yaw -5" (camera in degrees); "noop" for the zero vector."""
        action = np.asarray(action, dtype=np.float32)
        camera = {name: float(action[self.action_meanings.index(name)]) for name in ("cameraX", "cameraY")}
        parts = [n for n, v in zip(self.action_meanings, action) if n not in camera and v > 0.5]
        text = "+".join(parts)
        for label, name in (("pitch", "cameraX"), ("yaw", "cameraY")):
            if camera[name]:
                text += f" {label} {camera[name] * CAMERA_MAX_DEGREES:+.0f}"
        return text.strip() or "noop"


def minecraft_keymap() -> MinecraftKeymap:
    zeros = np.zeros(len(MINECRAFT_ACTIONS), dtype=np.float32)
    hint = "wasd move  arrows look  space jump  j/k attack/use  (h: all keys)"
    return MinecraftKeymap(dict(MINECRAFT_KEYS), list(MINECRAFT_ACTIONS), None, zeros, MINECRAFT_LEGEND, hint)


def atari_keymap(action_meanings: list[str]) -> Keymap:
    return Keymap(ATARI_KEYS, list(action_meanings), combine="atari", default_action=_noop(action_meanings))


def procgen_keymap(action_meanings: list[str]) -> Keymap:
    legend = [("arrows", "move"), ("space / up", "jump")]
    return Keymap(PROCGEN_KEYS, list(action_meanings), "procgen", _noop(action_meanings), legend)


def crafter_keymap(action_meanings: list[str]) -> Keymap:
    bindings = {k: name for k, name in CRAFTER_KEYS.items() if name in action_meanings}
    return Keymap(bindings, list(action_meanings), default_action=_noop(action_meanings))


def latent_keymap(num_actions: int) -> Keymap:
    """Genie: latent action i on the (i+1)-th key of 1..9, 0, q, w, ..."""
    if num_actions > len(LATENT_KEYS):
        raise ValueError(f"{num_actions} latent actions: at most {len(LATENT_KEYS)} fit on the keyboard")
    names = [f"latent {i}" for i in range(num_actions)]
    return Keymap({LATENT_KEYS[i]: names[i] for i in range(num_actions)}, names)


def discrete_keymap(action_meanings: list[str]) -> Keymap:
    """Any other action set: action i on the i-th key of 1..9, 0, q, w, ... (default: action 0)."""
    if len(action_meanings) > len(LATENT_KEYS):
        raise ValueError(f"{len(action_meanings)} actions: at most {len(LATENT_KEYS)} fit on the keyboard")
    return Keymap({LATENT_KEYS[i]: name for i, name in enumerate(action_meanings)}, list(action_meanings))


def keymap_for(
    source: str | None, action_meanings: list[str] | None, num_actions: int, latent: bool = False
) -> Keymap:
    """The keymap of an environment source ("atari" / "procgen" / "crafter" / "minecraft"), or latent keys
    for Genie; numbered keys when the action names are unknown."""
    if latent:
        return latent_keymap(num_actions)
    if source == MINECRAFT:
        if num_actions != len(MINECRAFT_ACTIONS):
            raise ValueError(f"the Minecraft keymap drives 25-d action vectors, the model has {num_actions}")
        return minecraft_keymap()
    if action_meanings is None:
        return discrete_keymap([f"action {i}" for i in range(num_actions)])
    if len(action_meanings) != num_actions:
        n = len(action_meanings)
        raise ValueError(f"the model has {num_actions} actions but the environment names {n}")
    builders = {"atari": atari_keymap, "procgen": procgen_keymap, "crafter": crafter_keymap}
    return builders.get(source, discrete_keymap)(action_meanings)


def with_overrides(keymap: Keymap, overrides: dict[str, str] | None) -> Keymap:
    """Bind extra keys (key name -> action name) on top of a keymap; an unknown action is a one-line error."""
    if not overrides:
        return keymap
    bindings = dict(keymap.bindings)
    valid = keymap.targets
    for key, name in overrides.items():
        if name not in valid:
            raise ValueError(f"key {key!r} bound to {name!r}, not an action of this model: {sorted(valid)}")
        bindings[str(key)] = name
    legend = keymap.legend + [(k, v) for k, v in overrides.items()]
    return replace(keymap, bindings=bindings, legend=legend)


def _one_of(parts: set[str], a: str, b: str) -> str:
    """The one of two opposite directions held, or "" for neither or both (they cancel)."""
    if (a in parts) == (b in parts):
        return ""
    return a if a in parts else b


def _noop(action_meanings: list[str]) -> int:
    for name in ("NOOP", "noop"):
        if name in action_meanings:
            return action_meanings.index(name)
    return 0
