"""The data pipeline benchmark (`python -m common.bench data [--out FILE.json]`), on CoinRun, in one run:

- env_fps:         raw env stepping with random actions, the same number of envs as collection
- collect_fps:     frames/s written to shards (stepping + compression + atomic writes)
- load_fps:        frames/s of random 16-frame training clips through VideoDataModule (batch 32, 0 workers)
- raw_fps:         the same clip slicing from an in-memory numpy array (the ceiling for load_fps)
- bytes_per_frame: shard bytes on disk per frame (raw: 64*64*3 = 12,288)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.data.collect import collect
from common.data.envs import make_env


def _data_config(episodes: int, max_steps: int, num_envs: int):
    from hydra import compose, initialize_config_dir

    from common.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("collect", overrides=["data=procgen"])
    d = cfg.data
    d.episodes, d.max_steps, d.num_envs, d.progress, d.name = (
        episodes,
        max_steps,
        num_envs,
        False,
        "bench_coinrun",
    )
    d.splits = {"train": 1.0}
    d.shard_frames = 2000  # many shards, as in a real collection: writing overlaps stepping (steady state)
    return d


def env_fps(frames: int, num_envs: int) -> float:
    envs = [make_env("procgen", "coinrun") for _ in range(num_envs)]
    rng = np.random.default_rng(0)
    for i, env in enumerate(envs):
        env.reset(i)
    t0, n = time.perf_counter(), 0
    while n < frames:
        for i, env in enumerate(envs):
            _, _, done = env.step(int(rng.integers(env.num_actions)))
            n += 1
            if done:
                env.reset(i)
    return n / (time.perf_counter() - t0)


def load_fps(root: Path, batches: int, batch_size: int = 32, clip: int = 16) -> tuple[float, float]:
    """(load_fps through the DataModule, raw_fps from memory) over the same number of random clips."""
    from common.data.datamodule import VideoDataModule

    dm = VideoDataModule(
        source="procgen", game="coinrun", name=root.name, root=str(root.parent), num_actions=15,
        collect=False, splits={"train": 1.0}, clip_length=clip, batch_size=batch_size, episodes=10**9,
    )  # fmt: skip
    dm.setup()
    loader = iter(dm.train_dataloader())
    next(loader)
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
    load = batches * batch["frames"].shape[0] * clip / (time.perf_counter() - t0)

    shards, train = dm.shards, dm.datasets["train"]
    memory = {r: shards.read(r)["frames"] for r in train.episodes}
    refs, rng = train.episodes, np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(batches):
        clips = []
        for _ in range(batch_size):
            i = int(rng.integers(len(train)))
            e = int(np.searchsorted(train.cum, i, side="right") - 1)
            s = i - int(train.cum[e])
            clips.append(torch.from_numpy(memory[refs[e]][s : s + clip]))
        torch.stack(clips)
    raw = batches * batch_size * clip / (time.perf_counter() - t0)
    return load, raw


def measure(
    episodes: int = 32, max_steps: int = 500, num_envs: int = 8, batches: int = 100
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = _data_config(episodes, max_steps, num_envs)
        make_env("procgen", "coinrun").close()  # procgen loads its assets once per process: not timed
        t0 = time.perf_counter()
        root = collect(data, tmp, progress=False)
        seconds = time.perf_counter() - t0
        manifest = json.loads((root / "manifest.json").read_text())
        frames = sum(s["frames"] for s in manifest["shards"])
        nbytes = sum(s["bytes"] for s in manifest["shards"])
        result = {"frames": frames, "num_envs": num_envs, "collect_fps": frames / seconds}
        result["env_fps"] = env_fps(frames, num_envs)
        result["load_fps"], result["raw_fps"] = load_fps(root, batches)
        result["bytes_per_frame"] = nbytes / frames
    result["targets"] = {
        "collect_fps >= 0.5 * env_fps": result["collect_fps"] >= 0.5 * result["env_fps"],
        "load_fps >= 20000": result["load_fps"] >= 20000,
        "bytes_per_frame <= 2500": result["bytes_per_frame"] <= 2500,
    }
    return result


def run(args: argparse.Namespace | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.bench data")
    parser.add_argument("--out", default=None)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args(getattr(args, "rest", None) or [])
    torch.set_num_threads(opts.threads)
    result = measure(opts.episodes, opts.max_steps, opts.num_envs, opts.batches)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench data (CoinRun, {result['frames']} frames, {result['num_envs']} envs)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("env_fps", "collect_fps", "load_fps", "raw_fps", "bytes_per_frame"):
        table.add_row(key, f"{result[key]:,.0f}")
    for name, ok in result["targets"].items():
        table.add_row(name, "yes" if ok else "NO")
    Console().print(table)
    if opts.out:
        Path(opts.out).write_text(json.dumps(result, indent=1))
    return 0 if all(result["targets"].values()) else 1
