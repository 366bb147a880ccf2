"""The Atari keymaps against the real emulator: each movement key moves the player's sprite that way.

Every game of `ATARI_EFFECTS` (actions that do something other than their name) needs a probe here, so
no entry goes in unmeasured; Breakout checks the default (names mean what they say).
"""

import numpy as np
import pytest

from common.play.keymaps import ATARI_EFFECTS, ATARI_KEYS, game_key, keymap_for

ale_py = pytest.importorskip("ale_py")


def pong_paddle(screen: np.ndarray) -> tuple[float, float]:
    """(row, column) of the player's (right, green) paddle in a 210x160 Pong screen."""
    rows, cols = np.nonzero((screen[34:194, 140:144] == [92, 186, 92]).all(-1))
    return 34 + rows.mean(), 140 + cols.mean()


def breakout_paddle(screen: np.ndarray) -> tuple[float, float]:
    """(row, column) of Breakout's paddle (red, rows 189-193)."""
    rows, cols = np.nonzero((screen[189:194] == [200, 72, 72]).all(-1))
    return 189 + rows.mean(), cols.mean()


PROBES = {"Pong": pong_paddle, "Breakout": breakout_paddle}
STEP = {"UP": (-1, 0), "DOWN": (1, 0), "LEFT": (0, -1), "RIGHT": (0, 1)}  # (row, column) sign on screen


def test_every_effects_entry_is_measured_here():
    assert set(ATARI_EFFECTS) <= {game_key(g) for g in PROBES}


@pytest.mark.parametrize("game", sorted(PROBES))
def test_movement_keys_move_the_player_that_way(game):
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", 0)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path(game.lower()))
    actions = list(ale.getMinimalActionSet())  # what worldplay's Atari adapter and its shards use
    keymap = keymap_for("atari", [a.name for a in actions], len(actions), game=game)
    for _ in range(60):
        ale.act(actions[0])
    start = ale.cloneState()
    moved = {}
    for key, direction in ATARI_KEYS.items():
        if direction not in STEP or key not in keymap.bindings:
            continue
        ale.restoreState(start)
        before = np.array(PROBES[game](ale.getScreenRGB()))
        for _ in range(40):
            ale.act(actions[keymap.action([key])])
        delta = np.array(PROBES[game](ale.getScreenRGB())) - before
        moved[key] = delta
        axis = 0 if direction in ("UP", "DOWN") else 1
        assert np.sign(delta[axis]) == STEP[direction][axis] and abs(delta[axis]) > 10, (game, key, delta)
    assert len(moved) == 2  # Pong: w s (a d no effect); Breakout: a d (w s no effect)
