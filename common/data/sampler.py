"""Training clip order: shuffled by (seed, epoch), split across DDP ranks, resumable in the middle of an epoch.

`ClipSampler` draws one permutation of all clip indices per epoch from a generator seeded with
`seed + epoch` (the same on every rank), trims it to a multiple of the world size, and gives rank r the
indices r, r + W, r + 2W, ... . So the ranks see disjoint clips, and the union of the ranks' i-th
batches (batch size B each) is exactly batch i of a one-process run with batch size W * B.

`ResumableLoader` counts the batches it has handed out in the current epoch and exposes that as
`state_dict()`; Lightning stores it in every checkpoint (the fit loop saves the state of any train loader
with `state_dict` / `load_state_dict`) and restores it before iterating again, so a resumed run skips
the clips already trained on and continues with the same clips an uninterrupted run would have seen.

Given per-clip `weights` (`event_clip_weights`: data.event_weight), an epoch is instead len(dataset) clips
drawn with replacement in proportion to them, from the same (seed + epoch) generator, split and resumed
the same way. This favours the rare transitions a reward / end model must learn: random Atari play pays a
reward on ~1% of transitions, and since a clip never crosses an episode's end, a terminal transition is
in one clip start of its episode where an inner transition is in `clip_length` of them. DIAMOND's
reward/end sampler lets segments run past an episode's end (padded, `can_sample_beyond_end` in its
src/data/batch_sampler.py), so there a terminal is drawn as often as any transition; its `sample_weights`
weight episodes by recency (the newest quarter 70%), not by event, and its losses are unweighted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _world() -> tuple[int, int]:
    """(world size, global rank) of the initialised process group, else (1, 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def event_clip_weights(
    episodes: Sequence[tuple[np.ndarray, np.ndarray]], length: int, weight: float
) -> torch.Tensor:
    """Sampling weight of every clip of `length` frames, in TrainClips' order (each episode's starts in turn).

    episodes: per episode (rewards (T,), terminals (T,)). A clip [s, s + length) holds an event when a
    transition whose next frame is in the clip (rows s .. s + length - 2) pays a nonzero reward, or a
    row ends the episode; it weighs `weight`, every other clip 1. Returns float64 (N,), N = sum(T - length + 1).
    Raises ValueError for a weight below 1 (that would favour the clips without events).
    """
    if not weight >= 1:
        raise ValueError(f"data.event_weight={weight}: must be >= 1 (1 draws clips uniformly)")
    out = []
    for rewards, terminals in episodes:
        n = len(rewards) - length + 1
        if n <= 0:
            continue
        rew = np.concatenate([[0], np.cumsum(np.asarray(rewards) != 0)])
        end = np.concatenate([[0], np.cumsum(np.asarray(terminals, dtype=bool))])
        s = np.arange(n)
        has = (rew[s + length - 1] - rew[s] > 0) | (end[s + length] - end[s] > 0)
        out.append(np.where(has, float(weight), 1.0))
    return torch.from_numpy(np.concatenate(out) if out else np.zeros(0))


class ClipSampler(DistributedSampler):
    """Every rank's share of a per-epoch permutation of `len(dataset)` clips (or weighted draw, `weights`).

    A DistributedSampler subclass, so Lightning neither wraps nor replaces it and calls `set_epoch`
    at each epoch start. `seed` defaults to PL_GLOBAL_SEED (set by `seed_everything(cfg.seed)`);
    world size and rank default to the process group's. The tail that does not divide evenly among the
    ranks is dropped (every rank runs the same number of batches). `weights` (len(dataset),): draw each
    epoch's len(dataset) clips with replacement in proportion to them (`event_clip_weights`).
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        weights: torch.Tensor | None = None,
    ):
        world, global_rank = _world()
        num_replicas = world if num_replicas is None else num_replicas
        rank = global_rank if rank is None else rank
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0  # indices of this rank to skip at the start of the next iteration (resume)
        if weights is not None and len(weights) != len(dataset):
            raise ValueError(f"ClipSampler: {len(dataset)} clips but {len(weights)} weights")
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def indices(self, epoch: int) -> list[int]:
        """This rank's clip indices for `epoch`, in order."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        if self.weights is None:
            order = torch.randperm(len(self.dataset), generator=g)
        else:
            order = torch.multinomial(self.weights, len(self.dataset), replacement=True, generator=g)
        order = order[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return iter(self.indices(self.epoch)[skip:])

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """A DataLoader over a ClipSampler whose position within the epoch is saved in checkpoints.

    `state_dict()` -> {"epoch", "batches"}: batches handed out in that epoch. `load_state_dict` makes
    the next iteration of the same epoch skip those batches (an iteration of another epoch starts at 0).
    """

    def __init__(self, dataset: Dataset, sampler: ClipSampler, batch_size: int, **kwargs: Any):
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self._epoch, self._batches = 0, 0
        self._resume: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        # a generator: the body runs at the first next(), after Lightning's set_epoch for this epoch
        epoch = self.sampler.epoch
        done = self._resume[1] if self._resume and self._resume[0] == epoch else 0
        self._resume = None
        self.sampler.skip = done * self.batch_size
        self._epoch, self._batches = epoch, done
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))
