"""Benchmarks: `python -m common.bench {play,train,data} [--experiments a,b] --out FILE.json`.

- play: ms/frame (median frame) and frames/s of each experiment's world model (batch 1), at each torch
  thread count of `--threads 1,2`, cached vs uncached where the family exposes `use_cache`, and, where
  the model can carry an agent (`WorldModel.policy`; DIAMOND's actor-critic, built at DIAMOND's published
  size), the step alone vs the agent acting on the frame on show and then the step (`agent`: what a
  frame costs when the agent plays), all taking turns over rounds, from randomly initialised models
  built from the experiment configs (Hydra compose API; no checkpoint, no data), so a row measures the
  network the experiment trains. `--checkpoint PATH` (repeatable) times a checkpoint's world model
  instead, e.g. open-oasis' released sizes converted by `python -m oasis.convert` (`--context 31`: its
  full window). JSON: [{"family", "experiment", "threads", "cached", "agent", "ms_per_frame", "fps",
  "loadavg_1m"}] (experiment: the checkpoint's path for those rows); loadavg_1m is the mean 1-minute load
  average over that row's turns.
- train: steps/s and samples/s of every stage on a synthetic batch of the experiment's shape (a real
  Lightning Trainer, so optimizers, schedules and clipping are the stage's own), the FLOPs of one step
  (torch.utils.flop_counter) and the achieved FLOP/s as a fraction of a float32 matmul peak measured in
  the same process.
- data: the data pipeline's own benchmark (common.data.bench).
- startup: what play's start-up costs on a checkpoint, in fresh processes (common.bench_startup).

Timings share the machine with whatever else runs: report the load with the figures. Benchmarks are
never timed tests: tests only check that the harness produces well-formed rows.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from common.config import CONF_DIR

PLAY_KEYS = ("family", "experiment", "threads", "cached", "agent", "ms_per_frame", "fps", "loadavg_1m")
PLAY_THREADS = 1  # play.py's default torch threads (conf/play.yaml), the play bench's default
# null module kwargs a trained model learns from data but a random one needs set (Oasis' latent scale)
RANDOM_INIT = {"scaling_factor": 1.0}
# module kwargs that give a random model an agent at its published size, where the module takes them and
# the config leaves them out: DIAMOND's actor-critic with ActorCritic's defaults, DIAMOND's
# config/agent/default.yaml (LSTM 512, channels [32, 32, 64, 64], a pooling after each)
AGENT_INIT: dict[str, Any] = {"actor_critic": {}}


# --- configs and randomly initialised modules ---------------------------------------------------------
def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_experiment(name: str, overrides: Iterable[str] = ()) -> Any:
    """The composed train config of `experiment=name` (nothing is collected or downloaded).

    overrides: `key=value` applied where `key` exists in this experiment's config, so one list can
    serve several families (e.g. model.dynamics.maskgit_steps=8 and model.dit.ddim_steps=4).
    """
    import yaml
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    if name not in experiment_names():
        raise ValueError(f"unknown experiment {name!r} (known: {', '.join(experiment_names())})")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"])
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        if OmegaConf.select(cfg, key, default="__missing__") != "__missing__":
            OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    return cfg


def build_modules(cfg, run_dir: str | Path, agent: bool = False) -> dict[str, torch.nn.Module]:
    """Every stage's LightningModule, randomly initialised, in order; earlier stages are handed to later
    ones through checkpoints written into `run_dir` exactly where train.py would put them. agent: give
    a module that can carry an agent one (`AGENT_INIT`)."""
    import hydra
    import lightning
    from omegaconf import open_dict

    from common.checkpoint import META_KEY
    from common.stages import checkpoint_dir, module_config, stage_config

    modules = {}
    for stage in cfg.model.keys():
        scfg = stage_config(cfg, stage)
        mcfg = module_config(scfg, stage, Path(run_dir))
        with open_dict(mcfg):
            for key, value in RANDOM_INIT.items():
                if key in mcfg and mcfg[key] is None:
                    mcfg[key] = value
            takes = inspect.signature(hydra.utils.get_class(mcfg._target_).__init__).parameters
            for key, value in AGENT_INIT.items() if agent else ():
                if key in takes and key not in mcfg:
                    mcfg[key] = value
        module = hydra.utils.instantiate(mcfg, _convert_="all")
        path = checkpoint_dir(Path(run_dir), stage) / "last.ckpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt = {
            "pytorch-lightning_version": lightning.__version__,
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            META_KEY: {"family": module.family, "stage": stage},
        }
        torch.save(ckpt, path)
        modules[stage] = module
    return modules


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- play ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def time_world_model(
    world_model, frames: int = 10, warmup: int = 2, context: int = 16, seed: int = 0, agent: bool = False
) -> list[float]:
    """ms of each of `frames` generated frames at batch 1, after `warmup` frames, from `context` random
    context frames. Actions are random, or with `agent` the world model's agent (`policy.act`) acting
    on the frame on show, timed with the step."""
    g = torch.Generator().manual_seed(seed)
    t = max(context, world_model.context_length)
    video = torch.randint(0, 256, (1, t, *world_model.frame_shape), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, world_model.num_actions, (1, t), generator=g)
    world_model.reset(video, actions)  # resets the agent too
    shown = [video[:, -1]]  # (1, H, W, C): the frame on show

    def step():
        if agent:
            action = world_model.policy.act(shown[0])
        else:
            action = torch.randint(0, world_model.num_actions, (1,), generator=g)
        shown[0] = world_model.step(action).frames

    for _ in range(warmup):
        step()
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        step()
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def play_rows(
    family: str,
    experiment: str,
    world_model,
    frames: int = 10,
    warmup: int = 2,
    context: int = 16,
    rounds: int = 3,
    threads: list[int] | None = None,
) -> list[dict]:
    """Rows for one world model, one per (torch threads, cached, agent): cached and uncached when it has
    `use_cache`, else uncached only; without and with its agent acting when it carries one
    (`world_model.policy`), else without; `threads` None: the current thread count.

    The settings take turns over `rounds` rounds of `frames` frames each (so that a machine whose speed or
    load drifts affects all alike), and each row reports the median frame time and the mean 1-minute load
    average at its turns (the machine's other work: report it beside the figure).
    """
    before = torch.get_num_threads()
    counts = list(threads or [before])
    caching = [True, False] if hasattr(world_model, "use_cache") else [False]
    agents = [False, True] if world_model.policy is not None else [False]
    settings = [(n, cached, agent) for n in counts for cached in caching for agent in agents]
    times: dict[tuple, list[float]] = {s: [] for s in settings}
    loads: dict[tuple, list[float]] = {s: [] for s in settings}
    try:
        for _ in range(rounds):
            for n, cached, agent in settings:
                torch.set_num_threads(n)
                if hasattr(world_model, "use_cache"):
                    world_model.use_cache = cached
                loads[n, cached, agent].append(os.getloadavg()[0])
                times[n, cached, agent] += time_world_model(world_model, frames, warmup, context, agent=agent)
    finally:
        torch.set_num_threads(before)
    rows = []
    for n, cached, agent in settings:
        ms = statistics.median(times[n, cached, agent])
        rows.append({"family": family, "experiment": experiment, "threads": n, "cached": cached, "agent": agent,
                     "ms_per_frame": ms, "fps": 1000.0 / ms,
                     "loadavg_1m": statistics.fmean(loads[n, cached, agent])})  # fmt: skip
    return rows


def bench_play(
    experiments: list[str],
    frames: int,
    warmup: int,
    context: int,
    overrides=(),
    log: Callable = print,
    rounds: int = 3,
    threads: list[int] | None = None,
) -> list[dict]:
    rows = []
    for name in experiments:
        cfg = compose_experiment(name, overrides)
        with tempfile.TemporaryDirectory() as run_dir:
            modules = build_modules(cfg, run_dir, agent=True)
        final = list(modules.values())[-1].eval()
        world_model = final.world_model()
        n = sum(count_params(m) for m in modules.values())
        log(f"{name}: {final.family}, {n / 1e6:.1f}M parameters (all stages), context {context} frames")
        new = play_rows(final.family, name, world_model, frames, warmup, context, rounds, threads)
        for row in new:
            log(
                f"  threads={row['threads']} cached={row['cached']} agent={row['agent']}: "
                f"{row['ms_per_frame']:.1f} ms/frame, "
                f"{row['fps']:.2f} frames/s (load average {row['loadavg_1m']:.2f} on {os.cpu_count()} CPUs)"
            )
        rows += new
    return rows


def bench_checkpoints(
    paths: list[str],
    frames: int,
    warmup: int,
    context: int,
    log: Callable = print,
    rounds: int = 3,
    threads: list[int] | None = None,
) -> list[dict]:
    """Rows (as `bench_play`'s) for the world model of each checkpoint in `paths`, loaded on the CPU."""
    from common.world_model import load_world_model

    rows = []
    for path in paths:
        world_model = load_world_model(path)
        family = type(world_model).__module__.partition(".")[0]  # the family package the model comes from
        log(f"{path}: {family}, context {context} frames")
        new = play_rows(family, str(path), world_model, frames, warmup, context, rounds, threads)
        for row in new:
            log(f"  threads={row['threads']} cached={row['cached']} agent={row['agent']}: "
                f"{row['ms_per_frame']:.1f} ms/frame (load average {row['loadavg_1m']:.2f})")  # fmt: skip
        rows += new
    return rows


# --- train --------------------------------------------------------------------------------------------
def synthetic_batch(batch_size: int, clip_length: int, frame_size: int, num_actions: int, seed: int = 0):
    """A batch in the VideoDataModule format, random content."""
    g = torch.Generator().manual_seed(seed)
    b, t = batch_size, clip_length
    return {
        "frames": torch.randint(0, 256, (b, t, frame_size, frame_size, 3), generator=g, dtype=torch.uint8),
        "actions": torch.randint(0, num_actions, (b, t), generator=g),
        "rewards": torch.randint(-1, 2, (b, t), generator=g).float(),
        "terminals": torch.zeros(b, t, dtype=torch.bool),
    }


class _Repeat(torch.utils.data.Dataset):
    """The same pre-collated batch, `n` times (batch_size=None in the DataLoader)."""

    def __init__(self, batch: dict, n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.batch


def matmul_peak(n: int = 1024, repeats: int = 10) -> float:
    """float32 matmul FLOP/s on this machine with the current torch threads (best of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def time_training(
    module, batch: dict, steps: int = 5, warmup: int = 1, trainer_kwargs: dict | None = None
) -> dict:
    """Train `module` on `batch` for warmup + steps optimizer steps; the first step counts FLOPs.

    Returns {"precision" (the one timed), "steps_per_s", "samples_per_s", "flops_per_step"}.
    """
    import logging

    import lightning as L
    from torch.utils.flop_counter import FlopCounterMode

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-stage Trainer banners

    class Timer(L.Callback):
        def __init__(self):
            self.times, self.flops, self.counter = [], 0, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.counter = FlopCounterMode(display=False)
                self.counter.__enter__()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            elapsed = time.perf_counter() - self.start
            if self.counter is not None:
                self.counter.__exit__(None, None, None)
                self.flops, self.counter = self.counter.get_total_flops(), None
            elif batch_idx >= warmup:
                self.times.append(elapsed)

    timer = Timer()
    kwargs = {"accelerator": "cpu", "devices": 1, "precision": "32-true", **(trainer_kwargs or {})}
    trainer = L.Trainer(
        max_steps=warmup + steps, logger=False, callbacks=[timer], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        **kwargs,
    )  # fmt: skip
    n = (warmup + steps) * max(1, int(kwargs.get("accumulate_grad_batches", 1)))
    loader = torch.utils.data.DataLoader(_Repeat(batch, n), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    if not timer.times:
        raise RuntimeError(f"{type(module).__name__}: no timed training step (a stage that does not train?)")
    seconds = sum(timer.times) / len(timer.times)
    b = len(batch["frames"])
    return {
        "precision": str(kwargs["precision"]), "steps_per_s": 1.0 / seconds, "samples_per_s": b / seconds,
        "flops_per_step": float(timer.flops),
    }  # fmt: skip


def train_rows(experiment: str, cfg, run_dir: str | Path, steps: int, warmup: int, peak: float) -> list[dict]:
    """One row per stage of `cfg.model`: throughput on a synthetic batch of the stage's data shape."""
    from common.stages import stage_config

    rows = []
    modules = build_modules(cfg, run_dir)
    for stage, module in modules.items():
        scfg = stage_config(cfg, stage)
        d = scfg.data
        batch = synthetic_batch(int(d.batch_size), int(d.clip_length), int(d.frame_size), int(d.num_actions))
        keys = ("precision", "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")
        tk = {k: scfg.trainer[k] for k in keys if scfg.trainer.get(k) is not None}
        r = time_training(module, batch, steps, warmup, tk)
        achieved = r["flops_per_step"] * r["steps_per_s"]
        rows.append({
            "family": module.family, "experiment": experiment, "stage": stage,
            "batch_size": int(d.batch_size), "clip_length": int(d.clip_length), "params": count_params(module),
            **r, "flops_per_s": achieved, "peak_flops_per_s": peak, "fraction_of_peak": achieved / peak,
        })  # fmt: skip
    return rows


def bench_train(
    experiments: list[str], steps: int, warmup: int, overrides: list[str], log=print
) -> list[dict]:
    peak = matmul_peak()
    log(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s with {torch.get_num_threads()} threads")
    rows = []
    for name in experiments:
        cfg = compose_experiment(name, overrides)
        with tempfile.TemporaryDirectory() as run_dir:
            rows += train_rows(name, cfg, run_dir, steps, warmup, peak)
        log(f"  {name}: done")
    return rows


# --- output -------------------------------------------------------------------------------------------
def print_table(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 200))  # the whole row, even into a pipe
    table = Table(title=title)
    if not rows:
        console.print(f"{title}: no rows")
        return
    for key in rows[0]:
        table.add_column(key, justify="right" if isinstance(rows[0][key], (int, float)) else "left")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    console.print(table)


def _fmt(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"


def write_json(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1) + "\n")
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror}") from None
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m common.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    play = sub.add_parser("play", help="ms/frame of every experiment's world model (batch 1)")
    train = sub.add_parser("train", help="steps/s, samples/s and FLOP/s of every stage")
    sub.add_parser("data", help="the data pipeline (common.data.bench)", add_help=False)
    sub.add_parser("startup", help="play's start-up on a checkpoint (common.bench_startup)", add_help=False)
    for p in (play, train):
        p.add_argument("--experiments", default=None, help="comma-separated (default: every conf/experiment)")
        p.add_argument("--out", default=None, help="write the rows as JSON here")
    play.add_argument(
        "--checkpoint", action="append", default=[],
        help="time this checkpoint's world model (repeatable); alone, no experiment is timed",
    )  # fmt: skip
    play.add_argument(
        "--threads", type=_int_list, default=[PLAY_THREADS],
        help=f"torch threads, comma-separated counts taking turns, e.g. 1,2 (default {PLAY_THREADS}: play.py's)",
    )  # fmt: skip
    train.add_argument("--threads", type=int, default=2)
    play.add_argument("--frames", type=int, default=10, help="timed frames per setting and round")
    play.add_argument("--rounds", type=int, default=3, help="rounds in which cached and uncached take turns")
    play.add_argument("--warmup", type=int, default=2)
    play.add_argument("--context", type=int, default=16, help="context frames given to reset()")
    train.add_argument("--steps", type=int, default=3, help="timed optimizer steps per stage")
    train.add_argument("--warmup", type=int, default=1)
    for p in (play, train):
        p.add_argument(
            "--override", action="append", default=[], help="Hydra override, e.g. model.dit.ddim_steps=4"
        )
    args, rest = parser.parse_known_args(argv)
    if args.command not in ("data", "startup") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args


def _int_list(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts like 1,2") from None
    if any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: thread counts are at least 1")
    return counts


def main(argv: list[str] | None = None) -> int:
    import sys

    args = parse_args(argv)
    if args.command == "data":
        from common.data import bench as data_bench  # the foundation's data benchmark

        return data_bench.run(args) or 0
    if args.command == "startup":
        from common import bench_startup

        return bench_startup.main(args.rest)
    experiments = args.experiments.split(",") if args.experiments else experiment_names()
    if args.command == "play" and args.checkpoint and not args.experiments:
        experiments = []
    try:
        if args.command == "play":
            rows = bench_play(
                experiments, args.frames, args.warmup, args.context, args.override, rounds=args.rounds,
                threads=args.threads,
            )  # fmt: skip
            rows += bench_checkpoints(
                args.checkpoint,
                args.frames,
                args.warmup,
                args.context,
                rounds=args.rounds,
                threads=args.threads,
            )
            title = f"bench play (threads {','.join(map(str, args.threads))}; {os.cpu_count()} CPUs)"
        else:
            torch.set_num_threads(args.threads)
            rows = bench_train(experiments, args.steps, args.warmup, args.override)
            title = f"bench train ({torch.get_num_threads()} threads)"
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_table(title, rows)
    if args.out:
        print(f"wrote {write_json(args.out, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
