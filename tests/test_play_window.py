"""A scripted pygame session (SDL dummy driver, synthetic key events): reset, step, pause, switch, quit."""

import os

import pytest

from tests.test_play_fakes import BREAKOUT, PROCGEN_FAKE, FakeEnv, FakeWorldModel, fake_context
from tests.test_play_keymaps import PONG

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pygame = pytest.importorskip("pygame")

from common.play.keymaps import keymap_for  # noqa: E402
from common.play.session import Session  # noqa: E402
from common.play.window import Window  # noqa: E402


def key(k, up=False, mod=0):
    kind = pygame.KEYUP if up else pygame.KEYDOWN
    pygame.event.post(pygame.event.Event(kind, key=k, mod=mod))


def window(source="atari", meanings=BREAKOUT):
    session = Session(FakeWorldModel(), keymap_for(source, meanings, 4), fake_context(), FakeEnv)
    return Window(session, "fake", size=128, fps=1000)


def test_scripted_session():
    w = window()
    s = w.session
    w.update()  # a first step with no key: NOOP
    assert s.step_count == 1 and s.status().action == "NOOP"
    key(pygame.K_RETURN)
    w.update()  # reset, then a step
    assert s.episode == 1 and s.step_count == 1
    key(pygame.K_d)
    w.update()
    assert s.status().action == "RIGHT" and w.pressed == ["d"]
    key(pygame.K_d, up=True)
    key(pygame.K_PERIOD)
    w.update()
    assert s.paused and s.step_count == 2
    w.update()
    assert s.step_count == 2
    key(pygame.K_e)
    w.update()
    assert s.step_count == 3
    key(pygame.K_RIGHT)
    w.update()
    assert s.view == "env"
    key(pygame.K_h)
    w.update()
    assert s.show_help
    key(pygame.K_UP)
    w.update()
    assert s.max_steps == 2000
    key(pygame.K_m)
    key(pygame.K_PERIOD)
    w.update()
    assert s.policy == "random" and not s.paused
    key(pygame.K_ESCAPE)
    w.run()  # returns on Esc
    assert not s.running


def test_arrows_of_the_game_need_ctrl_for_controls():
    w = window("procgen", PROCGEN_FAKE)
    s = w.session
    key(pygame.K_RIGHT)
    w.update()
    assert s.view == "model" and s.status().action == "RIGHT"
    key(pygame.K_RIGHT, up=True)
    key(pygame.K_RIGHT, mod=pygame.KMOD_LCTRL)
    w.update()
    assert s.view == "env"
    key(pygame.K_ESCAPE)
    w.run()


def test_header_and_help_text():
    w = window()
    w.update()
    lines = w.header_lines()
    assert "WORLD MODEL" in lines[0] and "step 1/" in lines[1] and "reward" in lines[2] and "done" in lines[2]
    latent = Session(FakeWorldModel(), keymap_for(None, None, 4, latent=True), fake_context(), FakeEnv,
                     env_keymap=keymap_for("atari", BREAKOUT, 4))  # fmt: skip
    assert "keys 1..4: latent actions 0..3" in Window(latent, "genie", size=64).header_lines()[3]
    help_lines = Window.help_lines(keymap_for(None, None, 4, latent=True), keymap_for("atari", BREAKOUT, 4))
    assert any("latent 3" in line for line in help_lines) and any("FIRE" in line for line in help_lines)
    procgen = Window.help_lines(keymap_for("procgen", PROCGEN_FAKE, 4), None)
    assert any("hold Ctrl" in line and "left" in line for line in procgen)
    key(pygame.K_ESCAPE)
    w.run()


def test_header_names_keys_with_no_effect_and_real_step_time():
    session = Session(FakeWorldModel(), keymap_for("atari", PONG, 6, game="Pong"), fake_context(), FakeEnv)
    w = Window(session, "atari/Pong (fake)", size=128, fps=1000)
    w.update()
    assert "a d: no effect in Pong" in w.header_lines()[3] and "w up (RIGHT)" in w.header_lines()[3]
    key(pygame.K_a)
    w.update()
    assert w.header_lines()[3] == "a: no effect in Pong" and session.status().action == "NOOP"
    key(pygame.K_a, up=True)
    key(pygame.K_ESCAPE)
    w.run()


def test_header_shows_real_step_time_and_slow_warning():
    from tests.test_play_session import SlowModel

    session = Session(SlowModel(60), keymap_for("atari", BREAKOUT, 4), fake_context(), fps=60)
    w = Window(session, "fake", size=128, fps=60)
    for _ in range(8):
        w.update()
    line2 = w.header_lines()[1]
    fps = float(line2.split(" fps")[0].split()[-1])
    step_ms = float(line2.split("model ")[1].split(" ms")[0])
    assert fps < 25 and "of 60" in line2  # the rate the frames really come at, beside the target
    assert 60 <= step_ms < 1000
    assert "model steps take" in w.header_lines()[3]
    key(pygame.K_ESCAPE)
    w.run()


def test_no_display_is_a_one_line_error(monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    session = Session(FakeWorldModel(), keymap_for("atari", BREAKOUT, 4), fake_context())
    with pytest.raises(RuntimeError, match="no display: use record="):
        Window(session, "fake")
