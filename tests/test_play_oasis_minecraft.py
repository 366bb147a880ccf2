"""Playing converted open-oasis weights: context=file (image / video), the Minecraft keymap, headless record."""

from __future__ import annotations

import numpy as np
import pytest

from common.play.context import FileContext, fit_frames
from common.play.keymaps import (
    CAMERA_MAX_DEGREES,
    CAMERA_STEP_DEGREES,
    MINECRAFT_ACTIONS,
    keymap_for,
    with_overrides,
)
from common.play.policies import MinecraftRandomPolicy, make_policy
from common.video import read_video, write_video
from oasis.convert import main as convert
from tests.test_oasis_convert import FIXTURE, args, weights  # noqa: F401 - weights: fixture
from tests.test_play_app import play_cfg, run_play

STEP = CAMERA_STEP_DEGREES / CAMERA_MAX_DEGREES


@pytest.fixture
def checkpoint(weights):  # noqa: F811 - the fixture imported above
    """A tiny 25-action DiT + VAE (32x48 frames) in open-oasis' format, converted as a user would."""
    root = weights[0]
    assert convert(args(root, root / "oasis.ckpt")) == 0
    return root / "oasis.ckpt"


def image(tmp_path, h=40, w=90):
    import imageio.v3 as iio

    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, w // 2 :] = 255  # right half white
    iio.imwrite(tmp_path / "start.png", frame)
    return tmp_path / "start.png"


def test_file_context_from_png_and_video(tmp_path):
    ctx = FileContext(image(tmp_path), (32, 48, 3), context_length=3)(0)
    assert ctx.frames.shape == (3, 32, 48, 3) and ctx.frames.dtype == np.uint8
    assert np.array_equal(ctx.frames[0], ctx.frames[2]) and ctx.actions.tolist() == [0, 0, 0]
    assert ctx.frames[0, :, :20].max() < 10 and ctx.frames[0, :, 28:].min() > 245  # center crop kept halves
    video = np.stack([np.full((20, 30, 3), 10 * i, np.uint8) for i in range(6)])
    for name in ("clip.mp4", "clip.gif"):
        write_video(tmp_path / name, video, fps=10)
        noop = np.zeros(25, np.float32)
        ctx = FileContext(tmp_path / name, (16, 24, 3), context_length=4, noop=noop)(0)
        assert ctx.frames.shape == (4, 16, 24, 3) and ctx.actions.shape == (4, 25) and not ctx.actions.any()
        assert abs(int(ctx.frames[-1].mean()) - 50) <= 3 and abs(int(ctx.frames[0].mean()) - 20) <= 3, name
    short = FileContext(tmp_path / "clip.gif", (20, 30, 3), context_length=8)(0)  # repeats its first frame
    assert short.frames.shape == (8, 20, 30, 3) and (short.frames[:3] == short.frames[2]).all()
    assert np.array_equal(fit_frames(video, 20, 30), video)  # the right size already: unchanged


def test_file_context_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="context file not found: .*missing.png"):
        FileContext(tmp_path / "missing.png", (32, 48, 3), 1)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png: cannot read frames"):
        FileContext(tmp_path / "bad.png", (32, 48, 3), 1)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported context file '.txt'"):
        FileContext(tmp_path / "x.txt", (32, 48, 3), 1)


def test_minecraft_keymap_held_keys_to_vector():
    km = keymap_for("minecraft", None, 25)
    index = MINECRAFT_ACTIONS.index
    assert MINECRAFT_ACTIONS[:3] == ["inventory", "ESC", "hotbar.1"] and index("cameraX") == 15
    assert index("cameraY") == 16 and MINECRAFT_ACTIONS[-1] == "drop" and len(MINECRAFT_ACTIONS) == 25
    assert not km.action([]).any() and not km.default_action.any() and km.describe(km.action([])) == "noop"
    v = km.action(["w", "space", "left shift", "r", "j", "3", "right", "up", "x"])
    expected = np.zeros(25, np.float32)
    for name in ("forward", "jump", "sneak", "sprint", "attack", "hotbar.3"):
        expected[index(name)] = 1
    expected[index("cameraY")], expected[index("cameraX")] = STEP, -STEP  # turn right, look up
    assert v.dtype == np.float32 and np.allclose(v, expected)
    assert km.describe(v) == "hotbar.3+forward+jump+sneak+sprint+attack pitch -5 yaw +5"
    assert not km.action(["left", "right"]).any()  # opposite arrows cancel
    assert km.action(["e", "q", "k", "left ctrl"])[
        [index(n) for n in ("inventory", "drop", "use", "sprint")]
    ].all()
    assert "escape" not in km.keys and "ESC" not in km.bindings.values() and km.unbound(["x"]) == ["x"]
    assert "w" in km.hint and any("arrows" in k for k, _ in km.legend)
    with pytest.raises(ValueError, match="25-d action vectors"):
        keymap_for("minecraft", None, 17)
    extra = with_overrides(km, {"x": "pickItem", "l": "turn_right"})  # bindings= in play.yaml
    assert extra.action(["x", "l"])[[index("pickItem"), index("cameraY")]].tolist() == [1.0, STEP]
    with pytest.raises(
        ValueError,
        match="'cameraX' is not an action of Minecraft; its actions: inventory, ESC, .*, turn_right$",
    ):
        with_overrides(km, {"x": "cameraX"})


def test_minecraft_random_policy_is_plausible():
    policy = make_policy("random", 25, seed=0, minecraft=True)
    assert isinstance(policy, MinecraftRandomPolicy)
    for step in range(20):
        v = policy(step)
        buttons = np.delete(v, [15, 16])
        assert v.shape == (25,) and set(np.unique(buttons)) <= {0.0, 1.0} and buttons.sum() <= 2
        assert np.abs(v[15:17]).max() <= STEP and v[MINECRAFT_ACTIONS.index("ESC")] == 0


def test_session_plays_converted_weights_with_keys(checkpoint, tmp_path):
    from common.play.keymaps import keymap_for
    from common.play.session import Session
    from common.world_model import load_world_model

    wm = load_world_model(checkpoint)
    km = keymap_for("minecraft", None, wm.num_actions)
    s = Session(wm, km, FileContext(image(tmp_path), wm.frame_shape, wm.context_length, km.default_action))
    assert s.tick(["w", "left"]) and s.frame.shape == (32, 48, 3)
    assert s.status().action == "forward yaw -5"
    s.command("toggle_policy")
    assert s.tick([]) and s.status().policy == "random"


def test_record_converted_weights_from_png(checkpoint, tmp_path, capsys):
    from common.play.app import run

    out = tmp_path / "out.mp4"
    run(play_cfg(f"checkpoint={checkpoint}", f"context=file:{image(tmp_path)}", f"record={out}", "steps=3"))
    assert read_video(out).shape == (3, 32, 48, 3)
    assert f"wrote {out}: 3 frames of 48x32" in capsys.readouterr().out


def test_record_converted_fixture_from_video(tmp_path):
    """The open-oasis-format fixture (48x64 frames), converted and played from a short mp4."""
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} not present")
    from common.play.app import run

    ckpt = tmp_path / "fx.ckpt"
    argv = ["--dit", str(FIXTURE / "dit.safetensors"), "--vae", str(FIXTURE / "vae.safetensors"), "--height", "48",
            "--width", "64", "--vae-heads", "4", "--max-frames", "8", "--context-frames", "2", str(ckpt)]  # fmt: skip
    assert convert(argv) == 0
    clip = write_video(
        tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 256, (5, 72, 96, 3), np.uint8)
    )
    out = tmp_path / "fx.gif"
    run(play_cfg(f"checkpoint={ckpt}", f"context=file:{clip}", f"record={out}", "steps=2", "record_scale=2"))
    assert read_video(out).shape == (2, 96, 128, 3)


def test_bad_context_file_and_dataset_policy_are_one_line_errors(checkpoint, tmp_path):
    from common.play.app import run

    missing = tmp_path / "nope.png"
    proc = run_play(f"checkpoint={checkpoint}", f"context=file:{missing}", f"record={tmp_path / 'a.mp4'}")
    assert proc.returncode == 1 and proc.stderr == f"error: context file not found: {missing}\n", proc.stderr
    for extra, message in [
        (["context=file:x.png", "policy=dataset"], "policy=dataset needs context=dataset"),
        (["context=somewhere"], "context='somewhere': expected dataset, env or file:PATH"),
    ]:
        with pytest.raises(ValueError, match=message):
            run(play_cfg(f"checkpoint={checkpoint}", f"record={tmp_path / 'a.mp4'}", *extra))


def test_window_minecraft_keys_help_and_escape(checkpoint, tmp_path):
    """The pygame window (SDL dummy driver): held keys drive the vector, arrows are camera, Esc quits."""
    pygame = pytest.importorskip("pygame")
    from common.play.session import Session
    from common.play.window import Window
    from common.world_model import load_world_model

    wm = load_world_model(checkpoint)
    km = keymap_for("minecraft", None, wm.num_actions)
    s = Session(wm, km, FileContext(image(tmp_path), wm.frame_shape, wm.context_length, km.default_action))
    w = Window(s, "minecraft (oasis)", size=128, fps=1000)
    for k in (pygame.K_w, pygame.K_LSHIFT, pygame.K_DOWN):
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=k, mod=0))
    w.update()
    assert w.pressed == ["w", "left shift", "down"] and s.status().action == "forward+sneak pitch +5"
    assert w.header_lines()[3] == km.hint and s.view == "model" and s.max_steps == 1000
    help_text = "\n".join(Window.help_lines(km, None))
    assert "hold Ctrl for those controls" in help_text and "attack / use" in help_text
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE, mod=0))
    w.update()
    assert not s.running
    pygame.quit()


def test_record_any_family_from_png(tmp_path, monkeypatch):
    """context=file is family-agnostic: a fake discrete-action model with no dataset, numbered keys."""
    import torch

    from common import loader
    from common.play.app import run
    from tests.test_play_fakes import FAKE_FAMILY, fake_checkpoint_content

    monkeypatch.setitem(loader.FAMILIES, "playfake", FAKE_FAMILY)
    ckpt = tmp_path / "fake.ckpt"
    torch.save(fake_checkpoint_content(num_actions=5, context_length=2), ckpt)
    out = tmp_path / "fake.gif"
    run(play_cfg(f"checkpoint={ckpt}", f"context=file:{image(tmp_path)}", f"record={out}", "steps=4"))
    assert read_video(out).shape == (4, 64, 64, 3)
    assert keymap_for(None, None, 5).action(["3"]) == 2
