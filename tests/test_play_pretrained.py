"""play.py pretrained=NAME: through common.hub (a loopback fake Hub serving the shared fixtures), DIAMOND's
agent at the controls (`m` in the window, `policy=agent` headless), open-oasis from a screenshot.

The DIAMOND fixture (4 actions, as Breakout) stands in for eloialonso/diamond's Breakout.pt, the small
open-oasis fixture for Etched/oasis-500m (tests/test_hub.py `serving_fixtures`). Skips only when
../shared/fixtures is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from common import loader
from common.video import read_video
from tests.conftest import FIXTURES, ROOT
from tests.test_hub import serving_fixtures
from tests.test_play_fakes import (
    BREAKOUT,
    FAKE_FAMILY,
    FakeAgent,
    FakeEnv,
    FakeWorldModel,
    fake_checkpoint_content,
    fake_context,
)  # fmt: skip

pygame = pytest.importorskip("pygame")
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixture folder {FIXTURES} is absent")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with serving_fixtures(tmp_path, monkeypatch) as server:
        yield server


def play_cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("play", overrides=list(overrides))


class CapturedWindow:
    """Stands in for common.play.window.Window: keeps the session and title app.run built, shows nothing."""

    last: CapturedWindow | None = None

    def __init__(self, session, title, size=512, fps=15):
        self.session, self.title, self.fps = session, title, fps
        CapturedWindow.last = self

    def run(self) -> None:
        pass


def spy(monkeypatch, cls, name, log):
    """Record every call of cls.name: (args after self, result) into log."""
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        log.append((args, result))
        return result

    monkeypatch.setattr(cls, name, wrapper)


def png(tmp_path):
    from PIL import Image

    path = tmp_path / "start.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 160, 3), np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------------------------- DIAMOND
@needs_fixtures
def test_pretrained_diamond_records_the_agents_actions_from_diamonds_env_frames(
    hub, tmp_path, capsys, monkeypatch
):
    from common.data.envs import AtariEnv
    from common.hub import DIAMOND_ATARI_ENV
    from common.play.app import run
    from common.play.context import env_context
    from diamond.actor_critic import ActorCriticPolicy
    from diamond.world_model import DiamondWorldModel

    acted, stepped, resets = [], [], []
    spy(monkeypatch, ActorCriticPolicy, "act", acted)
    spy(monkeypatch, DiamondWorldModel, "step", stepped)
    spy(monkeypatch, DiamondWorldModel, "reset", resets)
    out = tmp_path / "agent.gif"
    run(play_cfg("pretrained=diamond/Breakout", f"record={out}", "steps=5", "policy=agent"))
    assert read_video(out).shape == (5, 64, 64, 3)
    assert f"wrote {out}: 5 frames of 64x64" in capsys.readouterr().out
    # the context: Breakout's real frames with DIAMOND's preprocessing (64x64 INTER_AREA, frame skip 4, ...)
    env = AtariEnv("Breakout", **DIAMOND_ATARI_ENV)
    want = env_context(env, 0, 4, noop=0)
    (frames, actions), _ = resets[0]
    assert np.array_equal(frames[0].numpy(), want.frames) and actions[0].tolist() == [0, 0, 0, 0]
    # the agent burns in on the 3 earlier context frames, then acts once per step on the frame on show;
    # the world model takes exactly its actions
    assert len(acted) == 3 + 5
    assert [int(a[0]) for _, a in acted[3:]] == [int(args[0][0]) for args, _ in stepped]
    assert np.array_equal(acted[3][0][0][0].numpy(), want.frames[-1])
    shown = [out.frames[0] for _, out in stepped]
    for (seen,), _ in acted[4:]:
        assert torch.equal(seen[0], shown.pop(0))


@needs_fixtures
def test_pretrained_diamond_window_m_hands_the_keys_to_the_agent_and_back(hub, monkeypatch):
    from common.play.app import run

    monkeypatch.setattr("common.play.window.Window", CapturedWindow)
    run(play_cfg("pretrained=diamond/Breakout"))
    w = CapturedWindow.last
    s = w.session
    assert "Breakout" in w.title and w.fps == 15 and s.env is not None  # DIAMOND's env: frame skip 4
    assert np.array_equal(s.model_frame, s.env_frame)  # both start from the same real frame
    assert s.policy == "human" and s.status().agent

    def step(keys):  # the random fixture may predict an episode end: the next tick resets
        while not s.tick(keys):
            pass

    step(["d"])
    assert s.status().action == "RIGHT"
    s.command("toggle_policy")
    assert s.policy == "agent"
    acted = []
    spy(monkeypatch, type(s.world_model.policy), "act", acted)
    for _ in range(3):
        step(["d"])  # the keys are ignored while the agent plays
        assert s.status().action == ["NOOP", "FIRE", "RIGHT", "LEFT"][int(acted[-1][1][0])]
    s.command("toggle_policy")
    assert s.policy == "human"
    step(["a"])
    assert s.status().action == "LEFT"


@needs_fixtures
def test_pretrained_oasis_from_a_screenshot_with_the_minecraft_keymap(hub, tmp_path, monkeypatch, capsys):
    from common.play.app import run

    start = png(tmp_path)
    out = tmp_path / "oasis.gif"
    run(play_cfg("pretrained=oasis/500m", f"context=file:{start}", f"record={out}", "steps=2"))
    assert read_video(out).shape == (2, 48, 64, 3)
    monkeypatch.setattr("common.play.window.Window", CapturedWindow)
    run(play_cfg("pretrained=oasis/500m", f"context=file:{start}"))
    s = CapturedWindow.last.session
    assert s.keymap.vector_actions and "minecraft" in CapturedWindow.last.title
    assert s.tick(["w", "left"]) and s.status().action == "forward yaw -5"
    s.command("toggle_policy")
    assert s.policy == "random" and not s.status().agent  # open-oasis carries no agent
    with pytest.raises(ValueError, match="carries no agent") as e:
        run(play_cfg("pretrained=oasis/500m", f"context=file:{start}", f"record={out}", "policy=agent"))
    assert "\n" not in str(e.value)


@needs_fixtures
def test_cli_pretrained_headless_and_bad_names(hub, tmp_path):
    """As a user types it: the env variables alone lead play.py to the Hub and the caches."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    play = [sys.executable, str(ROOT / "play.py")]
    out = tmp_path / "a.gif"
    args = ["pretrained=diamond/Breakout", f"record={out}", "steps=2", "policy=agent"]
    proc = subprocess.run(play + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}: 2 frames of 64x64" in proc.stdout
    for args, message in [
        (["pretrained=diamond/Breakou"], "error: unknown pretrained model 'diamond/Breakou' (did you mean"),
        (
            ["pretrained=diamond/Breakout", "checkpoint=x.ckpt"],
            "error: give pretrained=NAME or checkpoint=PATH",
        ),
    ]:
        proc = subprocess.run(
            play + args + [f"record={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        assert proc.returncode == 1 and proc.stderr.startswith(message), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --------------------------------------------------------------------------------------------- fakes
@pytest.fixture
def fake_checkpoint(tmp_path, monkeypatch):
    """A checkpoint of the fake family that names Breakout as its env (no dataset): agent on request."""
    monkeypatch.setitem(loader.FAMILIES, "playfake", FAKE_FAMILY)
    monkeypatch.setattr("common.play.app.make_real_env", lambda info: FakeEnv())

    def make(agent: bool):
        path = tmp_path / f"fake-{agent}.ckpt"
        hp = {"source": "atari", "game": "Breakout", "env": {}, "num_actions": 4}
        ckpt = fake_checkpoint_content(
            num_actions=4, context_length=4, agent=agent, datamodule_hyper_parameters=hp
        )
        torch.save(ckpt, path)
        return path

    return make


def test_policy_agent_records_what_the_agent_chooses(fake_checkpoint, tmp_path, monkeypatch):
    import common.play.app as app
    from tests.test_play_fakes import roll

    loaded = []
    spy_load = app.load
    monkeypatch.setattr(app, "load", lambda *a, **k: loaded.append(spy_load(*a, **k)) or loaded[-1])
    app.run(
        play_cfg(
            f"checkpoint={fake_checkpoint(True)}", f"record={tmp_path / 'o.mp4'}", "steps=6", "policy=agent"
        )
    )
    agent = loaded[0][0].policy
    # env context (the checkpoint names no dataset): burn-in on 3 frames, then one act per step
    assert len(agent.seen) == 3 + 6
    frame = FakeEnv().reset(0)
    for seen in agent.seen[3:]:  # each step acts on the frame the model generated last
        assert np.array_equal(seen[0].numpy(), frame)
        frame = roll(frame, FakeAgent.choose(frame))


def test_policy_agent_without_an_agent_is_one_line(fake_checkpoint, tmp_path):
    from common.play.app import run

    path = fake_checkpoint(False)
    with pytest.raises(ValueError) as e:
        run(play_cfg(f"checkpoint={path}", f"record={tmp_path / 'o.mp4'}", "policy=agent"))
    assert str(e.value) == (
        f"policy=agent: {path} carries no agent (its world model has no policy); use policy=random, "
        "or a checkpoint with one (e.g. pretrained=diamond/Breakout)"
    )
    assert not (tmp_path / "o.mp4").exists()


def test_session_m_toggles_human_and_agent():
    from common.play.keymaps import keymap_for
    from common.play.session import Session

    model = FakeWorldModel(agent=True)
    s = Session(model, keymap_for("atari", BREAKOUT, 4), fake_context(), FakeEnv)
    s.tick(["d"])
    assert s.status().action == "RIGHT" and s.policy == "human"
    before = len(model.policy.seen)
    s.command("toggle_policy")
    assert s.policy == "agent" and "agent" in s.message
    for _ in range(4):
        frame = s.frame.copy()
        s.tick(["d"])
        assert s.status().action == BREAKOUT[FakeAgent.choose(frame)]
    # burned in on the frames shown before it took over, then one act per step
    assert len(model.policy.seen) - before == 3 + 4
    resets, seen = model.policy.resets, len(model.policy.seen)
    s.command("reset")  # a new context: the agent keeps playing, from a fresh state burned in on it
    s.tick([])
    assert s.policy == "agent" and model.policy.resets > resets
    assert len(model.policy.seen) - seen == 3 + 1
    s.command("toggle_policy")
    assert s.policy == "human"
    s.tick(["a"])
    assert s.status().action == "LEFT"


def test_window_header_says_who_plays():
    from common.play.keymaps import keymap_for
    from common.play.session import Session
    from common.play.window import Window

    def window(agent):
        model = FakeWorldModel(agent=agent)
        return Window(
            Session(model, keymap_for("atari", BREAKOUT, 4), fake_context(), FakeEnv), "fake", 128, 1000
        )

    w = window(agent=True)
    w.update()
    assert "| human (m: agent) |" in w.header_lines()[0]
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_m, mod=0))
    w.update()
    assert "| AGENT (m: human) |" in w.header_lines()[0] and w.session.policy == "agent"
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_m, mod=0))
    w.update()
    assert w.session.policy == "human"
    w = window(agent=False)
    w.update()
    assert "| human (m: random) |" in w.header_lines()[0]
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_m, mod=0))
    w.update()
    line = w.header_lines()[0]
    assert (
        w.session.policy == "random" and "| RANDOM policy: no agent in this checkpoint (m: human) |" in line
    )
    assert "random actions: this checkpoint carries no agent" in w.header_lines()[3]
    pygame.quit()


def test_a_one_frame_gif_is_written(fake_checkpoint, tmp_path):
    """`record=x.gif steps=1` (the first frame alone, as start-up is timed): Pillow takes a one-frame GIF's
    delay as a number, not a list."""
    from common.play.app import run

    out = tmp_path / "one.gif"
    run(play_cfg(f"checkpoint={fake_checkpoint(True)}", f"record={out}", "steps=1", "policy=agent"))
    assert read_video(out).shape == (1, 64, 64, 3)
