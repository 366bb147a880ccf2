"""Roll out a policy in an environment and write episodes to shards, resumably.

    python -m common.data.collect data=procgen data.game=coinrun data.episodes=8 data.max_steps=200

Episode e uses seed `data.seed_start + e` (a procgen level, an Atari reset seed, a Crafter world):
collection is deterministic, and a rerun after a crash or Ctrl-C collects exactly the seeds that no
shard holds yet. `data.num_envs` environments step in lockstep, each taking the next pending seed.

What a kill -9 loses: finished episodes fill the shard being assembled; once it holds `data.shard_frames`
frames it is written (by a forked process: compress, fsync, rename, then the manifest) before any env
steps again. The finished episodes not on disk are thus those of one shard, the one being assembled or
written (fewer than shard_frames + max_steps frames), besides the episodes in progress on the envs.

Two collections into one folder: each holds `dataset_lock` while it writes (train.py's prepare_data
collects through `collect`, so it takes the same lock); a second one says so in one line and waits,
then collects what is still missing. A complete folder is read with no lock and no write, so a
read-only copy works.

Errors a person can act on are one line naming the folder or file and the fix (`CollectionError`, a
ValueError as train.py expects): a damaged manifest, a full or read-only disk. Shards already written
are kept; a rerun continues.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from common.data.envs import canonical_game, make_env
from common.data.policies import Policy, make_policy
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

# collection settings that must match for a dataset folder to be resumed (`sticky`: only for sticky_random)
IDENTITY_KEYS = ("source", "game", "env", "max_steps", "seed_start", "policy", "action_repeat", "sticky")


class CollectionError(ValueError):
    """A dataset that cannot be collected or read as asked; the message is one line naming the folder or
    file at fault and the fix."""


def dataset_dir(data: DictConfig, data_dir: str | Path) -> Path:
    return Path(data_dir) / data.name


def lock_path(root: Path) -> Path:
    """The collection lock of dataset folder `root`: `.NAME.lock` beside it (the folder itself is made
    under the lock)."""
    return root.parent / f".{root.name}.lock"


@contextmanager
def dataset_lock(root: Path) -> Iterator[None]:
    """Hold the collection lock of `root`; while another process holds it, say so in one line and wait.

    An fcntl lock (filelock.FileLock): the kernel releases it when its holder exits or is killed.
    Raises OSError when the lock file cannot be created (a read-only or full data folder).
    """
    lock = FileLock(lock_path(root))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(
            f"{root}: another collection holds {lock.lock_file}; waiting for it to finish",
            file=sys.stderr,
            flush=True,
        )
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def read_manifest(path: Path) -> dict[str, Any]:
    """A dataset folder's manifest.json. CollectionError (one line naming the file) when it is not one."""
    fix = f"restore it, or delete it and rerun to rebuild it from the shards in {path.parent}"
    try:
        manifest = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:
        raise CollectionError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); {fix}"
        ) from None
    except UnicodeDecodeError:
        raise CollectionError(f"{path}: not valid JSON (not UTF-8 text); {fix}") from None
    except OSError as e:
        raise CollectionError(f"{path}: cannot be read ({_reason(e)}); make it readable") from None
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    entries_ok = isinstance(shards, list) and all(
        isinstance(s, dict) and "file" in s and isinstance(s.get("episode_seeds"), list) for s in shards
    )
    if not entries_ok or not isinstance(manifest.get("collection"), dict):
        raise CollectionError(
            f"{path}: not a worldplay manifest (it needs 'collection' and a list of 'shards' with their "
            f"'episode_seeds'); {fix}"
        )
    return manifest


def missing_seeds(root: Path, data: DictConfig) -> list[int]:
    """The episode seeds of `data` that the folder's manifest does not list (all without a manifest).

    Reads only. Raises CollectionError for a damaged manifest, ValueError for a folder collected with
    other settings (IDENTITY_KEYS) or an unknown game.
    """
    wanted = range(data.seed_start, data.seed_start + data.episodes)
    path = root / MANIFEST
    if not path.is_file():
        return list(wanted)
    manifest = read_manifest(path)
    _check_identity(path, manifest, data)
    held = {s for shard in manifest["shards"] for s in shard["episode_seeds"]}
    return [s for s in wanted if s not in held]


class _Rollout:
    """One environment collecting one episode at a time."""

    def __init__(self, env, data: DictConfig):
        self.env, self.data, self.seed = env, data, None
        self.max_steps = int(data.max_steps)  # read once: OmegaConf access is slow in the step loop

    def start(self, seed: int) -> None:
        self.seed = seed
        data = self.data
        self.policy = make_policy(
            data.policy, self.env.num_actions, seed, data.action_repeat, data.get("sticky")
        )
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
    cfg["game"] = canonical_game(cfg["source"], cfg.get("game"))  # ms_pacman, ALE/MsPacman-v5: one game
    if cfg.get("policy") != "sticky_random":
        cfg["sticky"] = None  # hold lengths say nothing about another policy's dataset
    return {k: cfg.get(k) for k in IDENTITY_KEYS}


def _policy_params(data: DictConfig) -> dict[str, int]:
    """The collection policy's parameters (common.data.policies.Policy.params), checked."""
    sticky = data.get("sticky")
    sticky = OmegaConf.to_container(sticky, resolve=True) if isinstance(sticky, DictConfig) else sticky
    return Policy.params(data.policy, data.get("action_repeat", 1), sticky)


def _env_options(data: DictConfig, env) -> dict[str, Any]:
    """The options the env was made with: every procgen option with its value (ProcgenEnv.options), else
    `data.env` as configured."""
    if data.source == "procgen":
        return dict(env.options)
    return OmegaConf.to_container(data.env, resolve=True) if isinstance(data.get("env"), DictConfig) else {}


def _check_identity(path: Path, manifest: dict[str, Any], data: DictConfig) -> None:
    ours = _identity(data)
    for key, value in manifest["collection"].items():
        if key in ours and ours[key] != value:
            raise ValueError(
                f"{path}: collected with data.{key}={value!r}, this config has {ours[key]!r}; "
                f"use another data.name or paths.data_dir"
            )


def _load_manifest(root: Path, data: DictConfig, env) -> dict[str, Any]:
    """The folder's manifest (checked against this config), adopting complete shards a crash left out."""
    path = root / MANIFEST
    if path.is_file():
        manifest = read_manifest(path)
        check_version(manifest.get("format_version"), path)  # an older complete dataset is still read
        _check_identity(path, manifest, data)
    else:
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": data.source,
            "game": canonical_game(data.source, data.get("game")),
            "env_id": env.env_id,
            "num_actions": env.num_actions,
            "action_meanings": env.action_meanings,
            "frame_shape": list(env.frame_shape),
            "fps": env.fps,
            "policy": data.policy,
            "policy_params": _policy_params(data),
            "env_options": _env_options(data, env),
            "collection": _identity(data),
            "config": OmegaConf.to_container(data, resolve=True),
            "shards": [],
        }
    for stray in root.glob("*.tmp"):
        stray.unlink()  # a shard or manifest being written when the last run died (we hold the lock)
    known = {s["file"] for s in manifest["shards"]}
    held = {seed: s["file"] for s in manifest["shards"] for seed in s["episode_seeds"]}
    for orphan in sorted(root.glob("shard-*.h5")):
        if orphan.name not in known:  # renamed, but the manifest update did not happen
            try:
                check_shard(orphan)
                entry = _shard_entry(orphan, _ranges(data))
            except (ValueError, OSError):
                orphan.unlink()
                continue
            twice = sorted(set(entry["episode_seeds"]) & set(held))
            if twice:  # not a shard this collection wrote: a copy, or another collection's
                raise CollectionError(
                    f"{orphan}: holds episode seed {twice[0]}, which {held[twice[0]]} holds too "
                    f"({len(twice)} seed(s) in both); a dataset holds each seed once: move {orphan.name} "
                    f"out of {root}, then rerun"
                )
            held.update(dict.fromkeys(entry["episode_seeds"], orphan.name))
            manifest["shards"].append(entry)
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
    """Collect the episodes of `data` that the folder does not hold yet. Returns the dataset folder.

    A complete folder is only read: no environment, no lock, no write (a read-only copy works).
    Otherwise the environments are made first (an unknown game stops here, leaving nothing behind),
    then the missing episodes are collected under `dataset_lock`.

    Raises CollectionError (a ValueError: one line naming the folder or file and the fix) for a damaged
    manifest or a disk that is full or read-only, ValueError for an unknown game or a folder collected
    with other settings. Shards already on disk are kept in every case; a rerun continues.
    """
    root = dataset_dir(data, data_dir)
    if not missing_seeds(root, data):
        return root
    _policy_params(data)  # a bad data.policy / data.sticky stops here, before any env or file
    envs = [make_env(data.source, data.get("game"), **(data.get("env") or {})) for _ in range(data.num_envs)]
    try:
        with dataset_lock(root):
            try:
                _collect_missing(root, data, envs, progress)
            except BaseException:
                with suppress(OSError):  # a shard or manifest whose write failed: ours, as we hold the lock
                    for partial in root.glob("*.tmp"):
                        partial.unlink()
                raise
    except OSError as e:
        raise CollectionError(_write_error(root, data, e)) from None
    finally:
        for env in envs:
            env.close()
    return root


def _collect_missing(root: Path, data: DictConfig, envs: list, progress: bool) -> None:
    """Under the lock: resume the folder's manifest and collect the seeds it lacks (module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
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
    # how the data was made, in every shard (a manifest from before these keys gets them: same settings)
    manifest.setdefault("policy_params", _policy_params(data))
    manifest.setdefault("env_options", _env_options(data, envs[0]))
    attrs = {k: manifest[k] for k in ("env_id", "num_actions", "action_meanings", "fps", "policy")}
    attrs.update(policy_params=manifest["policy_params"], env_options=manifest["env_options"])
    writer = _ShardWriter(root, manifest, attrs, data.compression, _ranges(data))
    shard: list[Episode] = []  # the shard being assembled, finished episodes in order
    frames, budget = 0, int(data.shard_frames)

    def write_shard_now() -> None:
        nonlocal shard, frames
        full, shard, frames = shard, [], 0  # taken first: a Ctrl-C during the write never writes it twice
        writer.write(full)

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
                if ep is None:
                    continue
                bar.episode()
                shard.append(ep)
                frames += len(ep)
                if frames >= budget:  # complete: on disk before any env steps again
                    write_shard_now()
                if queue:
                    r.start(queue.pop())
        write_shard_now()
    except KeyboardInterrupt:
        write_shard_now()  # keep every finished episode; unfinished ones are collected again on resume
        raise
    finally:
        bar.close()


def _write_error(root: Path, data: DictConfig, e: OSError) -> str:
    """One line for an OSError while collecting into `root`: what failed, what is kept, the fix."""
    where = Path(e.filename) if e.filename else root
    if e.errno == errno.ENOSPC:
        fix = "free space on that disk or set paths.data_dir to another one"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make {where.parent} writable or set paths.data_dir to a writable folder"
    else:
        fix = f"check {where.parent}"
    total = int(data.episodes)
    try:
        kept = total - len(missing_seeds(root, data))
    except ValueError:
        return f"{root}: cannot write {where} ({_reason(e)}); {fix}, then rerun to resume the collection"
    return (
        f"{root}: cannot write {where} ({_reason(e)}); {kept} of {total} episodes are on disk; {fix}, "
        f"then rerun to collect the other {total - kept}"
    )


def _reason(e: BaseException) -> str:
    """An OSError's reason in lower case ("no space left on device"), else its message's first line."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _write(path: Path, episodes: list[Episode], attrs, compression: str, ranges) -> dict[str, Any]:
    """One shard (episodes in seed order, written atomically) and its manifest entry."""
    write_shard(path, sorted(episodes, key=lambda e: e.seed), attrs, compression)
    return _shard_entry(path, ranges)


def _write_in_child(send, path: Path, episodes: list[Episode], attrs, compression: str, ranges) -> None:
    """Forked writer: sends back the shard's manifest entry, or an OSError naming what stopped it.

    HDF5 reports a full disk as a RuntimeError whose text carries the errno, prints it again for every
    handle it frees, and can crash while freeing them: this process reports and exits before that."""
    import ctypes
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the collector's: the shard is finished
    with suppress(OSError):  # end with the collector: a SIGKILLed collection leaves no late writer
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    sys.unraisablehook = sys.excepthook = lambda *_: None
    try:
        send.send(_write(path, episodes, attrs, compression, ranges))
    except (OSError, RuntimeError) as e:
        tmp = path.with_name(path.name + ".tmp")
        with suppress(OSError):
            tmp.unlink()
        code = e.errno if isinstance(e, OSError) and e.errno else None
        if code is None and (found := re.search(r"errno = (\d+)", str(e))):
            code = int(found.group(1))
        where = getattr(e, "filename", None) or str(tmp)
        send.send(OSError(code or errno.EIO, os.strerror(code) if code else _reason(e), where))
        os._exit(1)


class _ShardWriter:
    """Writes each shard in a forked process (its episodes are inherited, not copied through a pipe; an
    HDF5 failure such as a full disk stays in that process) and waits for it, then updates the manifest
    atomically. The environments do not step meanwhile: no episode finishes while a shard is unwritten."""

    def __init__(self, root: Path, manifest: dict[str, Any], attrs, compression: str, ranges):
        self.root, self.manifest, self.attrs = root, manifest, attrs
        self.compression, self.ranges = compression, ranges
        # after the highest name listed: a shard missing from the middle never has its name reused
        self.next = 1 + max((_shard_index(s["file"]) for s in manifest["shards"]), default=-1)

    def write(self, episodes: list[Episode], name: str | None = None, record: bool = True) -> dict | None:
        """Write `episodes` as the next shard (or as file `name`); returns its manifest entry once it is on
        disk and, unless `record` is false (the caller updates the manifest itself), in the manifest."""
        import multiprocessing as mp

        if not episodes:
            return None
        if name is None:
            name = shard_name(self.next)
            self.next += 1  # taken even if this write is interrupted: the child may still finish it
        path = self.root / name
        ctx = mp.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(
            target=_write_in_child, args=(send, path, episodes, self.attrs, self.compression, self.ranges)
        )
        child.start()
        send.close()
        try:
            result = receive.recv()
        except EOFError:
            result = None
        except KeyboardInterrupt:
            child.join()  # it ignores SIGINT: the shard is finished and recorded, then we stop
            if receive.poll() and record:
                self._record(receive.recv())
            raise
        child.join()
        if result is None:
            raise CollectionError(
                f"{self.root}: the process writing {path.name} died (exit code {child.exitcode}); "
                f"rerun to resume the collection"
            )
        if isinstance(result, OSError):
            raise result
        if record:
            self._record(result)
        return result

    def _record(self, result: dict[str, Any] | OSError) -> None:
        if isinstance(result, OSError):
            raise result
        self.manifest["shards"].append(result)
        write_json_atomic(self.root / MANIFEST, self.manifest)


def _shard_index(name: str) -> int:
    found = re.fullmatch(r"shard-(\d+)\.h5", name)
    return int(found.group(1)) if found else -1


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


def _first_line(e: BaseException) -> str:
    """The message of an error, one line: a resolver's own error (an unknown game in `data.name`) rather
    than OmegaConf's wrapper of it, which adds the key's path on further lines."""
    from omegaconf.errors import OmegaConfBaseException

    while isinstance(e, OmegaConfBaseException) and isinstance(e.__context__, Exception):
        e = e.__context__
    return _reason(e) if not isinstance(e, OSError) else str(e)


def _main() -> None:
    import hydra

    import common.config  # noqa: F401 - registers the config resolvers

    @hydra.main(config_path="../../conf", config_name="collect", version_base="1.3")
    def run(cfg: DictConfig) -> None:
        try:
            root = collect(cfg.data, cfg.paths.data_dir, progress=cfg.data.get("progress", True))
            manifest = read_manifest(root / MANIFEST)
        except (ValueError, FileNotFoundError) as e:  # CollectionError included: one line, as train.py
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {_first_line(e)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print(
                "interrupted: every finished episode is kept; rerun the same command to go on",
                file=sys.stderr,
            )
            sys.exit(130)
        n_ep = sum(s["episodes"] for s in manifest["shards"])
        n_fr = sum(s["frames"] for s in manifest["shards"])
        print(f"{root}: {n_ep} episodes, {n_fr} frames in {len(manifest['shards'])} shard(s)")

    run()


if __name__ == "__main__":
    _main()
