"""Real steps appended to a dataset that a training loop owns (common/loop.py): DIAMOND's collection.

    record = append_steps(root, data, actor, epoch=3, steps=100)

Each call takes `steps` environment steps (one environment, as DIAMOND's `collection.train.num_envs`)
with `actor` (common/data/policies.py: `RandomActor` or `AgentActor`). The episode in progress carries
over from call to call, as in DIAMOND's collector: a call ends after exactly `steps` steps, whatever the
episode is doing, and the next call continues it. Episodes start on consecutive seeds from the loop's
first training seed and are truncated at `data.max_steps` frames, as `collect` does.

What a call writes, then one atomic manifest write that makes it all current at once:
- the episodes that ended, as one new shard `shard-NNNNNN.h5`;
- the episode in progress so far, as `open-EEEEEE.h5` (E: the epoch), an ordinary episode of the
  dataset whose last transition is not terminal (a cut): the world model trains on it at once, as
  DIAMOND's dataset holds its incomplete episodes; the manifest drops the previous open file (deleted
  after the manifest write), so each seed is held once;
- the manifest's `loop` record: `epoch` (the last epoch collected), `env_steps` (real steps on disk:
  the rows of every episode the loop collected, the open one included), `open` ({"seed", "file"} of
  the episode in progress, "file" null before its first step), `next_seed`, and of this epoch
  `steps`, `returns` (of the episodes that ended) and `reward_counts` (transitions per reward sign).

Resume: a call for an epoch the record holds already returns the record and steps nothing. Files that
no manifest lists (a call killed before its manifest write) are deleted under the collection lock, and
the epoch is collected again from the record's state: no step is on disk twice, and none is counted
that is not on disk. The episode in progress is restored by replaying its recorded actions from its
seed (every env adapter is deterministic from (seed, actions): `env.deterministic`), its last frame
checked against the replay; the actor continues it (`actor.resume`). Every call restores it this way,
so a run killed between epochs continues exactly as one that was not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from common.data.collect import CollectionError, _ShardWriter, dataset_lock, read_manifest
from common.data.envs import make_env
from common.data.shards import MANIFEST, Episode, write_json_atomic
from common.data.splits import split_ranges

# after `steps`: (reward sign counts {-1, 0, 1} of the call's steps, the record's env_steps) -> more steps
MoreSteps = Callable[[dict[int, int], int], int]


def open_name(epoch: int) -> str:
    return f"open-{epoch:06d}.h5"


def train_seeds(data: DictConfig) -> tuple[int, int]:
    """The loop's training seed range [lo, hi): `data.splits.train` (an explicit range, common/loop.py)."""
    return split_ranges(data.splits, data.seed_start, data.episodes)["train"]


def read_record(root: Path) -> dict[str, Any] | None:
    """The manifest's loop record, or None (no manifest, or nothing appended yet)."""
    path = root / MANIFEST
    return read_manifest(path).get("loop") if path.is_file() else None


def append_steps(
    root: Path,
    data: DictConfig,
    actor,
    epoch: int,
    steps: int,
    more: MoreSteps | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Collect epoch `epoch`'s `steps` real steps (then `more(...)` further ones while it returns > 0)
    into the dataset folder `root`, whose manifest must exist (the loop's held-out episodes). Returns the
    loop record (module docstring). Epochs are collected in order: epoch 1, 2, ...; asking for an epoch
    already collected returns the record as it is.

    Raises CollectionError (one line naming the folder and the fix) for a folder without a manifest, an
    epoch out of order, or an episode whose replay no longer gives its recorded frames.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise CollectionError(f"{root}: no {MANIFEST}; the loop collects its held-out episodes first")
    with dataset_lock(root):
        manifest = read_manifest(path)
        lo, _ = train_seeds(data)
        rec = manifest.get("loop") or {"epoch": 0, "env_steps": 0, "open": None, "next_seed": lo}
        if rec["epoch"] >= epoch:
            return rec
        if rec["epoch"] != epoch - 1:
            raise CollectionError(
                f"{root}: the loop record is at epoch {rec['epoch']}, asked to collect epoch {epoch}; "
                f"epochs are collected in order"
            )
        _drop_strays(root, manifest)
        env = make_env(data.source, data.get("game"), **(data.get("env") or {}))
        try:
            return _collect(root, data, manifest, rec, env, actor, epoch, steps, more, progress)
        except OSError as e:
            raise CollectionError(
                f"{root}: cannot write {e.filename or root} ({e.strerror or e}); epochs 1..{rec['epoch']} "
                f"are on disk; free space or make the folder writable, then rerun to go on from epoch {epoch}"
            ) from None
        finally:
            env.close()


def _drop_strays(root: Path, manifest: dict[str, Any]) -> None:
    """Delete shard and open files no manifest entry lists: what a call killed before its manifest write
    left (we hold the lock; the loop's folder is its own)."""
    listed = {s["file"] for s in manifest["shards"]}
    for stray in [*root.glob("shard-*.h5"), *root.glob("open-*.h5"), *root.glob("*.tmp")]:
        if stray.name not in listed:
            stray.unlink()


class _Episode:
    """The episode being played: frames (at which each action was taken), actions, rewards, terminals."""

    def __init__(self, seed: int, first: np.ndarray):
        self.seed, self.frames, self.actions, self.rewards, self.terms = seed, [first], [], [], []

    def done(self) -> Episode:
        n = len(self.actions)
        return Episode(
            self.seed,
            np.stack(self.frames[:n]),
            np.array(self.actions, dtype=np.int32),
            np.array(self.rewards, dtype=np.float32),
            np.array(self.terms, dtype=bool),
        )


def _restore(root: Path, manifest: dict[str, Any], rec: dict[str, Any], env, actor) -> _Episode:
    """The episode in progress at the record's state (its env replayed), or a new one on `next_seed`."""
    import h5py

    held = rec.get("open")
    if held is None or held.get("file") is None:
        seed = held["seed"] if held else rec["next_seed"]
        ep = _Episode(seed, env.reset(seed))
        actor.start(seed)
        return ep
    with h5py.File(root / held["file"], "r") as f:
        frames, actions = f["frames"][:], f["actions"][:]
        rewards, terms = f["rewards"][:], f["terminals"][:]
    ep = _Episode(held["seed"], env.reset(held["seed"]))
    for t, a in enumerate(actions):
        if t == 0 and not np.array_equal(ep.frames[0], frames[0]):
            done = True
        else:
            frame, _, done = env.step(int(a))
        if done or (t + 1 < len(frames) and not np.array_equal(frame, frames[t + 1])):
            raise CollectionError(
                f"{root / held['file']}: replaying episode {held['seed']}'s actions no longer gives its "
                f"frames (step {t + 1}); the environment changed since it was collected: start a new run"
            )
        ep.frames.append(frame)
    ep.frames[: len(frames)] = list(frames)
    ep.actions, ep.rewards, ep.terms = actions.tolist(), rewards.tolist(), terms.tolist()
    actor.resume(held["seed"], frames)
    return ep


def _collect(root, data, manifest, rec, env, actor, epoch, steps, more, progress) -> dict[str, Any]:
    ep = _restore(root, manifest, rec, env, actor)
    max_steps = int(data.max_steps)
    finished: list[Episode] = []
    returns: list[float] = []
    counts = {-1: 0, 0: 0, 1: 0}
    taken, todo = 0, int(steps)
    while todo > 0:
        for _ in range(todo):
            action = actor(ep.frames[-1])
            frame, reward, done = env.step(action)
            ep.actions.append(action)
            ep.rewards.append(reward)
            ep.terms.append(done and not env.truncated)  # a time limit is a truncation, never a terminal
            counts[int(np.sign(reward))] += 1
            taken += 1
            if not done and len(ep.frames) < max_steps:
                ep.frames.append(frame)
                continue
            finished.append(ep.done())
            returns.append(float(sum(ep.rewards)))
            seed = ep.seed + 1
            ep = _Episode(seed, env.reset(seed))
            actor.start(seed)
        if progress:
            progress(taken)
        todo = more(counts, rec["env_steps"] + taken) if more else 0

    attrs = {k: manifest[k] for k in ("env_id", "num_actions", "action_meanings", "fps")}
    attrs.update(policy=actor.name, policy_params=actor.params, env_options=manifest.get("env_options", {}))
    ranges = split_ranges(data.splits, data.seed_start, data.episodes)
    writer = _ShardWriter(root, manifest, attrs, data.compression, ranges)
    entries = [writer.write(finished, record=False)] if finished else []
    if ep.actions:
        entries.append(writer.write([ep.done()], name=open_name(epoch), record=False))
    old = (rec.get("open") or {}).get("file")
    manifest["shards"] = [s for s in manifest["shards"] if s["file"] != old] + entries
    rec = {
        "epoch": epoch,
        "env_steps": rec["env_steps"] + taken,
        "open": {"seed": ep.seed, "file": open_name(epoch) if ep.actions else None},
        "next_seed": ep.seed + 1,
        "steps": taken,
        "returns": returns,
        "reward_counts": {str(k): v for k, v in counts.items()},
    }
    manifest["loop"] = rec
    write_json_atomic(root / MANIFEST, manifest)
    if old and old != rec["open"]["file"]:
        (root / old).unlink(missing_ok=True)
    return rec
