"""Keymaps: every bound key maps to a valid action; Atari combinations land on the minimal action set."""

import itertools

import pytest

from common.play.keymaps import keymap_for, with_overrides

ALE_ALL = [
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT", "UPFIRE",
    "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE",
]  # fmt: skip
BREAKOUT = ["NOOP", "FIRE", "RIGHT", "LEFT"]
PONG = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
PROCGEN = ["LEFT_DOWN", "LEFT", "LEFT_UP", "DOWN", "NOOP", "UP", "RIGHT_DOWN", "RIGHT", "RIGHT_UP"]
PROCGEN += ["D", "A", "W", "S", "Q", "E"]
CRAFTER = [
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone", "place_table",
    "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe", "make_iron_pickaxe",
    "make_wood_sword", "make_stone_sword", "make_iron_sword",
]  # fmt: skip

CASES = [("atari", ALE_ALL), ("atari", BREAKOUT), ("atari", PONG), ("procgen", PROCGEN), ("crafter", CRAFTER)]


@pytest.mark.parametrize("source,meanings", CASES)
def test_every_key_combination_is_a_valid_action(source, meanings):
    km = keymap_for(source, meanings, len(meanings))
    keys = sorted(km.keys)
    assert keys
    for r in (0, 1, 2, 3):
        for combo in itertools.combinations(keys, r):
            assert 0 <= km.action(list(combo)) < len(meanings)
    assert meanings[km.action([])].lower() == "noop"


def test_atari_combinations_full_action_set():
    km = keymap_for("atari", ALE_ALL, len(ALE_ALL))
    name = lambda *keys: ALE_ALL[km.action(list(keys))]
    assert name("w") == "UP"
    assert name("w", "d") == "UPRIGHT"
    assert name("s", "a", "space") == "DOWNLEFTFIRE"
    assert name("space") == "FIRE"
    assert name("a", "d") == "NOOP"  # opposite directions cancel
    assert name("w", "s", "space") == "FIRE"


def test_atari_combinations_onto_minimal_action_sets():
    bk = keymap_for("atari", BREAKOUT, len(BREAKOUT))
    assert BREAKOUT[bk.action(["w"])] == "NOOP"  # Breakout has no UP
    assert BREAKOUT[bk.action(["w", "d"])] == "RIGHT"
    assert BREAKOUT[bk.action(["d", "space"])] == "FIRE"  # no RIGHTFIRE: fire wins over moving
    assert BREAKOUT[bk.action(["a"])] == "LEFT"
    pong = keymap_for("atari", PONG, len(PONG))
    assert PONG[pong.action(["d", "space"])] == "RIGHTFIRE"
    assert PONG[pong.action(["w", "a", "space"])] == "LEFTFIRE"


def test_procgen_arrows_and_jump():
    km = keymap_for("procgen", PROCGEN, len(PROCGEN))
    name = lambda *keys: PROCGEN[km.action(list(keys))]
    assert name("left") == "LEFT"
    assert name("right", "space") == "RIGHT_UP"
    assert name("left", "down") == "LEFT_DOWN"
    assert name("space") == "UP"
    assert name() == "NOOP"


def test_crafter_keys_and_last_pressed_wins():
    km = keymap_for("crafter", CRAFTER, len(CRAFTER))
    assert CRAFTER[km.action(["space"])] == "do"
    assert CRAFTER[km.action(["w", "tab"])] == "sleep"
    assert CRAFTER[km.action(["1"])] == "make_wood_pickaxe"
    assert km.unbound(["x", "w"]) == ["x"]


def test_latent_keymap_and_legend():
    km = keymap_for("procgen", PROCGEN, 8, latent=True)
    assert [km.action([str(i + 1)]) for i in range(8)] == list(range(8))
    assert len(km.legend) == 8 and km.legend[0] == ("1", "latent 0")
    assert km.unbound(["9"]) == ["9"]


def test_bad_keymaps_are_one_line_errors():
    with pytest.raises(ValueError, match="not an action"):
        with_overrides(keymap_for("crafter", CRAFTER, len(CRAFTER)), {"x": "fly"})
    with pytest.raises(ValueError, match="names 4"):
        keymap_for("atari", BREAKOUT, 6)
    km = with_overrides(keymap_for("crafter", CRAFTER, len(CRAFTER)), {"x": "noop", "g": "do"})
    assert CRAFTER[km.action(["g"])] == "do"
