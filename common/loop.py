"""The training loop of an agent that learns in its world model: DIAMOND's Atari 100k schedule (cfg.loop).

    python train.py experiment=diamond_atari100k data.game=Breakout

DIAMOND (Alonso et al. 2024, eloialonso/diamond `config/trainer.yaml`, `src/trainer.py`) alternates, each
epoch: collect real steps with the current agent (epsilon-greedy, epsilon 0.01), then train its networks
for a fixed number of steps each. Its schedule, the `loop` keys:

    env_steps        100,000 real steps in all (collection.train.num_steps_total)
    first_epoch      the first collection: `min` steps (5,000), then `steps_per_epoch` more while the
                     transitions of the rarer reward signs number fewer than `threshold_rew` (10) and
                     fewer than `max` (10,000) steps were taken (collect_initial_dataset)
    steps_per_epoch  100 real steps per epoch (epoch 1 included, after the first collection), until
                     env_steps are collected: (env_steps - first) / steps_per_epoch collecting epochs
    final_epochs     50 more epochs that train without collecting (training.num_final_epochs)
    stage_steps      {stage: {first, per_epoch}}: optimizer steps of each stage in epoch 1 and in each
                     later epoch (DIAMOND: denoiser and reward/end model 10,000 then 400; agent 5,000
                     then 400); a stage's trainer.max_steps in epoch e is first + per_epoch * (e - 1)
    epsilon          0.01 (collection.train.epsilon)
    policy_stage     the stage whose checkpoint's agent (`WorldModel.policy`) collects from epoch 2 on;
                     null: `data.policy` collects throughout. Epoch 1 is collected by `data.policy`
                     (uniform random), where DIAMOND uses its untrained agent, whose softmax is near uniform.
    held_out         {val, test}: whole episodes collected first by `data.policy` on seeds of their own
                     for the stages' validation and test clips; they are not among the env_steps (DIAMOND's
                     test episodes are not either)
    keep_every       epochs whose checkpoints are kept (0: only the last epoch's)
    burn_in          frames the agent's recurrent state is rebuilt on when it continues an episode

The run directory holds the dataset and one checkpoint folder per epoch:

    <run_dir>/data/<data.name>/          the run's own dataset (common/data/append.py): held-out
                                         episodes, then every collected step; its manifest's `loop`
                                         record says which epoch's steps are on disk
    <run_dir>/checkpoints/epoch_NNNN/<stage>/last.ckpt   each stage at the end of epoch N
    <run_dir>/checkpoints/<stage> -> epoch_NNNN/<stage>  the last finished epoch (a symlink)
    <run_dir>/checkpoints/loop.json      {"epoch": the last finished epoch, "collect_epochs"}
    <run_dir>/csv/loop/metrics.csv       per epoch (step = epoch): loop/env_steps, loop/episodes,
                                         loop/return_mean, loop/return_sem (the real returns of the
                                         collection episodes that ended in that epoch); also in W&B

Resume: rerunning with the same hydra.run.dir continues at the first unfinished epoch. Its collection is
done at most once (the manifest's record), a stage interrupted in it continues from its own checkpoint
of that epoch, else from the previous epoch's. Under trainer.fast_dev_run the loop runs two epochs of
`steps_per_epoch` real steps each (the second one collected by the agent), one batch per stage.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from common.data.append import append_steps, read_record
from common.data.collect import collect
from common.data.policies import AgentActor, RandomActor
from common.resume import sigterm_exit_code
from common.stages import (
    StageError,
    checkpoint_dir,
    epoch_name,
    finishing,
    make_loggers,
    run_stage,
    stage_names,
    write_metrics,
)

STATE = "loop.json"
TRAIN_SEEDS = 10**9  # the training seed range's width: more episodes than any loop collects


def loop_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """cfg for the loop's stages: the dataset in the run directory, its splits by seed (held-out val and
    test episodes first, then the training episodes the loop appends), collected by the loop only."""
    lcfg = cfg.loop
    start = int(cfg.data.seed_start)
    n_val, n_test = int(lcfg.held_out.val), int(lcfg.held_out.test)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.data.root = str(run_dir / "data")
        cfg.data.episodes = n_val + n_test
        cfg.data.splits = {
            "val": [start, start + n_val],
            "test": [start + n_val, start + n_val + n_test],
            "train": [start + n_val + n_test, start + n_val + n_test + TRAIN_SEEDS],
        }
    return cfg


def check_schedule(cfg: DictConfig) -> None:
    """One-line StageError for a loop the schedule cannot run (names the key and the fix)."""
    lcfg = cfg.loop
    names = stage_names(cfg)
    if cfg.get("stage"):
        raise StageError(
            f"stage={cfg.stage}: a training loop (loop: in the config) runs every stage; drop stage="
        )
    missing = [s for s in names if s not in (lcfg.stage_steps or {})]
    if missing:
        raise StageError(
            f"loop.stage_steps has no entry for stage(s) {', '.join(missing)}: add {{first, per_epoch}}"
        )
    spe, first = int(lcfg.steps_per_epoch), int(lcfg.first_epoch.min)
    if spe < 1 or first < 0 or (int(lcfg.env_steps) - first) % spe or first > int(lcfg.env_steps):
        raise StageError(
            f"loop: env_steps {lcfg.env_steps} - first_epoch.min {first} must be a multiple of "
            f"steps_per_epoch {spe} (DIAMOND's schedule counts whole epochs)"
        )
    if lcfg.policy_stage is not None and lcfg.policy_stage not in names:
        raise StageError(f"loop.policy_stage={lcfg.policy_stage!r} is not a stage ({', '.join(names)})")


def first_epoch_rule(lcfg: DictConfig, fast: bool):
    """`more` of common/data/append.py for epoch 1: DIAMOND's collect_initial_dataset, then its epoch 1."""
    spe = int(lcfg.steps_per_epoch)
    limit = lcfg.first_epoch.max
    state = {"tail": fast}

    def more(counts: dict[int, int], env_steps: int) -> int:
        minority = sum(sorted(counts.values())[:-1])  # the transitions of the two rarer reward signs
        if not state["tail"] and minority < int(lcfg.first_epoch.threshold_rew):
            if limit is None or env_steps < int(limit):
                return spe
        if not state["tail"]:
            state["tail"] = True
            return spe
        return 0

    return more


def make_actor(cfg: DictConfig, run_dir: Path, epoch: int, num_actions: int):
    """Who collects epoch `epoch`: the agent of `loop.policy_stage`'s previous-epoch checkpoint, or
    `data.policy` (epoch 1, or no policy_stage)."""
    lcfg, data = cfg.loop, cfg.data
    if epoch == 1 or lcfg.policy_stage is None:
        sticky = OmegaConf.to_container(data.sticky) if data.get("sticky") is not None else None
        return RandomActor(data.policy, num_actions, data.get("action_repeat", 1), sticky)
    from common.world_model import load_world_model

    path = checkpoint_dir(run_dir, lcfg.policy_stage, epoch - 1) / "last.ckpt"
    if not path.is_file():
        raise StageError(
            f"loop epoch {epoch}: the agent's checkpoint {path} is missing; rerun to redo epoch {epoch - 1}"
        )
    policy = load_world_model(path).policy
    if policy is None:
        raise StageError(
            f"{path}: carries no agent (WorldModel.policy is None); set loop.policy_stage to the stage that "
            f"trains one, or null to collect with data.policy"
        )
    return AgentActor(policy, lcfg.epsilon, rng_seed=[int(cfg.seed), epoch], burn_in=lcfg.burn_in)


def read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "checkpoints" / STATE
    return json.loads(path.read_text()) if path.is_file() else {"epoch": 0, "collect_epochs": None}


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    path = run_dir / "checkpoints" / STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def epoch_metrics(rec: dict[str, Any], epoch: int) -> dict[str, float]:
    """loop/* of an epoch from its collection record (returns of the episodes that ended in it)."""
    returns = rec.get("returns", []) if rec.get("epoch") == epoch else []
    out = {"loop/env_steps": float(rec["env_steps"]), "loop/episodes": float(len(returns))}
    if returns:
        out["loop/return_mean"] = float(np.mean(returns))
    if len(returns) > 1:
        out["loop/return_sem"] = float(np.std(returns, ddof=1) / math.sqrt(len(returns)))
    return out


def log_epoch(cfg: DictConfig, run_dir: Path, epoch: int, metrics: dict[str, float]) -> None:
    """One row per epoch (step = epoch) in csv/loop/metrics.csv and the loop's W&B run; a rerun of the
    epoch replaces its row."""
    loggers = make_loggers(cfg, "loop", run_dir, cfg.loop)
    with finishing(loggers):
        for logger in loggers:
            if hasattr(logger, "drop_from"):
                logger.drop_from(epoch)
            logger.log_metrics(metrics, step=epoch)
            logger.save()
            if not hasattr(logger, "finish"):
                logger.finalize("success")


def publish_epoch(run_dir: Path, epoch: int, names: list[str], keep_every: int) -> None:
    """Point checkpoints/<stage> at this epoch's folder; delete earlier epochs' folders except every
    `keep_every`-th (a run killed before this step deletes them at the next epoch's)."""
    root = run_dir / "checkpoints"
    for stage in names:
        link, tmp = root / stage, root / f".{stage}.link"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(epoch_name(epoch)) / stage, target_is_directory=True)
        os.replace(tmp, link)
    for folder in root.glob("epoch_*"):
        old = int(folder.name.split("_")[1])
        if old < epoch and not (keep_every and old % keep_every == 0):
            shutil.rmtree(folder, ignore_errors=True)


def run_loop(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Run (or continue) the loop of cfg.loop in run_dir; returns the last epoch's stage metrics and the
    loop's totals (loop/env_steps, loop/epochs, loop/return_mean of the last epoch with a finished episode)."""
    check_schedule(cfg)
    cfg = loop_config(cfg, run_dir)
    lcfg, names = cfg.loop, stage_names(cfg)
    fast = bool(cfg.trainer.get("fast_dev_run"))
    root = collect(cfg.data, cfg.data.root, progress=cfg.data.get("progress", True))  # held-out episodes
    num_actions = int(cfg.data.num_actions)
    state = read_state(run_dir)
    metrics: dict[str, float] = {}
    last_return: dict[str, float] = {}
    epoch = state["epoch"] + 1
    while True:
        collect_epochs = state["collect_epochs"]
        if fast:
            collect_epochs = 2
        total = 2 if fast else (None if collect_epochs is None else collect_epochs + int(lcfg.final_epochs))
        if total is not None and epoch > total:
            break
        rec = read_record(root)
        if collect_epochs is None or epoch <= collect_epochs:
            if rec is None or rec["epoch"] < epoch:
                actor = make_actor(cfg, run_dir, epoch, num_actions)
                steps = int(lcfg.steps_per_epoch) if fast or epoch > 1 else int(lcfg.first_epoch.min)
                more = first_epoch_rule(lcfg, fast) if epoch == 1 else None
                rec = append_steps(root, cfg.data, actor, epoch, steps, more)
                del actor
                gc.collect()
            if epoch == 1 and not fast:
                first = rec["env_steps"] - int(lcfg.steps_per_epoch)
                state["collect_epochs"] = (int(lcfg.env_steps) - first) // int(lcfg.steps_per_epoch)
                collect_epochs = state["collect_epochs"]
                total = collect_epochs + int(lcfg.final_epochs)
        row = epoch_metrics(rec, epoch)
        if "loop/return_mean" in row:
            last_return = {k: v for k, v in row.items() if k.startswith("loop/return")}
        log_epoch(cfg, run_dir, epoch, {**row, "loop/epoch": float(epoch)})
        final = epoch == total
        ecfg = cfg.copy()
        with open_dict(ecfg):
            ecfg.test = bool(cfg.test) and final
        for stage in names:
            target = int(lcfg.stage_steps[stage].first) + int(lcfg.stage_steps[stage].per_epoch) * (epoch - 1)
            with sigterm_exit_code():
                metrics.update(run_stage(ecfg, stage, run_dir, epoch=epoch, max_steps=target))
            gc.collect()
        state["epoch"] = epoch
        write_state(run_dir, state)
        publish_epoch(run_dir, epoch, names, int(lcfg.keep_every or 0))
        epoch += 1
    rec = read_record(root) or {"env_steps": 0}
    totals = {"loop/env_steps": float(rec["env_steps"]), "loop/epochs": float(state["epoch"]), **last_return}
    write_metrics(run_dir, totals)
    return {**metrics, **totals}
