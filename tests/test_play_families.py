"""Headless recording for every family: a randomly initialised `<x>_tiny` model, saved as
train.py would save it, played by play.py from a live reset of its real environment."""

from pathlib import Path

import pytest
import torch

from common import bench
from common.video import read_video

# family -> (tiny experiment, env source, game, overrides that only make sampling cheaper)
FAMILIES = {
    "genie": ("genie_coinrun_tiny", "procgen", "coinrun", ["model.dynamics.maskgit_steps=2"]),
    "diamond": ("diamond_breakout_tiny", "atari", "Breakout", ["model.world_model.num_steps_denoising=1"]),
    "oasis": ("oasis_crafter_tiny", "crafter", None, ["model.dit.ddim_steps=2"]),
}
STEPS = 2


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny_checkpoint(request, tmp_path_factory):
    experiment, source, game, overrides = FAMILIES[request.param]
    torch.manual_seed(0)
    run_dir = tmp_path_factory.mktemp(experiment)
    cfg = bench.compose_experiment(experiment, overrides)
    modules = bench.build_modules(cfg, run_dir)
    stage = list(modules)[-1]
    return request.param, run_dir / "checkpoints" / stage / "last.ckpt", source, game


@pytest.mark.slow
def test_headless_recording_of_each_family(tiny_checkpoint, tmp_path, capsys):
    from common.play.app import run
    from tests.test_play_app import play_cfg

    family, checkpoint, source, game = tiny_checkpoint
    out = tmp_path / f"{family}.mp4"
    overrides = [
        f"checkpoint={checkpoint}",
        f"record={out}",
        f"steps={STEPS}",
        "context=env",
        f"source={source}",
    ]
    run(play_cfg(*overrides, *([f"game={game}"] if game else [])))
    video = read_video(out)
    assert video.shape == (STEPS, 64, 64, 3), family
    assert f"wrote {out}" in capsys.readouterr().out
    assert Path(out).stat().st_size > 0
