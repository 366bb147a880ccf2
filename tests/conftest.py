"""Shared test settings and helpers: offline W&B, SDL dummy drivers, tiny data overrides, train.py runner.

Helpers (import them as `from tests.conftest import ...`):
- `tiny_data(source, data_dir)`: data overrides that make a dataset of a few short episodes.
- `compose_train(overrides)`: the composed train config (Hydra compose API, resolvers registered).
- `run_train(overrides, run_dir)`: `python train.py ...` in a subprocess, as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import torch  # noqa: E402

import common.config  # noqa: E402,F401 - registers the config resolvers

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one core per xdist worker

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"

# a few short episodes per source: enough clips for train/val/test, collected in seconds
TINY_EPISODES = {"procgen": (12, 48), "atari": (8, 48), "crafter": (8, 48)}


def tiny_data(source: str, data_dir: str | Path, clip_length: int = 8, batch_size: int = 2) -> list[str]:
    episodes, max_steps = TINY_EPISODES[source]
    return [
        f"data={source}",
        f"paths.data_dir={data_dir}",
        f"data.name={source}_tiny_test",
        f"data.episodes={episodes}",
        f"data.max_steps={max_steps}",
        "data.num_envs=2",
        "data.splits={train: 0.5, val: 0.25, test: 0.25}",
        f"data.clip_length={clip_length}",
        "data.eval_clips=4",
        f"data.batch_size={batch_size}",
        "data.progress=false",
    ]


def compose_train(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_train(overrides: list[str], run_dir: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run train.py as a user would; stdout/stderr captured as text."""
    cmd = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", "print_config=false"]
    cmd += ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd + overrides, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny tensors: one thread each avoids oversubscribing the 2 cores (and xdist workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder per test session (per xdist worker): tiny datasets are collected once into it."""
    return tmp_path_factory.mktemp("data")


def pytest_collection_modifyitems(config, items):
    """Paper-scale fast_dev_run tests (hundreds of millions of parameters) share one xdist worker, so
    two of them never hold their memory at once on a 24 GiB machine (`make test` uses --dist loadgroup)."""
    for item in items:
        if "fast_dev_run" in item.nodeid and "tiny" not in item.nodeid:
            item.add_marker(pytest.mark.xdist_group("paper_scale"))
