"""Sweeps through Hydra's submitit launcher: the SLURM preset composes into the sbatch script Lightning's
DDP needs, and a local seed sweep runs both jobs through submitit into one report group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hydra
import submitit
import yaml
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from common.report import find_run_dirs, group_runs, load_run
from tests.test_resume import fake_conf, tiny_args

ROOT = Path(__file__).resolve().parents[1]


def test_slurm_launcher_composes_into_a_ddp_sbatch_script(tmp_path, monkeypatch):
    overrides = [
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=my_lab",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.signal_delay_s > 0 and launcher.max_num_timeout > 0
    assert hydra.utils.instantiate(launcher).params["tasks_per_node"] == 4

    # the executor parameters exactly as the launcher passes them to submitit, rendered into sbatch
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    params = OmegaConf.to_container(launcher, resolve=True)
    params.pop("_target_")
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=my_lab",
        f"#SBATCH --signal=USR2@{launcher.signal_delay_s}",
        "#SBATCH --requeue",
    ):
        assert line in sbatch, (line, sbatch)


def test_local_launcher_composes():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 1


def test_local_seed_sweep_runs_both_jobs_through_submitit(tmp_path):
    conf, data = fake_conf(tmp_path / "conf"), tmp_path / "data"
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *tiny_args(conf, data)]
    cmd += ["seed=0,1", "hydra/launcher=local", "trainer.max_steps=2", "logger=csv", "name=sweep_test"]
    cmd += [f"hydra.sweep.dir={sweep}", "optimized_metric=test/loss"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    for num, seed in ((0, 0), (1, 1)):
        run = sweep / str(num)
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
        metrics = json.loads((run / "metrics.json").read_text())
        assert {"test/psnr_recon", "test/loss"} <= metrics.keys()
        assert (run / "checkpoints" / "pred" / "last.ckpt").is_file()
    assert list((sweep / ".submitit").iterdir()), "jobs did not go through submitit"

    # the sweep folder is what common.report reads: both seeds form one group
    dirs, messages = find_run_dirs([sweep])
    groups = group_runs([load_run(d, messages) for d in dirs], messages)
    assert len(dirs) == 2 and len(groups) == 1 and len(groups[0].runs) == 2, messages
