"""VideoDataModule: clip shapes, episode boundaries, seed splits, determinism, workers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose_train, tiny_data


def _dm(data_dir, *over, clip_length=8):
    cfg = compose_train(tiny_data("procgen", data_dir, clip_length=clip_length) + list(over))
    return instantiate(cfg.data, _convert_="all")


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    d = _dm(tmp_path_factory.mktemp("dm"), "data.batch_size=4")
    d.prepare_data()
    d.setup()
    return d


def test_batch_layout(dm):
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (4, 8, 64, 64, 3) and batch["frames"].dtype == torch.uint8
    assert batch["actions"].shape == (4, 8) and batch["actions"].dtype == torch.long
    assert batch["rewards"].dtype == torch.float32 and batch["terminals"].dtype == torch.bool
    assert batch["seeds"].shape == (4,)


def test_clips_stay_inside_one_episode(dm):
    ds = dm.datasets["train"]
    cum = ds.cum
    for i in [0, int(cum[1]) - 1, int(cum[1]), len(ds) - 1]:  # first/last clip of episodes
        item = ds[i]
        e = int(np.searchsorted(cum, i, side="right") - 1)
        ref, start = ds.episodes[e], i - int(cum[e])
        assert start + 8 <= ref.length
        full = dm.shards.read(ref)
        np.testing.assert_array_equal(item["frames"].numpy(), full["frames"][start : start + 8])
        assert int(item["seeds"]) == ref.seed


def test_splits_are_disjoint_seed_ranges(dm):
    seeds = {s: {ep.seed for ep in dm.datasets[s].episodes} for s in ("train", "val", "test")}
    assert seeds["train"] and seeds["val"] and seeds["test"]
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"])
    assert max(seeds["train"]) < min(seeds["val"]) <= max(seeds["val"]) < min(seeds["test"])


def test_eval_clips_are_deterministic(dm, tmp_path):
    a = torch.cat([b["frames"] for b in dm.val_dataloader()])
    b = torch.cat([b["frames"] for b in dm.val_dataloader()])
    assert torch.equal(a, b) and len(a) == len(dm.datasets["val"]) <= 4


def test_workers_read_the_same_clips(dm):
    ds = dm.datasets["val"]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    with_workers = torch.cat([b["frames"] for b in loader])
    without = torch.cat([b["frames"] for b in dm.val_dataloader()])
    assert torch.equal(with_workers, without)


def test_clip_longer_than_every_episode(dm, data_dir):
    d = _dm(dm.hparams.root, f"data.name={dm.hparams.name}", clip_length=500)
    with pytest.raises(ValueError, match=r"clip length 500 is longer than every train episode \(longest \d+"):
        d.setup()


def test_missing_dataset_without_collection(tmp_path):
    d = _dm(tmp_path, "data.collect=false")
    with pytest.raises(FileNotFoundError, match="procgen_tiny_test not found and data.collect=false"):
        d.prepare_data()


def test_num_actions_mismatch(dm):
    d = _dm(dm.hparams.root, f"data.name={dm.hparams.name}", "data.num_actions=4")
    with pytest.raises(ValueError, match="dataset has 15 actions, data.num_actions is 4"):
        d.setup()
