"""python train.py experiment=<name> [key=value ...]: compose, instantiate, run every stage, test; with a
`loop` config (common/loop.py), collect real steps and run every stage again, epoch after epoch.

Writes into the run directory: config.yaml (resolved), checkpoints/<stage>/, csv/<stage>/,
metrics.json (final test metrics); returns cfg.optimized_metric to Hydra sweepers.
"""

from __future__ import annotations

import gc
import os
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

import common.config  # noqa: F401 - registers the config resolvers
from common.allocator import reexec_with_malloc_settings
from common.loop import run_loop
from common.resume import sigterm_exit_code
from common.stages import StageError, eval_stage, run_stage, stage_names


class JobFailed(RuntimeError):
    """A multirun job's one-line error: raised (not exited) so that Hydra runs the sweep's other jobs."""


def print_config(cfg: DictConfig) -> None:
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(f"[bold]{key}[/bold]").add(Syntax(text, "yaml"))
    rprint(tree)


def one_line(error: BaseException) -> str:
    """The message a person can act on: the error Hydra's instantiation or OmegaConf's interpolation
    wrapped, and of an error re-raised from a DataLoader worker ("Caught ValueError in DataLoader worker
    process 0. Original Traceback ...") its last line, without the class name."""
    while isinstance(error, (InstantiationException, InterpolationResolutionError)):
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    message = str(error)
    if "Original Traceback" in message:
        last = message.strip().splitlines()[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return message


warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*weights_only.*")


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    try:
        stages = [eval_stage(cfg)] if not cfg.train else stage_names(cfg)
        OmegaConf.resolve(cfg)
        if rank_zero_only.rank == 0:  # DDP ranks > 0 run this script too; they write nothing
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
            if cfg.print_config:
                print_config(cfg)
        L.seed_everything(cfg.seed, workers=True)
        metrics: dict[str, float] = {}
        if cfg.get("loop") and cfg.train:  # collect, train every stage, repeat (common/loop.py)
            metrics = run_loop(cfg, run_dir)
        else:
            for stage in stages:
                with sigterm_exit_code():
                    metrics.update(run_stage(cfg, stage, run_dir))
                gc.collect()  # the finished stage's trainer/module cycle holds its weights until collected
    except (StageError, FileNotFoundError, ValueError, InstantiationException) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        if hydra.core.hydra_config.HydraConfig.get().mode == RunMode.MULTIRUN:
            raise JobFailed(
                one_line(e)
            ) from None  # Hydra records it, runs the sweep's other jobs, then fails
        sys.exit(2)
    if cfg.optimized_metric:
        if cfg.optimized_metric not in metrics:
            print(
                f"error: optimized_metric {cfg.optimized_metric!r} not among {sorted(metrics)}",
                file=sys.stderr,
            )
            sys.exit(2)
        return metrics[cfg.optimized_metric]
    return None


if __name__ == "__main__":
    # A W&B service token inherited from a parent process (a notebook or a script that ran W&B, then
    # started train.py) would make this process's runs streams of that service: a rerun after a kill -9
    # then finds its run id "in use" by the killed process's stream. Each train.py process has its own.
    os.environ.pop("WANDB_SERVICE", None)
    reexec_with_malloc_settings()
    main()
