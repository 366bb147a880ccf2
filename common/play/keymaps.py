"""Keymaps: which keys drive which action, per environment (no pygame needed: keys are pygame key names).

A keymap turns the keys held down (names as `pygame.key.name` gives them, in the order they were pressed)
into one action index of the model:

- Atari: W/A/S/D move up/left/down/right *on screen*, Space = fire. Each key takes the ALE action component
  that does that in this game (`ATARI_EFFECTS`: in Pong RIGHT moves the paddle up, so W is RIGHT); a key
  that no action of the game does is inert and shown as such ("a d: no effect in Pong"). Held keys
  combine into the ALE action of all their components where the game has it (Pong W+Space ->
  "RIGHTFIRE"); where it lacks that action (Breakout's minimal set has no RIGHTFIRE) movement is kept and
  fire dropped (D+Space -> "RIGHT"), and the header says so.
- procgen (CoinRun): arrows, Space = jump (up); combinations named the procgen way ("LEFT_UP").
- Crafter: WASD + crafter's own GUI keys for its action names (Space = do, Tab = sleep, R/T/F/P = place,
  1..6 = make).
- Genie: latent actions on keys 1..|A| (then 0, q, w, ...), with a legend.
- Minecraft (converted open-oasis weights, 25-d action vectors): held keys combine into one multi-hot
  vector in open-oasis' action order; arrows move the camera (`MinecraftKeymap`).
- No action names known (e.g. `context=file:` without a dataset or env): action i on the i-th key.

Keys the keymap does not bind are reported (`unbound`), never silently mapped; `note()` says why held keys
do less than they ask. Extra bindings (`with_overrides`) must name a pygame key and an action of the game.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from common.data.envs import canonical_game

LATENT_KEYS = "1234567890qwrtyuiopzxcvbn"  # no e, h, m: those are player controls

DIRECTIONS = ("UP", "DOWN", "LEFT", "RIGHT")
COMPONENTS = (*DIRECTIONS, "FIRE")  # what ALE's and procgen's combined action names are made of
OPPOSITE = {"UP": "DOWN", "DOWN": "UP", "LEFT": "RIGHT", "RIGHT": "LEFT"}
# key -> what it asks for on screen (a direction, or fire); the game's keymap turns it into a component
ATARI_KEYS = {"w": "UP", "a": "LEFT", "s": "DOWN", "d": "RIGHT", "space": "FIRE"}
PROCGEN_KEYS = {"up": "UP", "left": "LEFT", "down": "DOWN", "right": "RIGHT", "space": "UP"}
# What an ALE action component does on screen where that differs from its name: game -> {component: effect}.
# Pong: the paddle moves vertically, RIGHT up and LEFT down (measured with ale-py 0.12.1: 40 frames of RIGHT
# take the player's paddle from row 69.5 to 2.5, LEFT to 157.5; tests/test_play_atari_effects.py holds
# every entry to the emulator). Add a game here only with such a measurement.
ATARI_EFFECTS = {"pong": {"RIGHT": "UP", "LEFT": "DOWN"}}
UNBINDABLE = {"escape": "Esc quits the player"}
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
    name. action_meanings: the model's action names, index = action.
    combine: "atari" | "procgen" for directional keymaps, None for discrete ones (last bound key wins).
    hint: one line on the keys, shown in the player's header.
    no_effect: keys of the layout that no action of this game performs -> what they ask ("left").
    game: the game's name, for messages ("Pong"); None when unknown.
    """

    vector_actions: ClassVar[bool] = False  # True: actions are float vectors (A,), not indices

    bindings: dict[str, str]
    action_meanings: list[str]
    combine: str | None = None
    default_action: int | np.ndarray = 0
    legend: list[tuple[str, str]] = field(default_factory=list)
    hint: str = ""
    no_effect: dict[str, str] = field(default_factory=dict)
    game: str | None = None

    def __post_init__(self) -> None:
        if not self.legend:
            self.legend = [(key, name) for key, name in self.bindings.items()]
        self.legend = [(k, v) for k, v in self.legend if k not in self.no_effect]
        self.legend += [(k, f"no effect in {self.game_name}") for k in self.no_effect]
        self._parts = [_components(name) if self.combine else None for name in self.action_meanings]

    def summary(self) -> str:
        """The header's key line: the hint, then the keys with no effect ("a d: no effect in Pong")."""
        inert = f"{' '.join(self.no_effect)}: no effect in {self.game_name}" if self.no_effect else ""
        return "  ".join(part for part in (self.hint, inert) if part)

    @property
    def game_name(self) -> str:
        return self.game or "this game"

    @property
    def keys(self) -> set[str]:
        return set(self.bindings)

    @property
    def targets(self) -> list[str]:
        """What a key can be bound to: the game's action names, then the components they are made of."""
        present = set().union(*(p for p in self._parts if p))
        return list(self.action_meanings) + [
            c for c in COMPONENTS if c in present and c not in self.action_meanings
        ]

    def describe(self, action: int) -> str:
        """An action as the header shows it."""
        return self.action_meanings[action]

    def unbound(self, pressed: Sequence[str]) -> list[str]:
        """The pressed keys this keymap has no action for (keys with no effect in this game are not unbound:
        `note` names them)."""
        return [k for k in pressed if k not in self.bindings and k not in self.no_effect]

    def action(self, pressed: Sequence[str]) -> int:
        """Keys held (in press order) -> action index; nothing bound held -> default_action (no-op)."""
        return self.resolve(pressed)[0]

    def note(self, pressed: Sequence[str]) -> str:
        """Why the held keys do less than they ask ("" when they do all of it): a key with no effect in this
        game, or a combination the game has no action for ("no RIGHTFIRE in Breakout: RIGHT")."""
        return self.resolve(pressed)[1]

    def resolve(self, pressed: Sequence[str]) -> tuple[int, str]:
        """(action, note) of the keys held, in press order: `action` and `note` at once."""
        inert = [k for k in pressed if k in self.no_effect]
        notes = [f"{' '.join(inert)}: no effect in {self.game_name}"] if inert else []
        held = [k for k in pressed if k in self.bindings]
        if not held:
            return self.default_action, "; ".join(notes)
        if self.combine is None:
            return self.action_meanings.index(self.bindings[held[-1]]), "; ".join(notes)
        whole = [self.bindings[k] for k in held if _components(self.bindings[k]) is None]
        if whole:  # an action that does not combine (procgen's "Q"): the last one pressed wins
            return self.action_meanings.index(whole[-1]), "; ".join(notes)
        order = [c for k in held for c in sorted(_components(self.bindings[k]))]  # press order
        wanted = {c for c in order if OPPOSITE.get(c) not in order}  # opposite directions cancel
        action = self._combination(wanted, order)
        got = self._parts[action] or frozenset()
        if got != wanted:
            notes.append(f"no {self._name(wanted)} in {self.game_name}: {self.action_meanings[action]}")
        return action, "; ".join(notes)

    def _combination(self, wanted: set[str], order: list[str]) -> int:
        """The action doing the most of `wanted` and nothing else: movement first (a held fire key never stops
        the paddle), then fire, then the direction pressed last."""
        best, best_score = self.default_action, (-1,)
        for i, parts in enumerate(self._parts):
            if parts is None or not parts <= wanted:
                continue
            moves = parts - {"FIRE"}
            last = max((len(order) - 1 - order[::-1].index(c) for c in moves), default=-1)
            score = (len(moves), "FIRE" in parts, last)
            if score > best_score:
                best, best_score = i, score
        return best

    def _name(self, parts: set[str]) -> str:
        """A set of components as this source names the combined action ("RIGHTFIRE", "LEFT_UP")."""
        vertical = "".join(p for p in ("UP", "DOWN") if p in parts)
        horizontal = "".join(p for p in ("RIGHT", "LEFT") if p in parts)
        if self.combine == "atari":
            return (vertical + horizontal + ("FIRE" if "FIRE" in parts else "")) or "NOOP"
        return "_".join(p for p in (horizontal, vertical) if p) or "NOOP"  # procgen: "LEFT_UP"


@dataclass
class MinecraftKeymap(Keymap):
    """Held keys -> one float32 (25,) action vector in open-oasis' order (`MINECRAFT_ACTIONS`).

    Buttons held are 1 (several at once); each held arrow adds CAMERA_STEP_DEGREES to the pitch (cameraX)
    or yaw (cameraY) entry, scaled as open-oasis scales camera moves (degrees / 20). No key: zeros.
    """

    vector_actions: ClassVar[bool] = True

    @property
    def targets(self) -> list[str]:
        return [n for n in self.action_meanings if n not in ("cameraX", "cameraY")] + list(CAMERA_MOVES)

    def action(self, pressed: Sequence[str]) -> np.ndarray:
        vector = np.zeros(len(self.action_meanings), dtype=np.float32)
        for name in {self.bindings[k] for k in pressed if k in self.bindings}:
            if name in CAMERA_MOVES:
                entry, sign = CAMERA_MOVES[name]
                vector[self.action_meanings.index(entry)] += sign * CAMERA_STEP_DEGREES / CAMERA_MAX_DEGREES
            else:
                vector[self.action_meanings.index(name)] = 1.0
        return vector

    def resolve(self, pressed: Sequence[str]) -> tuple[np.ndarray, str]:
        return self.action(pressed), ""  # every Minecraft key combines with every other

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
    return MinecraftKeymap(
        dict(MINECRAFT_KEYS), list(MINECRAFT_ACTIONS), None, zeros, MINECRAFT_LEGEND, hint, game="Minecraft"
    )


def atari_keymap(action_meanings: list[str], game: str | None = None) -> Keymap:
    """W/A/S/D/Space onto the ALE components that move up/left/down/right or fire in `game` (ATARI_EFFECTS)."""
    bindings, no_effect = _directional(ATARI_KEYS, action_meanings, ATARI_EFFECTS.get(game_key(game), {}))
    legend = [(k, c if ATARI_KEYS[k] == c else f"{ATARI_KEYS[k].lower()} ({c})") for k, c in bindings.items()]
    hint = "  ".join(f"{k} {v}" for k, v in legend)  # "w up (RIGHT)  s down (LEFT)  space FIRE"
    return Keymap(
        bindings, list(action_meanings), "atari", _noop(action_meanings), legend, hint, no_effect, game
    )


def procgen_keymap(action_meanings: list[str], game: str | None = None) -> Keymap:
    bindings, no_effect = _directional(PROCGEN_KEYS, action_meanings, {})
    legend = [("arrows", "move"), ("space / up", "jump")]
    return Keymap(
        bindings, list(action_meanings), "procgen", _noop(action_meanings), legend, "", no_effect, game
    )


def _directional(
    keys: dict[str, str], action_meanings: list[str], effects: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """keys (key -> direction on screen, or FIRE) -> (key -> the component doing that in this game,
    key -> what it asks for, where no action of the game does it)."""
    present = set().union(*(p for p in map(_components, action_meanings) if p))
    doing = {effects.get(c, c): c for c in present}  # what it does on screen -> component
    bindings = {k: doing[t] for k, t in keys.items() if t in doing}
    no_effect = {k: t.lower() for k, t in keys.items() if t not in doing}
    return bindings, no_effect


def crafter_keymap(action_meanings: list[str]) -> Keymap:
    bindings = {k: name for k, name in CRAFTER_KEYS.items() if name in action_meanings}
    return Keymap(bindings, list(action_meanings), default_action=_noop(action_meanings))


def latent_keymap(num_actions: int, matches: list[str | None] | None = None) -> Keymap:
    """Genie: latent action i on the (i+1)-th key of 1..9, 0, q, w, ...; `matches[i]` (the real control latent
    action i matches best, common.action_nmi.latent_legend) goes beside it in the legend and header."""
    if num_actions > len(LATENT_KEYS):
        raise ValueError(f"{num_actions} latent actions: at most {len(LATENT_KEYS)} fit on the keyboard")
    names = [f"latent {i}" for i in range(num_actions)]
    if matches:
        names = [f"{n} ~ {m}" if m else f"{n} (never inferred)" for n, m in zip(names, matches)]
    return Keymap({LATENT_KEYS[i]: names[i] for i in range(num_actions)}, names)


def discrete_keymap(action_meanings: list[str]) -> Keymap:
    """Any other action set: action i on the i-th key of 1..9, 0, q, w, ... (default: action 0)."""
    if len(action_meanings) > len(LATENT_KEYS):
        raise ValueError(f"{len(action_meanings)} actions: at most {len(LATENT_KEYS)} fit on the keyboard")
    return Keymap({LATENT_KEYS[i]: name for i, name in enumerate(action_meanings)}, list(action_meanings))


def keymap_for(
    source: str | None,
    action_meanings: list[str] | None,
    num_actions: int,
    latent: bool = False,
    game: str | None = None,
    latent_matches: list[str | None] | None = None,
) -> Keymap:
    """The keymap of an environment source ("atari" / "procgen" / "crafter" / "minecraft") and game, or
    latent keys for Genie (with `latent_matches`, what each does); numbered keys when the action names are
    unknown."""
    if latent:
        return latent_keymap(num_actions, latent_matches)
    if source == MINECRAFT:
        if num_actions != len(MINECRAFT_ACTIONS):
            raise ValueError(f"the Minecraft keymap drives 25-d action vectors, the model has {num_actions}")
        return minecraft_keymap()
    if action_meanings is None:
        return discrete_keymap([f"action {i}" for i in range(num_actions)])
    if len(action_meanings) != num_actions:
        n = len(action_meanings)
        raise ValueError(f"the model has {num_actions} actions but the environment names {n}")
    if source == "atari":
        return atari_keymap(action_meanings, game)
    if source == "procgen":
        return procgen_keymap(action_meanings, game)
    keymap = crafter_keymap(action_meanings) if source == "crafter" else discrete_keymap(action_meanings)
    return replace(keymap, game=game)


def with_overrides(keymap: Keymap, overrides: dict[str, str] | None) -> Keymap:
    """Bind extra keys (pygame key name -> action name of this game) on top of a keymap.

    Errors (one line, listing what is valid): a key name pygame does not know, a key the player needs
    (Esc), an action name the game does not have (Breakout: NOOP, FIRE, RIGHT, LEFT)."""
    if not overrides:
        return keymap
    bindings, no_effect = dict(keymap.bindings), dict(keymap.no_effect)
    valid = keymap.targets
    for key, name in overrides.items():
        key, name = str(key), str(name)
        if key in UNBINDABLE:
            raise ValueError(f"bindings: {key!r} cannot be bound ({UNBINDABLE[key]})")
        if key not in key_names():
            raise ValueError(f"bindings: {key!r} is not a key name; key names (pygame's): {_key_list()}")
        if name not in valid:
            raise ValueError(
                f"bindings: {name!r} is not an action of {keymap.game or 'this model'}; its actions: {', '.join(valid)}"
            )
        bindings[key] = name
        no_effect.pop(key, None)
    legend = [(k, v) for k, v in keymap.legend if k not in overrides] + [(k, v) for k, v in overrides.items()]
    return replace(keymap, bindings=bindings, legend=legend, no_effect=no_effect)


def game_key(game: str | None) -> str:
    """A game's name as ATARI_EFFECTS keys it: the Atari game's one name (`canonical_game`: "ALE/Pong-v5",
    "PongNoFrameskip-v4", "atari:Pong" -> "pong"); a name that is no Atari game is lower-cased alnum."""
    name = (game or "").split(":")[-1]
    try:
        return canonical_game("atari", name).lower()
    except ValueError:
        return re.sub(r"[^a-z0-9]", "", re.sub(r"-v\d+$", "", name.lower().split("/")[-1]))


@functools.cache
def key_names() -> frozenset[str]:
    """Every key name `pygame.key.name` gives (what the window reports held keys as)."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    with warnings.catch_warnings():  # the names are static: no display needed
        warnings.simplefilter("ignore")
        names = {pygame.key.name(getattr(pygame, k)) for k in dir(pygame) if k.startswith("K_")}
    return frozenset(n for n in names if n)


def _key_list() -> str:
    """The key names, ranges folded: "a-z, 0-9, f1-f15, [0]-[9] (keypad), backspace, ..."."""
    names = key_names()
    folded = {chr(c) for c in range(ord("a"), ord("z") + 1)} | {str(i) for i in range(10)}
    folded |= {f"f{i}" for i in range(1, 16)} | {f"[{i}]" for i in range(10)}
    rest = sorted(n for n in names - folded - set(UNBINDABLE) if len(n) > 1)
    return ", ".join(["a-z", "0-9", "f1-f15", "[0]-[9] (keypad)", *rest, "and punctuation as typed"])


def _components(name: str) -> frozenset[str] | None:
    """An action name as the set of components it combines: "RIGHTFIRE" -> {RIGHT, FIRE}, "LEFT_UP" ->
    {LEFT, UP}, "NOOP" -> {}; None for an action that does not combine ("Q", "do")."""
    if name.upper() == "NOOP":
        return frozenset()
    if "_" in name:
        parts = name.split("_")
        return frozenset(parts) if all(p in DIRECTIONS for p in parts) else None
    match = re.fullmatch(r"(UP|DOWN)?(RIGHT|LEFT)?(FIRE)?", name)
    return frozenset(p for p in match.groups() if p) if match and any(match.groups()) else None


def _noop(action_meanings: list[str]) -> int:
    for name in ("NOOP", "noop"):
        if name in action_meanings:
            return action_meanings.index(name)
    return 0
