"""Multi-stage training runs: what train.py does for each stage of a model, family-agnostic.

`cfg.model` maps stage name -> LightningModule config; stages run in that order in one run directory:

    <run_dir>/checkpoints/<stage>/last.ckpt    <run_dir>/csv/<stage>/metrics.csv    <run_dir>/metrics.json

(in a training loop, common/loop.py, each epoch's in <run_dir>/checkpoints/epoch_NNNN/<stage>/).

Handoff: a module kwarg named `<earlier stage>_ckpt` left null is filled with that stage's
`last.ckpt` from the same run (Genie's dynamics takes `tokenizer_ckpt`, Oasis' DiT `vae_ckpt`); the
module holds a frozen copy of the earlier stage as its submodule `<earlier stage>` (`tokenizer`, `vae`).
`StageInputs` records which checkpoint that copy came from and keeps it current when the later stage
resumes after the earlier one trained on (an extended run).
`cfg.stage_overrides.<stage>` is merged into the config for that stage only (batch size, max_steps).

W&B: one run per (job, stage), finished when the stage ends (common/wandb_logger.py), its config the
stage's own (`run_config`).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from common.checkpoint import check_family, read_meta
from common.init_from import init_source
from common.loader import build_module, open_checkpoint
from common.report_metrics import differences, training_totals
from common.resume import exit_if_preempted, resume_checkpoint, stage_checkpoint
from common.stage_clock import StageClock
from common.wandb_logger import StageWandbLogger, logged_history


class StageError(ValueError):
    """A stage cannot run as configured (one-line message)."""


def stage_names(cfg: DictConfig) -> list[str]:
    """The stages to run, in order: every key of cfg.model, or only cfg.stage."""
    if not cfg.get("model"):
        raise StageError("no model chosen: pass experiment=<name> (see conf/experiment/) or model=<name>")
    names = list(cfg.model.keys())
    if cfg.get("stage"):
        if cfg.stage not in names:
            raise StageError(f"stage={cfg.stage!r} is not a stage of this model (stages: {', '.join(names)})")
        return [cfg.stage]
    return names


def command_line_keys() -> list[str]:
    """Keys the user set on the command line (`trainer.max_steps=2` -> "trainer.max_steps")."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = HydraConfig.get().overrides.task
    except ValueError:  # not inside a Hydra app (compose API, tests)
        return []
    return [o.split("=", 1)[0].lstrip("+~") for o in task if "=" in o]


def stage_config(cfg: DictConfig, stage: str, cli_keys: list[str] | None = None) -> DictConfig:
    """cfg with cfg.stage_overrides[stage] merged in; a key set on the command line still wins
    (`trainer.max_steps=2` shortens every stage, whatever the experiment's per-stage values)."""
    overrides = (cfg.get("stage_overrides") or {}).get(stage)
    unknown = set(cfg.get("stage_overrides") or {}) - set(cfg.model.keys())
    if unknown:
        raise StageError(f"stage_overrides names unknown stage(s): {', '.join(sorted(unknown))}")
    if not overrides:
        return cfg
    merged = OmegaConf.merge(cfg, overrides)
    for key in command_line_keys() if cli_keys is None else cli_keys:
        if (
            not key.startswith("stage_overrides")
            and OmegaConf.select(overrides, key, default=None) is not None
        ):
            OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
    return merged


def checkpoint_dir(run_dir: Path, stage: str, epoch: int | None = None) -> Path:
    """<run_dir>/checkpoints/<stage>; in epoch `epoch` of a training loop (common/loop.py)
    <run_dir>/checkpoints/epoch_NNNN/<stage>."""
    root = run_dir / "checkpoints"
    return (root if epoch is None else root / epoch_name(epoch)) / stage


def epoch_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def epoch_resume(run_dir: Path, stage: str, epoch: int) -> str | None:
    """A training loop's stage in epoch `epoch` continues from its checkpoint of this epoch (a resumed run),
    else from its previous epoch's (the loop going on), else starts fresh (epoch 1)."""
    here = stage_checkpoint(checkpoint_dir(run_dir, stage, epoch), stage)
    if here or epoch <= 1:
        return here
    return stage_checkpoint(checkpoint_dir(run_dir, stage, epoch - 1), stage)


def module_config(cfg: DictConfig, stage: str, run_dir: Path, epoch: int | None = None) -> DictConfig:
    """The stage's module config with `<earlier>_ckpt` handoffs filled from this run (this loop epoch's)."""
    mcfg = cfg.model[stage].copy()
    names = list(cfg.model.keys())
    for earlier in names[: names.index(stage)]:
        key = f"{earlier}_ckpt"
        if key in mcfg and mcfg[key] is None:
            path = checkpoint_dir(run_dir, earlier, epoch) / "last.ckpt"
            if not path.is_file():
                raise StageError(
                    f"stage {stage!r} needs the {earlier} checkpoint: {path} not found; "
                    f"run stage={earlier} first or pass model.{stage}.{key}=PATH"
                )
            with open_dict(mcfg):
                mcfg[key] = str(path)
    return mcfg


def earlier_checkpoints(cfg: DictConfig, stage: str, mcfg: DictConfig) -> dict[str, str]:
    """{earlier stage: the checkpoint path its `<earlier>_ckpt` kwarg holds} for the module config `mcfg`."""
    names = list(cfg.model.keys())
    return {e: str(mcfg[f"{e}_ckpt"]) for e in names[: names.index(stage)] if mcfg.get(f"{e}_ckpt")}


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """BLAKE2b (128-bit, hex) of a state dict: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(state[name].shape)}|".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


INPUTS_KEY = "stage_inputs"  # checkpoint key: {earlier stage: {"path", "global_step", "digest"}}


class StageInputs(Callback):
    """The earlier stages a stage is built on: recorded in its checkpoints, kept current on resume.

    A later stage's module holds a frozen copy of each earlier stage it takes a `<earlier>_ckpt` for, as
    its submodule `<earlier>`, loaded from that checkpoint when the module is built. Resuming the later
    stage restores the copy from the later stage's own checkpoint: stale when the earlier stage trained on
    since (a finished run rerun with a larger `trainer.max_steps`). This callback

    - writes `checkpoint["stage_inputs"] = {earlier: {"path", "global_step", "digest"}}` into every full
      checkpoint (digest: `weights_digest` of the frozen copy), so a checkpoint says what it was built on;
    - `check_resume(path)`, before `trainer.fit(ckpt_path=path)`: when the copy in `path` differs from the
      one just loaded, returns the line to print and, once Lightning has restored `path`, loads the new
      weights back (`on_load_checkpoint`): the stage goes on from the earlier stage's final weights. A copy
      of another shape (the earlier stage's architecture changed) is refused with a one-line StageError.

    module: the later stage's module, just built; sources: {earlier stage: checkpoint path it was built from}.
    """

    def __init__(self, module: L.LightningModule, stage: str, sources: dict[str, str]):
        self.module, self.stage = module, stage
        self.inputs: dict[str, dict[str, Any]] = {}
        self._restore: dict[str, dict[str, torch.Tensor]] = {}
        self.replaced = False  # whether resuming loaded newer earlier-stage weights
        for earlier, path in sources.items():
            frozen = self._frozen(module, earlier)
            saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            digest = weights_digest(frozen.state_dict())
            self.inputs[earlier] = {
                "path": str(path),
                "global_step": saved.get("global_step"),
                "digest": digest,
            }

    def _frozen(self, module: L.LightningModule, earlier: str) -> torch.nn.Module:
        frozen = getattr(module, earlier, None)
        if not isinstance(frozen, torch.nn.Module):
            raise StageError(
                f"{type(module).__name__} takes {earlier}_ckpt but has no submodule {earlier!r} "
                f"holding the {earlier} weights (common/stages.py: StageInputs)"
            )
        return frozen

    def check_resume(self, path: str | Path) -> list[str]:
        """Lines saying which earlier stages changed since `path` was written (empty: none did)."""
        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        recorded = saved.get(INPUTS_KEY) or {}
        lines = []
        for earlier, source in self.inputs.items():
            prefix = f"{earlier}."
            old = {k[len(prefix) :]: v for k, v in saved["state_dict"].items() if k.startswith(prefix)}
            new = self._frozen(self.module, earlier).state_dict()
            if {k: v.shape for k, v in old.items()} != {k: v.shape for k, v in new.items()}:
                raise StageError(
                    f"{path} holds a {earlier} of another shape than {source['path']} (the {earlier} "
                    f"changed architecture): run stage={self.stage} resume=false to train {self.stage} "
                    f"afresh on it, or use the {earlier} checkpoint {self.stage} was built on"
                )
            if weights_digest(old) == source["digest"]:
                continue
            was = (recorded.get(earlier) or {}).get("global_step", "?")
            lines.append(
                f"{self.stage}: the {earlier} weights changed since {path} was written ({earlier} step "
                f"{was} -> {source['global_step']}, {source['path']}): {self.stage} resumes on the new ones"
            )
            self._restore[earlier] = {k: v.detach().clone() for k, v in new.items()}
        return lines

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Lightning calls this after restoring the module's state_dict from the checkpoint
        for earlier, weights in self._restore.items():
            self._frozen(pl_module, earlier).load_state_dict(weights)
            self.replaced = True
        self._restore = {}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[INPUTS_KEY] = {k: dict(v) for k, v in self.inputs.items()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


WANDB_FLUSH_S = 1.0  # seconds between writes of a W&B run's .wandb log (older wandb ignore the setting)


def run_config(cfg: DictConfig, stage: str, mcfg: DictConfig) -> dict[str, Any]:
    """A stage's W&B run config: the stage's resolved config (the experiment's name and seed, the stage's
    trainer and data, stage_overrides merged in) with `model` holding this stage's module only, `stage`
    this stage, and the git commit."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("stage_overrides", None)
    config["model"] = {stage: OmegaConf.to_container(mcfg, resolve=True)}
    config["stage"] = stage
    config["git_commit"] = git_commit()
    return config


def make_loggers(cfg: DictConfig, stage: str, run_dir: Path, mcfg: DictConfig | None = None) -> list:
    """The stage's loggers: cfg is the stage's config (`stage_config`), mcfg its module config."""
    loggers = []
    for key, lcfg in (cfg.get("logger") or {}).items():
        if not isinstance(lcfg, DictConfig) or "_target_" not in lcfg:
            continue
        if key == "csv":
            loggers.append(hydra.utils.instantiate(lcfg, save_dir=str(run_dir), version=stage))
        elif key == "wandb":
            offline = lcfg.offline and os.environ.get("WANDB_MODE") != "online"
            os.environ.setdefault("WANDB_SILENT", "true")
            # W&B writes its .wandb log every 15 s by default: a kill -9 then loses the last 15 s of rows,
            # steps before the last checkpoint among them for good (the resumed run redoes only later ones)
            os.environ.setdefault("WANDB__TRANSACTION_LOG_FLUSH_INTERVAL", str(WANDB_FLUSH_S))
            run_id = _wandb_id(run_dir, stage)
            make = hydra.utils.instantiate(lcfg, _partial_=True)  # Python objects below, not configs
            logger = make(
                save_dir=str(run_dir),
                offline=offline,
                name=f"{cfg.name}-seed{cfg.seed}-{stage}",
                job_type=stage,
                id=run_id,
                resume="allow",
                tags=list(cfg.get("tags") or []),
                config=run_config(cfg, stage, cfg.model[stage] if mcfg is None else mcfg),
                logged=logged_history(run_dir / "wandb", run_id) if rank_zero_only.rank == 0 else None,
            )
            loggers.append(logger)
        else:
            loggers.append(hydra.utils.instantiate(lcfg))
    return loggers


def _wandb_id(run_dir: Path, stage: str) -> str:
    """A W&B run id kept in the run dir, so a resumed stage continues the same W&B run.

    Only global rank 0 writes the file (and only it opens a W&B run); other DDP ranks get a throwaway id.
    """
    import uuid

    path = run_dir / "wandb_ids.json"
    ids = json.loads(path.read_text()) if path.is_file() else {}
    if stage not in ids:
        if rank_zero_only.rank != 0:
            return uuid.uuid4().hex[:12]
        ids[stage] = uuid.uuid4().hex[:12]
        path.write_text(json.dumps(ids))
    return ids[stage]


def make_callbacks(cfg: DictConfig, stage: str, run_dir: Path, epoch: int | None = None) -> list:
    callbacks = []
    for key, ccfg in (cfg.get("callbacks") or {}).items():
        if not isinstance(ccfg, DictConfig) or "_target_" not in ccfg:
            continue
        if key == "checkpoint":
            # a fast_dev_run is never resumed: its last.ckpt needs no optimizer state (GBs at paper scale)
            weights_only = {"save_weights_only": True} if cfg.trainer.get("fast_dev_run") else {}
            dirpath = str(checkpoint_dir(run_dir, stage, epoch))
            callbacks.append(hydra.utils.instantiate(ccfg, dirpath=dirpath, **weights_only))
        else:
            callbacks.append(hydra.utils.instantiate(ccfg))
    return callbacks


def float_metrics(metrics: dict[str, Any], prefix: str = "test/") -> dict[str, float]:
    return {
        k: float(v) for k, v in metrics.items() if k.startswith(prefix) and torch.as_tensor(v).numel() == 1
    }


def write_metrics(run_dir: Path, metrics: dict[str, float]) -> Path:
    """Merge `metrics` into <run_dir>/metrics.json (atomically)."""
    path = run_dir / "metrics.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(metrics)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def publish_metrics(run_dir: Path, metrics: dict[str, float], loggers: list) -> dict[str, float]:
    """Merge a stage's metrics into metrics.json, add the job's training totals (common/report_metrics.py),
    and put both into the stage's W&B run summary: a W&B table shows what metrics.json and the report do."""
    totals = training_totals(json.loads(write_metrics(run_dir, metrics).read_text()))
    write_metrics(run_dir, totals)
    for logger in loggers:
        if isinstance(logger, StageWandbLogger):
            logger.log_summary({**metrics, **totals})
    return totals


def run_stage(
    cfg: DictConfig, stage: str, run_dir: Path, epoch: int | None = None, max_steps: int | None = None
) -> dict[str, float]:
    """Fit (unless cfg.train is false) and test one stage; returns its test metrics, its training clock
    (common/stage_clock.py) and the headline values derived from them (common/report_metrics.py).

    In a training loop (common/loop.py): `epoch` puts its checkpoints in checkpoints/epoch_NNNN/<stage>/
    and continues the stage from its previous epoch's (`epoch_resume`); `max_steps` (the loop's schedule,
    cumulative over epochs) replaces trainer.max_steps."""
    scfg = stage_config(cfg, stage)
    if max_steps is not None:
        scfg = OmegaConf.merge(scfg, {"trainer": {"max_steps": int(max_steps)}})
    datamodule = hydra.utils.instantiate(scfg.data, _convert_="all")
    if cfg.train:
        mcfg = module_config(scfg, stage, run_dir, epoch)
        family = hydra.utils.get_class(mcfg._target_).family
        if scfg.trainer.fast_dev_run:
            resume = None
        elif epoch is not None:
            resume = epoch_resume(run_dir, stage, epoch)
        else:
            resume = resume_checkpoint(cfg.resume, run_dir, stage, family)
        # init_from= (fine-tuning) only for a stage that starts fresh: a resumed one goes on from its own
        init = None if resume else init_source(cfg.get("init_from"), family, stage, stage_names(cfg))
        mcfg = init.module_config(mcfg) if init else mcfg
        module = hydra.utils.instantiate(mcfg, _convert_="all")
        if init:
            init.load(module, mcfg, keep=earlier_checkpoints(scfg, stage, mcfg))
        inputs = StageInputs(module, stage, earlier_checkpoints(scfg, stage, mcfg))
    else:
        mcfg = scfg.model[stage]
        module = load_for_eval(scfg, stage, cfg.ckpt_path)
        inputs = None
    clock = StageClock(stage)
    callbacks = make_callbacks(scfg, stage, run_dir, epoch) + ([inputs] if inputs and inputs.inputs else [])
    callbacks.append(clock)
    loggers = make_loggers(scfg, stage, run_dir, mcfg)
    with finishing(loggers):
        trainer: L.Trainer = hydra.utils.instantiate(
            scfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(run_dir)
        )
        metrics: dict[str, float] = {}
        if cfg.train:
            last = checkpoint_dir(run_dir, stage, epoch) / "last.ckpt"
            if resume:
                check_family(resume, module.family, stage)
                for line in inputs.check_resume(resume):
                    if trainer.is_global_zero:
                        print(line, file=sys.stderr, flush=True)
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
            exit_if_preempted(trainer, run_dir)  # a preemption signal stopped training: last.ckpt saved
            # full state (resumable) for the next stage to find; rewritten when it got new earlier weights
            if inputs.replaced or not last_is_current(trainer, last):
                trainer.save_checkpoint(last, weights_only=False)
            for optimizer in trainer.optimizers:  # testing needs no optimizer state or gradients: free them
                optimizer.state.clear()  # (a paper-scale model holds 3x its weights in them)
            module.zero_grad(set_to_none=True)
            gc.collect()
        if cfg.test or not cfg.train:
            trainer.test(module, datamodule=datamodule, verbose=False)
            metrics = float_metrics(trainer.callback_metrics)
        metrics = {**clock.metrics(), **metrics}
        metrics.update(differences(metrics))
        if trainer.is_global_zero and metrics:
            metrics.update(publish_metrics(run_dir, metrics, loggers))
    return metrics


@contextmanager
def finishing(loggers: list) -> Iterator[None]:
    """End the stage's W&B run when the stage ends, so that the next stage or sweep job opens its own;
    its exit code: 0, a SystemExit's (a preemption, common/resume.py), or 1."""
    code = 1
    try:
        yield
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        raise
    finally:
        for logger in loggers:
            if isinstance(logger, StageWandbLogger):
                logger.finish(code)


def last_is_current(trainer: L.Trainer, path: Path) -> bool:
    """Whether ModelCheckpoint already wrote `path` at the trainer's final step (Lightning saves last.ckpt
    when training ends, fast_dev_run included): a paper-scale checkpoint takes tens of seconds to write.
    It must be resumable (optimizer state), except under fast_dev_run, which is never resumed."""
    callback = trainer.checkpoint_callback
    if callback is None or not callback.last_model_path or not path.is_file():
        return False
    if Path(callback.last_model_path).resolve() != path.resolve():
        return False
    saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)  # reads no tensor data
    resumable = "optimizer_states" in saved or bool(trainer.fast_dev_run)
    return saved.get("global_step") == trainer.global_step and resumable


def load_for_eval(cfg: DictConfig, stage: str, ckpt_path: str | None) -> L.LightningModule:
    """Eval-only: the stage's module class, loaded from ckpt_path (family and stage checked; the file read
    once, memory-mapped: common.loader), with the checkpoint's hyperparameters except those set on the
    command line (`model.<stage>.temperature=0`: evaluate the same weights with another sampler setting)."""
    if not ckpt_path:
        raise StageError("train=false needs ckpt_path=PATH (a checkpoint to evaluate)")
    cls = hydra.utils.get_class(cfg.model[stage]._target_)
    prefix = f"model.{stage}."
    overrides = {
        key[len(prefix) :]: OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(cfg, key)}))["v"]
        for key in command_line_keys()
        if key.startswith(prefix)
    }
    return build_module(open_checkpoint(ckpt_path, cls.family, stage), cls, overrides=overrides)


def eval_stage(cfg: DictConfig) -> str:
    """With train=false: the stage that wrote cfg.ckpt_path."""
    if not cfg.ckpt_path:
        raise StageError("train=false needs ckpt_path=PATH (a checkpoint to evaluate)")
    stage = read_meta(cfg.ckpt_path).get("stage")
    if stage not in cfg.model:
        raise StageError(f"{cfg.ckpt_path}: written by stage {stage!r}, not a stage of this model")
    return stage
