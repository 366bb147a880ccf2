"""Training clip order: shuffled by (seed, epoch), split across DDP ranks, resumable in the middle of an epoch.

`ClipSampler` draws one permutation of all clip indices per epoch from a generator seeded with
`seed + epoch` (the same on every rank), trims it to a multiple of the world size, and gives rank r the
indices r, r + W, r + 2W, ... . So the ranks see disjoint clips, and the union of the ranks' i-th
batches (batch size B each) is exactly batch i of a one-process run with batch size W * B.

`ResumableLoader` counts the batches it has handed out in the current epoch and exposes that as
`state_dict()`; Lightning stores it in every checkpoint (the fit loop saves the state of any train loader
with `state_dict` / `load_state_dict`) and restores it before iterating again, so a resumed run skips
the clips already trained on and continues with the same clips an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _world() -> tuple[int, int]:
    """(world size, global rank) of the initialised process group, else (1, 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ClipSampler(DistributedSampler):
    """Every rank's share of a per-epoch permutation of `len(dataset)` clips.

    A DistributedSampler subclass, so Lightning neither wraps nor replaces it and calls `set_epoch`
    at each epoch start. `seed` defaults to PL_GLOBAL_SEED (set by `seed_everything(cfg.seed)`);
    world size and rank default to the process group's. The tail that does not divide evenly among the
    ranks is dropped (every rank runs the same number of batches).
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        world, global_rank = _world()
        num_replicas = world if num_replicas is None else num_replicas
        rank = global_rank if rank is None else rank
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0  # indices of this rank to skip at the start of the next iteration (resume)

    def indices(self, epoch: int) -> list[int]:
        """This rank's clip indices for `epoch`, in order."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.dataset), generator=g)[: self.total_size]
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
