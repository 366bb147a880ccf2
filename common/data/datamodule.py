"""VideoDataModule: clips of `clip_length` frames sampled from shards, split by seed.

A clip never crosses an episode boundary. Batches are dicts of
    frames    uint8   (B, T, H, W, C)   models normalise themselves
    actions   long    (B, T)            action taken at frame t (leads to frame t+1)
    rewards   float32 (B, T)
    terminals bool    (B, T)            transition t ended the episode
    seeds     long    (B,)              level / world seed of the clip's episode
Train clips are drawn uniformly over every valid start position of every train episode (or, with
`event_weight` > 1, clips holding a nonzero reward or a terminal that many times as often:
common/data/sampler.py); val/test
clips are a fixed, evenly spread set of non-overlapping clips (deterministic). Each DataLoader worker
opens its own HDF5 handles (ShardDataset reopens after a fork).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from common.data.collect import collect
from common.data.sampler import ClipSampler, ResumableLoader, event_clip_weights
from common.data.shards import MANIFEST, EpisodeRef, ShardDataset
from common.data.splits import split_ranges
from common.resume import ignore_preemption_signals


class ClipDataset(Dataset):
    """Clips [start, start + length) of episodes. `starts` (N, 2) holds (episode index, start row)."""

    def __init__(self, shards: ShardDataset, episodes: list[EpisodeRef], length: int, starts: np.ndarray):
        self.shards, self.episodes, self.length, self.starts = shards, episodes, length, starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, s = self.starts[i]
        ref = self.episodes[e]
        clip = self.shards.read(ref, s, s + self.length)
        return {
            "frames": torch.from_numpy(clip["frames"]),
            "actions": torch.from_numpy(clip["actions"].astype(np.int64)),
            "rewards": torch.from_numpy(clip["rewards"]),
            "terminals": torch.from_numpy(clip["terminals"]),
            "seeds": torch.tensor(ref.seed, dtype=torch.long),
        }


class TrainClips(ClipDataset):
    """Every valid start of every episode, indexed without materialising them (cumulative counts)."""

    def __init__(self, shards: ShardDataset, episodes: list[EpisodeRef], length: int):
        counts = np.array([ep.length - length + 1 for ep in episodes], dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(counts)])
        super().__init__(shards, episodes, length, np.zeros((0, 2), dtype=np.int64))

    def __len__(self) -> int:
        return int(self.cum[-1])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e = int(np.searchsorted(self.cum, i, side="right") - 1)
        self.starts = np.array([[e, i - self.cum[e]]])
        return super().__getitem__(0)


def eval_starts(episodes: list[EpisodeRef], length: int, n: int) -> np.ndarray:
    """(n, 2) (episode, start) of n non-overlapping clips spread evenly over all episodes' clips."""
    all_starts = [(e, s) for e, ep in enumerate(episodes) for s in range(0, ep.length - length + 1, length)]
    if not all_starts:
        return np.zeros((0, 2), dtype=np.int64)
    pick = np.unique(np.linspace(0, len(all_starts) - 1, min(n, len(all_starts))).round().astype(int))
    return np.array([all_starts[i] for i in pick], dtype=np.int64)


class VideoDataModule(L.LightningDataModule):
    """Shards under `root/name`, collected on first use (`prepare_data`) unless `collect` is false.

    Takes the whole `data` config as keyword arguments (see conf/data/procgen.yaml), saved as
    hyperparameters so every checkpoint records which dataset its model saw. `verify` (default True)
    checks every shard's sha256 in `setup()`, once per process (`ShardDataset`).
    """

    def __init__(
        self,
        source: str,
        game: str | None,
        name: str,
        root: str,
        env: dict | None = None,
        num_actions: int = 0,
        frame_size: int = 64,
        collect: bool = True,
        episodes: int = 100,
        max_steps: int = 1000,
        seed_start: int = 0,
        policy: str = "random",
        action_repeat: int = 1,
        sticky: dict | None = None,
        shard_frames: int = 20000,
        num_envs: int = 1,
        compression: str = "zstd",
        splits: dict | None = None,
        clip_length: int = 16,
        eval_clip_length: int | None = None,
        eval_clips: int = 64,
        batch_size: int = 32,
        event_weight: float = 1.0,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        verify: bool = True,
        progress: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.prepare_data_per_node = False  # one collection (global rank 0) into a shared data_dir
        self.path = Path(root) / name
        self.splits = split_ranges(splits or {"train": 1.0}, seed_start, episodes)
        self.eval_clip_length = eval_clip_length or clip_length
        self.eval_batch_size = eval_batch_size or batch_size
        self.shards: ShardDataset | None = None
        self.datasets: dict[str, ClipDataset] = {}

    def prepare_data(self) -> None:
        """Collect the dataset when it is missing or incomplete (runs on one process only).

        `collect` holds the dataset's collection lock while it writes, so parallel sweep jobs (or a
        `python -m common.data.collect` run) sharing one folder collect it once: the others wait, then
        find it complete. A complete folder is read with no lock, so a read-only one trains.
        Raises CollectionError (a ValueError, one line) for a damaged manifest or a full or read-only disk.
        """
        manifest = self.path / MANIFEST
        if not self.hparams.collect:
            if not manifest.is_file():
                raise FileNotFoundError(f"dataset {self.path} not found and data.collect=false")
            return
        cfg = OmegaConf.create({k: v for k, v in self.hparams.items() if k not in ("root", "progress")})
        collect(cfg, self.hparams.root, progress=self.hparams.progress)

    def _wait_for_manifest(self, timeout: float = 3600.0) -> None:
        """Ranks other than the collecting one wait until the manifest exists (DDP)."""
        t0 = time.time()
        while not (self.path / MANIFEST).is_file():
            if self.hparams.collect is False or time.time() - t0 > timeout:
                raise FileNotFoundError(f"dataset {self.path} not found (no {MANIFEST})")
            time.sleep(2.0)

    def setup(self, stage: str | None = None) -> None:
        if self.shards is not None:
            return
        self._wait_for_manifest()
        self.shards = ShardDataset(self.path, verify=self.hparams.verify)
        if self.shards.num_actions != self.hparams.num_actions:
            raise ValueError(
                f"{self.path}: dataset has {self.shards.num_actions} actions, data.num_actions is "
                f"{self.hparams.num_actions}"
            )
        for split, (lo, hi) in self.splits.items():
            episodes = self.shards.episodes((lo, hi))
            length = self.hparams.clip_length if split == "train" else self.eval_clip_length
            usable = [ep for ep in episodes if ep.length >= length]
            if episodes and not usable:
                longest = max(ep.length for ep in episodes)
                raise ValueError(
                    f"{self.path}: clip length {length} is longer than every {split} episode "
                    f"(longest {longest} frames); lower data.clip_length or raise data.max_steps"
                )
            if split == "train":
                self.datasets[split] = TrainClips(self.shards, usable, length)
            else:
                self.datasets[split] = ClipDataset(
                    self.shards, usable, length, eval_starts(usable, length, self.hparams.eval_clips)
                )

    def _dataset(self, split: str) -> ClipDataset:
        self.setup()
        if split not in self.datasets or len(self.datasets[split]) == 0:
            lo, hi = self.splits.get(split, (0, 0))
            raise ValueError(f"{self.path}: no {split} clips (data.splits.{split} = seeds [{lo}, {hi}))")
        return self.datasets[split]

    def _eval_loader(self, split: str) -> DataLoader:
        """The fixed val / test clips in order, every clip (the train loader is `train_dataloader`)."""
        workers = self.hparams.num_workers
        return DataLoader(
            self._dataset(split),
            batch_size=self.eval_batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch), split across DDP ranks, resumable mid-epoch (common/data/sampler.py)."""
        dataset = self._dataset("train")
        workers = self.hparams.num_workers
        weights = None
        if self.hparams.event_weight != 1:
            steps = [self.shards.transitions(ep) for ep in dataset.episodes]
            events = [(s["rewards"], s["terminals"]) for s in steps]
            weights = event_clip_weights(events, dataset.length, float(self.hparams.event_weight))
        return ResumableLoader(
            dataset,
            ClipSampler(dataset, weights=weights),
            batch_size=self.hparams.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    ignore_preemption_signals()  # the main process saves and stops; workers must not die first
    os.environ.setdefault("OMP_NUM_THREADS", "1")
