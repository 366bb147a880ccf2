"""The play state machine (no pygame): reset, step, pause, step once, switch views, auto reset, policies."""

import numpy as np
import pytest

from common.play.keymaps import keymap_for
from common.play.session import Session
from tests.test_play_fakes import BREAKOUT, FakeEnv, FakeWorldModel, fake_context


def make(context=True, env=True, **kw):
    model = FakeWorldModel(**{k: kw.pop(k) for k in ("episode",) if k in kw})
    keymap = keymap_for("atari", BREAKOUT, 4)
    return Session(
        model, keymap, context=fake_context() if context else None, make_env=FakeEnv if env else None, **kw
    )


def test_reset_step_pause_and_step_once():
    s = make()
    assert s.episode == 0 and s.step_count == 0 and s.frame.shape == (64, 64, 3)
    assert s.tick(["d"]) and s.step_count == 1 and s.status().action == "RIGHT"
    s.command("pause")
    assert not s.tick(["d"]) and s.step_count == 1
    s.command("step_once")
    assert s.tick(["space"]) and s.step_count == 2 and s.status().action == "FIRE"
    assert s.status().reward == 1.0 and s.status().ret == 1.0
    assert not s.tick([]) and s.step_count == 2
    s.command("pause")
    s.command("reset")
    assert s.episode == 1 and s.step_count == 0 and s.world_model.resets == 2


def test_env_in_lockstep_with_same_actions():
    s = make()
    for keys in (["d"], ["a"], ["d", "space"], [], ["d"]):
        s.tick(keys)
    assert np.array_equal(s.model_frame, s.env_frame)  # fake model == fake env under the same action stream
    s.command("view_env")
    assert s.view == "env" and s.frame is s.env_frame
    s.command("toggle_view")
    assert s.view == "model"


def test_env_context_and_missing_env():
    s = make(context=False)
    assert s.context.frames.shape == (4, 64, 64, 3) and np.array_equal(s.frame, s.env_frame)
    s = make(env=False)
    s.command("view_env")
    assert s.view == "model" and "no real environment" in s.message
    with pytest.raises(ValueError, match="no context"):
        make(context=False, env=False)


def test_auto_reset_on_done_and_max_steps():
    s = make(episode=3)
    for _ in range(3):
        s.tick([])
    assert s.status().done is True
    s.tick([])
    assert s.episode == 1 and s.step_count == 0
    s.max_steps = 2
    s.tick([]), s.tick([]), s.tick([])
    assert s.episode == 2
    s.command("more_steps")
    assert s.max_steps == 10
    s.command("fewer_steps"), s.command("fewer_steps")
    assert s.max_steps == 10


def test_random_policy_and_unbound_key_message():
    s = make()
    s.command("toggle_policy")
    assert s.policy == "random"
    for _ in range(5):
        s.tick([])
    assert s.step_count == 5
    s.command("toggle_policy")
    s.tick(["x"])
    assert "no action bound" in s.status().message
    with pytest.raises(ValueError, match="unknown command"):
        s.command("fly")
    s.command("quit")
    assert not s.running


def test_latent_actions_drive_env_with_its_own_keymap():
    model = FakeWorldModel(num_actions=4)
    s = Session(
        model,
        keymap_for(None, None, 4, latent=True),
        make_env=FakeEnv,
        env_keymap=keymap_for("atari", BREAKOUT, 4),
    )
    s.tick(["2", "d"])
    assert s.status().action == "latent 1 | env RIGHT"


class SlowModel(FakeWorldModel):
    """A model whose steps take `ms` milliseconds of wall time."""

    def __init__(self, ms: float):
        super().__init__()
        self.ms = ms

    def step(self, actions):
        import time

        time.sleep(self.ms / 1000)
        return super().step(actions)


def test_slow_steps_warn_once(capsys):
    s = Session(SlowModel(30), keymap_for("atari", BREAKOUT, 4), fake_context(), fps=100, threads=2)
    for _ in range(3):
        s.tick([])
    assert s.status().warning == "" and capsys.readouterr().err == ""  # not yet: a few steps may be warm-up
    for _ in range(6):
        s.tick([])
    warning = s.status().warning
    assert "model steps take" in warning and "100 fps" in warning and "threads=2" in warning
    assert 30 <= s.status().step_ms < 1000
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "\n" == err[-1] and err.count("\n") == 1
    for _ in range(6):
        s.tick([])
    assert capsys.readouterr().err == ""  # once
    fast = Session(FakeWorldModel(), keymap_for("atari", BREAKOUT, 4), fake_context(), fps=15)
    for _ in range(8):
        fast.tick([])
    assert fast.status().warning == ""


def test_key_notes_show_while_held():
    s = Session(FakeWorldModel(), keymap_for("atari", BREAKOUT, 4, game="Breakout"), fake_context())
    s.tick(["d", "space"])
    assert s.status().action == "RIGHT" and "no RIGHTFIRE in Breakout" in s.status().message
    s.tick(["w"])
    assert s.status().message == "w: no effect in Breakout"
    s.tick([])
    assert s.status().message == ""
