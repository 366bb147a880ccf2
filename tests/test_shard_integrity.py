"""A dataset is what it claims: duplicate seeds, overwritten bytes and old-format datasets are caught.

Overwritten bytes inside a frame chunk decode silently to other pixels (Zstandard stores incompressible
data raw and keeps no checksum by default): the sha256 check catches them by default, in training and
in play; with `verify=false` the per-chunk Fletcher-32 checksums of the HDF5 file make the read fail,
in one line naming the shard.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

import common.data.shards as shards
from common.data.datamodule import VideoDataModule
from common.data.shards import (
    MANIFEST,
    Episode,
    ShardDataset,
    sha256,
    shard_name,
    write_json_atomic,
    write_shard,
)
from common.play.context import DatasetContext

ATTRS = {"env_id": "test", "num_actions": 4, "action_meanings": ["a"] * 4, "fps": 15, "policy": "random"}


def _episode(seed: int, n: int = 16) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        seed,
        rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),  # noise: stored raw by Zstandard
        rng.integers(0, 4, n).astype(np.int32),
        np.zeros(n, np.float32),
        np.arange(n) == n - 1,
    )


def _manifest(root: Path, version: int) -> None:
    entries = []
    for path in sorted(root.glob("shard-*.h5")):
        with h5py.File(path, "r") as f:
            starts, seeds = f["episode_starts"][:].tolist(), f["episode_seeds"][:].tolist()
        entries.append(
            {"file": path.name, "episodes": len(seeds), "frames": starts[-1], "bytes": path.stat().st_size,
             "sha256": sha256(path), "episode_starts": starts, "episode_seeds": seeds}
        )  # fmt: skip
    write_json_atomic(root / MANIFEST, {"format_version": version, "num_actions": 4, "shards": entries})


def _dataset(root: Path, seeds_per_shard: list[list[int]], version: int | None = None) -> Path:
    """A dataset folder; `version` rewrites the format version of shards and manifest (an old dataset)."""
    root.mkdir(parents=True)
    for i, seeds in enumerate(seeds_per_shard):
        path = root / shard_name(i)
        write_shard(path, [_episode(s) for s in seeds], ATTRS)
        if version is not None:
            with h5py.File(path, "r+") as f:
                f.attrs["format_version"] = version
    _manifest(root, version or shards.FORMAT_VERSION)
    return root


def _overwrite_frames(root: Path, shard: int = 0) -> None:
    """Overwrite 64 bytes in the middle of the shard's first frame chunk; the file keeps its size."""
    path = root / shard_name(shard)
    with h5py.File(path, "r") as f:
        info = f["frames"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xa5" * 64)


def _datamodule(root: Path, verify: bool | None = None) -> VideoDataModule:
    kw = {} if verify is None else {"verify": verify}
    return VideoDataModule(
        source="procgen", game="coinrun", name=root.name, root=str(root.parent), num_actions=4,
        collect=False, episodes=2, seed_start=0, splits={"train": 1.0}, clip_length=8, batch_size=2,
        progress=False, **kw,
    )  # fmt: skip


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


# --- item 6: each seed once -------------------------------------------------------------------------


def test_duplicate_episode_seed_is_rejected_naming_folder_seed_and_shards(tmp_path):
    root = _dataset(tmp_path / "ds", [[0, 1], [1, 2]])  # seed 1 collected twice (two collections)
    with pytest.raises(ValueError) as e:
        ShardDataset(root)
    message = _one_line(e)
    assert str(root) in message and "seed 1 " in message
    assert "shard-000000.h5" in message and "shard-000001.h5" in message


def test_duplicate_seed_inside_one_shard_is_rejected(tmp_path):
    root = _dataset(tmp_path / "ds", [[3, 3]])
    with pytest.raises(ValueError, match=r"seed 3 .*shard-000000.h5"):
        ShardDataset(root, verify=False)


# --- item 10: overwritten bytes ---------------------------------------------------------------------


def test_overwritten_bytes_are_caught_by_default(tmp_path):
    root = _dataset(tmp_path / "ds", [[0, 1]])
    _overwrite_frames(root)
    with pytest.raises(ValueError, match=r"shard-000000.h5: sha256 does not match"):
        ShardDataset(root)
    with pytest.raises(ValueError, match=r"shard-000000.h5: sha256 does not match"):
        _datamodule(root).setup()
    with pytest.raises(ValueError, match=r"shard-000000.h5: sha256 does not match") as e:
        DatasetContext(root, context_length=4)
    assert "delete" in _one_line(e), "the message says how to get a good copy"


def test_overwritten_bytes_fail_to_decode_with_verify_false(tmp_path):
    root = _dataset(tmp_path / "ds", [[0, 1]])
    _overwrite_frames(root)
    ds = ShardDataset(root, verify=False)
    with pytest.raises(ValueError) as e:
        ds.read(ds.episodes()[0])
    message = _one_line(e)
    assert (
        message.startswith(f"{root / 'shard-000000.h5'}: ") and "corrupt" in message and "delete" in message
    )
    dm = _datamodule(root, verify=False)
    dm.setup()
    with pytest.raises(ValueError, match=r"shard-000000.h5: .*corrupt"):
        next(iter(dm.train_dataloader()))


def test_play_context_reads_fail_in_one_line_on_a_shard_corrupted_after_it_was_verified(tmp_path):
    root = _dataset(tmp_path / "ds", [[0, 1]])
    context = DatasetContext(root, context_length=4)
    _overwrite_frames(root)
    with pytest.raises(ValueError, match=r"shard-000000.h5: .*corrupt") as e:
        context(0)
    _one_line(e)


def test_old_format_decode_error_is_one_line(tmp_path):
    """A format-1 shard has no chunk checksums: a broken Zstandard frame header still fails to decode."""
    root = _dataset(tmp_path / "ds", [[0]], version=1)
    path = root / shard_name(0)
    with h5py.File(path, "r") as f:
        offset = f["frames"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * 16)
    ds = ShardDataset(root, verify=False)
    with pytest.raises(ValueError, match=r"shard-000000.h5: .*corrupt") as e:
        ds.read(ds.episodes()[0])
    _one_line(e)


def test_only_the_shards_read_are_hashed_and_each_once(tmp_path, monkeypatch):
    root = _dataset(tmp_path / "ds", [[0, 1], [2, 3]])
    hashed = []
    real = shards.sha256
    monkeypatch.setattr(shards, "sha256", lambda p: hashed.append(Path(p).name) or real(p))
    context = DatasetContext(root, context_length=4, seeds=(2, 4))  # play: the test split's shard only
    context(0)
    assert hashed == ["shard-000001.h5"]
    _overwrite_frames(root, shard=0)
    ds = ShardDataset(root, seeds=(2, 4))
    assert hashed == ["shard-000001.h5"], "verified once per process"
    with pytest.raises(ValueError, match=r"shard-000000.h5: sha256 does not match"):
        ds.read(ds.episodes((0, 1))[0])  # a shard outside `seeds` is verified before its first read


# --- item 8: datasets written before time-limit ends were truncations --------------------------------


def test_old_format_dataset_warns_once_and_reads(tmp_path, caplog):
    root = _dataset(tmp_path / "old", [[0, 1]], version=1)
    with caplog.at_level(logging.WARNING):
        ds = ShardDataset(root)
        ShardDataset(root)
        _datamodule(root).setup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(root) in warnings[0] and "terminal" in warnings[0] and "time limit" in warnings[0]
    assert "\n" not in warnings[0]
    np.testing.assert_array_equal(ds.read(ds.episodes()[1])["frames"], _episode(1).frames)


def test_current_format_does_not_warn(tmp_path, caplog):
    root = _dataset(tmp_path / "new", [[0]])
    with caplog.at_level(logging.WARNING):
        ShardDataset(root)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert json.loads((root / MANIFEST).read_text())["format_version"] == shards.FORMAT_VERSION >= 2
