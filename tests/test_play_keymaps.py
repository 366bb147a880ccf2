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
    assert BREAKOUT[bk.action(["d", "space"])] == "RIGHT"  # no RIGHTFIRE: moving wins over firing
    assert BREAKOUT[bk.action(["a"])] == "LEFT"
    pong = keymap_for("atari", PONG, len(PONG))  # game unknown: components do what they are named
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


def test_unknown_key_name_is_a_one_line_error_listing_key_names():
    km = keymap_for("atari", BREAKOUT, len(BREAKOUT), game="Breakout")
    with pytest.raises(ValueError, match="'notakey' is not a key name") as e:
        with_overrides(km, {"notakey": "FIRE"})
    assert "\n" not in str(e.value) and "space" in str(e.value) and "a-z" in str(e.value)
    assert BREAKOUT[with_overrides(km, {"left shift": "FIRE"}).action(["left shift"])] == "FIRE"


def test_action_names_offered_are_the_games_own():
    km = keymap_for("atari", BREAKOUT, len(BREAKOUT), game="Breakout")
    for name in ("UP", "DOWN", "RIGHTFIRE"):
        with pytest.raises(ValueError, match=f"{name!r} is not an action of Breakout") as e:
            with_overrides(km, {"x": name})
        listed = str(e.value).split("its actions: ")[1]
        assert listed == "NOOP, FIRE, RIGHT, LEFT" and "\n" not in str(e.value)
    assert sorted(km.targets) == sorted(BREAKOUT)


def test_pong_keys_follow_what_each_action_does():
    """In ALE Pong RIGHT moves the paddle up and LEFT down (tests/test_play_atari_effects.py measures it)."""
    km = keymap_for("atari", PONG, len(PONG), game="Pong")
    name = lambda *keys: PONG[km.action(list(keys))]
    assert name("w") == "RIGHT" and name("s") == "LEFT"  # up / down on screen
    assert name("w", "space") == "RIGHTFIRE" and name("s", "space") == "LEFTFIRE"
    assert name("w", "s") == "NOOP"
    assert name("a") == "NOOP" and name("d") == "NOOP" and name("d", "space") == "FIRE"
    assert km.no_effect == {"a": "left", "d": "right"}
    assert "no effect" in km.note(["d"]) and km.note(["w"]) == ""
    assert km.summary() == "w up (RIGHT)  s down (LEFT)  space FIRE  a d: no effect in Pong"
    for game in ("ALE/Pong-v5", "pong", "PONG", "PongNoFrameskip-v4", "atari:Pong"):  # forms of its name
        assert PONG[keymap_for("atari", PONG, 6, game=game).action(["w"])] == "RIGHT"


def test_combined_keys_take_the_combined_action_where_the_game_has_it():
    full = keymap_for("atari", ALE_ALL, len(ALE_ALL), game="Breakout")
    assert ALE_ALL[full.action(["d", "space"])] == "RIGHTFIRE"
    bk = keymap_for("atari", BREAKOUT, len(BREAKOUT), game="Breakout")
    # Breakout's minimal action set has no RIGHTFIRE: the paddle keeps moving (fire is dropped, and said so)
    assert BREAKOUT[bk.action(["d", "space"])] == "RIGHT"
    assert "no RIGHTFIRE in Breakout" in bk.note(["d", "space"])
    assert BREAKOUT[bk.action(["space"])] == "FIRE"
    assert bk.no_effect == {"w": "up", "s": "down"} and "w s: no effect in Breakout" in bk.summary()
    # a user binding to a combined action combines like the rest
    pong = with_overrides(keymap_for("atari", PONG, 6, game="Pong"), {"x": "RIGHTFIRE", "d": "FIRE"})
    assert PONG[pong.action(["x"])] == "RIGHTFIRE" and PONG[pong.action(["s", "d"])] == "LEFTFIRE"
    assert "d" not in pong.no_effect and pong.summary().endswith("a: no effect in Pong")
    assert ("d", "FIRE") in pong.legend and ("d", "no effect in Pong") not in pong.legend
