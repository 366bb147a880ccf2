"""play.py end to end on a tiny real CoinRun dataset and a fake family: headless recording, bad input."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common import loader
from common.video import read_video
from tests.test_play_fakes import FAKE_FAMILY, fake_checkpoint_content

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"train": [0, 2], "test": [2, 4]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from common.data.collect import collect

    root = tmp_path_factory.mktemp("data")
    data = OmegaConf.create(
        {
            "source": "procgen", "game": "coinrun", "name": "coinrun_tiny", "env": {"distribution_mode": "hard"},
            "episodes": 4, "max_steps": 24, "seed_start": 0, "policy": "random", "action_repeat": 1,
            "shard_frames": 1000, "num_envs": 1, "compression": "zstd", "splits": SPLITS,
        }
    )  # fmt: skip
    collect(data, root, progress=False)
    return root


@pytest.fixture
def checkpoint(dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(loader.FAMILIES, "playfake", FAKE_FAMILY)
    path = tmp_path / "fake.ckpt"
    hp = {"source": "procgen", "game": "coinrun", "name": "coinrun_tiny", "root": str(dataset), "episodes": 4}
    hp |= {"seed_start": 0, "splits": SPLITS, "env": {"distribution_mode": "hard"}, "num_actions": 15}
    ckpt = fake_checkpoint_content(num_actions=15, context_length=4, datamodule_hyper_parameters=hp)
    torch.save(ckpt, path)
    return path


def play_cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("play", overrides=list(overrides))


def test_record_random_mp4(checkpoint, tmp_path, capsys):
    from common.play.app import run

    out = tmp_path / "out.mp4"
    run(play_cfg(f"checkpoint={checkpoint}", f"record={out}", "steps=12", "policy=random"))
    video = read_video(out)
    assert video.shape == (12, 64, 64, 3)
    assert "wrote" in capsys.readouterr().out


def test_record_dataset_side_by_side_gif_with_psnr(checkpoint, tmp_path, capsys):
    from common.play.app import run

    out = tmp_path / "out.gif"
    run(play_cfg(f"checkpoint={checkpoint}", f"record={out}", "steps=5", "policy=dataset", "record_scale=2"))
    video = read_video(out)
    assert video.shape == (5, 128, 2 * (64 + 2 + 64), 3)
    assert "rollout PSNR over 5 steps" in capsys.readouterr().out


def test_record_from_env_context_and_action_file(checkpoint, tmp_path):
    from common.play.app import run

    actions = tmp_path / "actions.txt"
    actions.write_text("1 2 3\n7\n")
    out = tmp_path / "out.mp4"
    run(
        play_cfg(
            f"checkpoint={checkpoint}", f"record={out}", "steps=50", f"policy=file:{actions}", "context=env"
        )
    )
    assert read_video(out).shape == (4, 64, 64, 3)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["bindings={x: FLY}"], "'FLY' is not an action of coinrun; its actions: LEFT_DOWN, LEFT, "),
        (["bindings={notakey: LEFT}"], "'notakey' is not a key name; key names .*: a-z, 0-9"),
        (["policy=walk"], "expected random, agent, dataset or file"),
        (["policy=file:/nonexistent/a.txt"], "action file not found"),
        (["context=dream"], "expected dataset, env or file:PATH"),
        (["record=out.avi"], "unsupported video format"),
        (["record=/proc/worldplay/out.mp4"], "cannot write"),
    ],
)
def test_bad_input_is_a_one_line_error(checkpoint, tmp_path, overrides, message):
    from common.play.app import run

    overrides = [f"record={tmp_path / 'o.mp4'}"] + overrides  # later record= wins
    with pytest.raises((ValueError, FileNotFoundError, RuntimeError), match=message) as e:
        run(play_cfg(f"checkpoint={checkpoint}", *overrides))
    assert "\n" not in str(e.value)


def run_play(*args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "play.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_cli_bad_checkpoints_and_no_display(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    no_display = {
        k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")
    }
    from common.play.app import load

    for path, message in [
        (foreign, "not a worldplay checkpoint"),
        (garbage, "not a readable worldplay checkpoint"),
    ]:
        with pytest.raises(ValueError, match=message):
            load(str(path), "cpu")
    cases = [  # as a user sees them: one line on stderr, exit status 1
        (["checkpoint=/nonexistent.ckpt", f"record={tmp_path / 'a.mp4'}"], None, "checkpoint not found"),
        ([f"checkpoint={foreign}"], no_display, "no display: use record="),
    ]
    for args, env, message in cases:
        proc = run_play(*args, env=env)
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_session_from_dataset_with_real_env_in_lockstep(checkpoint):
    """The window's session on real data: context from a test episode, CoinRun replayed onto its level."""
    from common.play.app import load, make_real_env
    from common.play.context import DatasetContext, dataset_info
    from common.play.keymaps import keymap_for
    from common.play.session import Session

    model, ckpt, family = load(str(checkpoint), "cpu")
    info = dataset_info(ckpt, checkpoint)
    ctx = DatasetContext(info.path, model.context_length, info.seeds)
    assert info.seeds == (2, 4) and all(2 <= ep.seed < 4 for ep in ctx.episodes)
    env = make_real_env(info)
    s = Session(model, keymap_for("procgen", ctx.action_meanings, 15), ctx, lambda: env)
    assert np.array_equal(s.env_frame, s.context.frames[-1])  # replaying the episode reproduces its frames
    s.tick(["right"])
    s.command("view_env")
    assert s.view == "env" and s.frame.shape == (64, 64, 3) and s.status().action == "RIGHT"
    s.close()
