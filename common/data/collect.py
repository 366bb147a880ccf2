"""Roll out a policy in an environment and write episodes to shards, resumably.

    python -m common.data.collect data=procgen data.game=coinrun data.episodes=8 data.max_steps=200

Episode e uses seed `data.seed_start + e` (a procgen level, an Atari reset seed, a Crafter world):
collection is deterministic, and a rerun after a crash or Ctrl-C collects exactly the seeds that no
shard holds yet. `data.num_envs` environments step in lockstep, each taking the next pending seed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from common.data.envs import make_env
from common.data.shards import (
    FORMAT_VERSION,
    MANIFEST,
    Episode,
    check_shard,
    check_version,
    recollect_hint,
    sha256,
    shard_name,
    write_json_atomic,
    write_shard,
)
from common.data.splits import split_of, split_ranges

# collection settings that must match for a dataset folder to be resumed
IDENTITY_KEYS = ("source", "game", "env", "max_steps", "seed_start", "policy", "action_repeat")


def dataset_dir(data: DictConfig, data_dir: str | Path) -> Path:
    return Path(data_dir) / data.name


class Policy:
    """`random`: uniform actions; `random_repeat`: a uniform action held for `action_repeat` steps.
    Seeded by the episode seed, so an episode is the same whenever it is collected."""

    def __init__(self, kind: str, num_actions: int, seed: int, action_repeat: int = 1):
        if kind not in ("random", "random_repeat"):
            raise ValueError(f"data.policy: unknown policy {kind!r} (random, random_repeat)")
        self.repeat = action_repeat if kind == "random_repeat" else 1
        self.n, self.rng, self.t, self.action = num_actions, np.random.default_rng([seed, 7919]), 0, 0

    def __call__(self) -> int:
        if self.t % self.repeat == 0:
            self.action = int(self.rng.integers(self.n))
        self.t += 1
        return self.action


class _Rollout:
    """One environment collecting one episode at a time."""

    def __init__(self, env, data: DictConfig):
        self.env, self.data, self.seed = env, data, None
        self.max_steps = int(data.max_steps)  # read once: OmegaConf access is slow in the step loop

    def start(self, seed: int) -> None:
        self.seed = seed
        self.policy = Policy(self.data.policy, self.env.num_actions, seed, self.data.action_repeat)
        self.frames, self.actions, self.rewards, self.terms = [self.env.reset(seed)], [], [], []

    def step(self) -> Episode | None:
        """Advance one step; returns the finished episode, or None."""
        action = self.policy()
        frame, reward, done = self.env.step(action)
        self.actions.append(action)
        self.rewards.append(reward)
        self.terms.append(done and not self.env.truncated)  # a time limit is a truncation, never a terminal
        if not done and len(self.frames) < self.max_steps:
            self.frames.append(frame)
            return None
        ep = Episode(
            self.seed,
            np.stack(self.frames),
            np.array(self.actions, dtype=np.int32),
            np.array(self.rewards, dtype=np.float32),
            np.array(self.terms, dtype=bool),
        )
        self.seed = None
        return ep


def _identity(data: DictConfig) -> dict[str, Any]:
    cfg = OmegaConf.to_container(data, resolve=True)
    return {k: cfg.get(k) for k in IDENTITY_KEYS}


def _load_manifest(root: Path, data: DictConfig, env) -> dict[str, Any]:
    """The folder's manifest (checked against this config), adopting complete shards a crash left out."""
    path = root / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        check_version(manifest.get("format_version"), path)  # an older complete dataset is still read
        ours = _identity(data)
        for key, value in manifest["collection"].items():
            if key in ours and ours[key] != value:
                raise ValueError(
                    f"{path}: collected with data.{key}={value!r}, this config has {ours[key]!r}; "
                    f"use another data.name or paths.data_dir"
                )
    else:
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": data.source,
            "game": data.get("game"),
            "env_id": env.env_id,
            "num_actions": env.num_actions,
            "action_meanings": env.action_meanings,
            "frame_shape": list(env.frame_shape),
            "fps": env.fps,
            "policy": data.policy,
            "collection": _identity(data),
            "config": OmegaConf.to_container(data, resolve=True),
            "shards": [],
        }
    for stray in root.glob("*.tmp"):
        stray.unlink()  # a shard or manifest being written when the last run died
    known = {s["file"] for s in manifest["shards"]}
    for orphan in sorted(root.glob("shard-*.h5")):
        if orphan.name not in known:  # renamed, but the manifest update did not happen
            try:
                check_shard(orphan)
                manifest["shards"].append(_shard_entry(orphan, _ranges(data)))
            except (ValueError, OSError):
                orphan.unlink()
    return manifest


def _ranges(data: DictConfig) -> dict[str, tuple[int, int]]:
    return split_ranges(data.splits, data.seed_start, data.episodes)


def _shard_entry(path: Path, ranges: dict[str, tuple[int, int]]) -> dict[str, Any]:
    import h5py

    with h5py.File(path, "r") as f:
        starts = f["episode_starts"][:].tolist()
        seeds = f["episode_seeds"][:].tolist()
    return {
        "file": path.name,
        "episodes": len(seeds),
        "frames": starts[-1],
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
        "episode_starts": starts,
        "episode_seeds": seeds,
        "episode_splits": [split_of(s, ranges) for s in seeds],
    }


def collect(data: DictConfig, data_dir: str | Path, progress: bool = True) -> Path:
    """Collect the episodes of `data` that the folder does not hold yet. Returns the dataset folder."""
    root = dataset_dir(data, data_dir)
    root.mkdir(parents=True, exist_ok=True)
    envs = [make_env(data.source, data.get("game"), **(data.get("env") or {})) for _ in range(data.num_envs)]
    manifest = _load_manifest(root, data, envs[0])
    write_json_atomic(root / MANIFEST, manifest)
    done = {s for shard in manifest["shards"] for s in shard["episode_seeds"]}
    pending = [s for s in range(data.seed_start, data.seed_start + data.episodes) if s not in done]
    if pending and manifest["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{root}: format_version {manifest['format_version']} dataset (time-limit ends may be marked "
            f"terminal); {len(pending)} more episodes would be labelled by format {FORMAT_VERSION}'s rule: "
            f"{recollect_hint(root)}"
        )
    attrs = {k: manifest[k] for k in ("env_id", "num_actions", "action_meanings", "fps", "policy")}
    buffer: list[Episode] = []
    writer = _ShardWriter(root, manifest, attrs, data.compression, _ranges(data))

    def flush() -> None:
        if buffer:
            writer.submit(sorted(buffer, key=lambda e: e.seed))
            buffer.clear()

    rollouts = [_Rollout(env, data) for env in envs]
    queue = list(reversed(pending))
    bar = _Progress(len(pending), root, enabled=progress)
    try:
        for r in rollouts:
            if queue:
                r.start(queue.pop())
        while any(r.seed is not None for r in rollouts):
            for r in rollouts:
                if r.seed is None:
                    continue
                ep = r.step()
                bar.frame()
                if ep is not None:
                    buffer.append(ep)
                    bar.episode()
                    if queue:
                        r.start(queue.pop())
            if sum(len(e) for e in buffer) >= data.shard_frames:
                flush()
        flush()
    except KeyboardInterrupt:
        flush()  # keep every finished episode; unfinished ones are collected again on resume
        raise
    finally:
        writer.close()
        bar.close()
        for env in envs:
            env.close()
    return root


def _write(path: Path, episodes: list[Episode], attrs, compression: str, ranges) -> dict[str, Any]:
    write_shard(path, episodes, attrs, compression)
    return _shard_entry(path, ranges)


def _die_with_parent() -> None:
    """Writer process: end when the collector dies (a SIGKILLed collection leaves no late writer)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the collector's to handle


class _ShardWriter:
    """Compresses and writes shards in a second process while the environments keep stepping; the
    manifest is updated (atomically, in order) once a shard is complete. At most one shard in flight."""

    def __init__(self, root: Path, manifest: dict[str, Any], attrs, compression: str, ranges):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.root, self.manifest, self.attrs, self.compression, self.ranges = (
            root,
            manifest,
            attrs,
            compression,
            ranges,
        )
        self.pool = ProcessPoolExecutor(1, mp_context=mp.get_context("fork"), initializer=_die_with_parent)
        self.future = None

    def _finish(self) -> None:
        if self.future is not None:
            entry, self.future = self.future.result(), None
            self.manifest["shards"].append(entry)
            write_json_atomic(self.root / MANIFEST, self.manifest)

    def submit(self, episodes: list[Episode]) -> None:
        self._finish()
        path = self.root / shard_name(len(self.manifest["shards"]))
        self.future = self.pool.submit(_write, path, episodes, self.attrs, self.compression, self.ranges)

    def close(self) -> None:
        try:
            self._finish()
        finally:
            self.pool.shutdown()


class _Progress:
    """A rich progress bar over episodes, with frames/s."""

    def __init__(self, total: int, root: Path, enabled: bool):
        self.enabled, self.frames, self.t0 = enabled and total > 0, 0, time.time()
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(
                TextColumn(f"collect {root.name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("episodes · {task.fields[fps]:.0f} frames/s"),
                TimeRemainingColumn(),
            )
            self.task = self.p.add_task("collect", total=total, fps=0.0)
            self.p.start()

    def frame(self) -> None:
        self.frames += 1

    def episode(self) -> None:
        if self.enabled:
            self.p.update(self.task, advance=1, fps=self.frames / max(time.time() - self.t0, 1e-9))

    def close(self) -> None:
        if self.enabled:
            self.p.stop()


def _main() -> None:
    import hydra

    import common.config  # noqa: F401 - registers the config resolvers

    @hydra.main(config_path="../../conf", config_name="collect", version_base="1.3")
    def run(cfg: DictConfig) -> None:
        root = collect(cfg.data, cfg.paths.data_dir)
        manifest = json.loads((root / MANIFEST).read_text())
        n_ep = sum(s["episodes"] for s in manifest["shards"])
        n_fr = sum(s["frames"] for s in manifest["shards"])
        print(f"{root}: {n_ep} episodes, {n_fr} frames in {len(manifest['shards'])} shard(s)")

    run()


if __name__ == "__main__":
    _main()
