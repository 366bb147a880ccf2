"""Every family on every source: the family tiny recipes (conf/recipe) compose with every source's tiny
data (conf/data/*_tiny.yaml), `experiment=compare_tiny` sweeps all of them, and each pair a family does not
already run in its own tiny experiment passes train.py's fast_dev_run."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_train, run_train, tiny_data
from tests.test_genie_experiments import SMALL_EVAL

STAGES = {
    "genie_tiny": ["tokenizer", "dynamics"],
    "diamond_tiny": ["world_model"],
    "oasis_tiny": ["vae", "dit"],
}
SOURCES = {"procgen_tiny": "procgen", "atari_tiny": "atari", "crafter_tiny": "crafter"}
HOME = {
    "genie_tiny": "procgen",
    "diamond_tiny": "atari",
    "oasis_tiny": "crafter",
}  # run by its _tiny experiment
PAIRS = [(r, d) for r in STAGES for d in SOURCES]


def test_compare_tiny_sweeps_every_family_on_every_source():
    text = (ROOT / "conf" / "experiment" / "compare_tiny.yaml").read_text()
    params = OmegaConf.create(text).hydra.sweeper.params
    assert sorted(params.recipe.split(",")) == sorted(STAGES) and sorted(params.data.split(",")) == sorted(
        SOURCES
    )
    assert OmegaConf.create(text).hydra.mode == "MULTIRUN"
    cfg = compose_train(["experiment=compare_tiny"])  # alone it composes as its first cell
    assert cfg.name == "compare_tiny" and list(cfg.model) == STAGES["genie_tiny"]


@pytest.mark.parametrize("recipe,data", PAIRS)
def test_family_recipe_composes_on_source(recipe, data):
    cfg = compose_train([f"recipe={recipe}", f"data={data}"])
    container = OmegaConf.to_container(cfg, resolve=True)
    assert list(container["model"]) == STAGES[recipe] and cfg.name == recipe
    assert cfg.data.source == SOURCES[data] and cfg.data.name.endswith("_tiny")
    assert cfg.data.num_actions == {"procgen": 15, "atari": 4, "crafter": 17}[SOURCES[data]]
    for stage in container["model"].values():
        assert stage.get("num_actions", cfg.data.num_actions) == cfg.data.num_actions


@pytest.mark.parametrize("source", sorted(set(SOURCES.values())))
def test_tiny_data_is_its_source_shrunk(source):
    tiny, full = compose_train([f"data={source}_tiny"]).data, compose_train([f"data={source}"]).data
    assert tiny.episodes * tiny.max_steps < full.episodes * full.max_steps
    assert tiny.name == f"{full.name}_tiny" and (tiny.source, tiny.game) == (full.source, full.game)


@pytest.mark.slow
@pytest.mark.parametrize("recipe,data", [(r, d) for r, d in PAIRS if HOME[r] != SOURCES[d]])
def test_family_trains_on_another_source(recipe, data, data_dir, tmp_path):
    source = SOURCES[data]
    overrides = [f"recipe={recipe}", "trainer.fast_dev_run=true"]
    overrides += tiny_data(source, data_dir, clip_length=6, batch_size=1) + ["data.eval_clip_length=12"]
    if source == "atari":
        overrides += ["data.game=Breakout"]
    if recipe == "genie_tiny":  # a 2-step MaskGIT on one clip: the test checks the pipeline, not the sampler
        overrides += SMALL_EVAL
    out = run_train(overrides, tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"test/psnr_next", "test/psnr_copy_last"} <= set(metrics), sorted(metrics)


def test_compare_report_names_every_cell_the_sweep_should_fill(tmp_path):
    from common.report import write_report
    from tests.test_report import make_run, row_of, section

    make_run(tmp_path / "sweep", 0, name="compare_tiny", dataset="procgen_coinrun_tiny",
             final={"test/psnr_next": 25.0, "test/psnr_copy_last": 24.0})  # fmt: skip
    matrix = section(
        write_report([tmp_path / "sweep"], tmp_path / "out")[0].read_text(), "## Families × datasets"
    )
    assert row_of(matrix, "family") == [
        "family",
        "procgen_coinrun_tiny",
        "atari_Breakout_tiny",
        "crafter_default_tiny",
    ]
    assert [row_of(matrix, f)[0] for f in ("genie", "diamond", "oasis")] == ["genie", "diamond", "oasis"]
    assert row_of(matrix, "genie")[1].startswith("vs copy-last +1 dB")
    assert (
        row_of(matrix, "genie")[2:] == ["not run", "not run"]
        and row_of(matrix, "oasis")[1:] == ["not run"] * 3
    )


def test_a_failed_cell_does_not_stop_the_sweep(tmp_path):
    """Each job of a multirun fails on its own (one line), the others still run, and the sweep exits non-zero."""
    import subprocess
    import sys

    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "experiment=genie_coinrun_tiny", "train=false",
           "ckpt_path=/nonexistent/a.ckpt,/nonexistent/b.ckpt", f"hydra.sweep.dir={tmp_path}", "print_config=false",
           "logger=csv"]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "error: checkpoint not found: /nonexistent/a.ckpt" in out.stderr
    assert "error: checkpoint not found: /nonexistent/b.ckpt" in out.stderr  # the second job ran
