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

Keys the keymap does not bind are reported (`unbound`), never silently mapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass
class Keymap:
    """Held keys -> action index.

    bindings: key name -> component (directional keymaps: "UP"/"DOWN"/"LEFT"/"RIGHT"/"FIRE") or action
    name (discrete keymaps). action_meanings: the model's action names, index = action.
    combine: "atari" | "procgen" for directional keymaps, None for discrete ones (last bound key wins).
    """

    bindings: dict[str, str]
    action_meanings: list[str]
    combine: str | None = None
    default_action: int = 0
    legend: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.legend:
            self.legend = [(key, name) for key, name in self.bindings.items()]

    @property
    def keys(self) -> set[str]:
        return set(self.bindings)

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
    """The keymap of an environment source ("atari" / "procgen" / "crafter"), or latent keys for Genie."""
    if latent:
        return latent_keymap(num_actions)
    if action_meanings is None:
        action_meanings = [f"action {i}" for i in range(num_actions)]
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
    components = {"UP", "DOWN", "LEFT", "RIGHT", "FIRE"} if keymap.combine else set()
    valid = set(keymap.action_meanings) | components
    for key, name in overrides.items():
        if name not in valid:
            raise ValueError(f"key {key!r} bound to {name!r}, not an action of this model: {sorted(valid)}")
        bindings[str(key)] = name
    legend = keymap.legend + [(k, v) for k, v in overrides.items()]
    return Keymap(bindings, keymap.action_meanings, keymap.combine, keymap.default_action, legend)


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
