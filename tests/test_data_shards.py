"""The HDF5 shard format: round trip, atomic writes, and one-line errors for bad shards/manifests."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from common.data.shards import (
    FORMAT_VERSION,
    MANIFEST,
    Episode,
    ShardDataset,
    check_shard,
    sha256,
    write_json_atomic,
    write_shard,
)


def _episode(seed: int, n: int) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        seed,
        rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 4, n).astype(np.int32),
        rng.normal(size=n).astype(np.float32),
        np.arange(n) == n - 1,
    )


def _dataset(root, episodes, version=FORMAT_VERSION):
    root.mkdir(parents=True, exist_ok=True)
    path = root / "shard-000000.h5"
    write_shard(
        path,
        episodes,
        {"env_id": "test", "num_actions": 4, "action_meanings": ["a"] * 4, "fps": 15, "policy": "random"},
    )
    starts = np.cumsum([0] + [len(e) for e in episodes]).tolist()
    manifest = {
        "format_version": version,
        "num_actions": 4,
        "shards": [
            {
                "file": path.name,
                "episodes": len(episodes),
                "frames": starts[-1],
                "bytes": path.stat().st_size,
                "sha256": sha256(path),
                "episode_starts": starts,
                "episode_seeds": [e.seed for e in episodes],
            }
        ],
    }
    write_json_atomic(root / MANIFEST, manifest)
    return path


def test_round_trip_and_layout(tmp_path):
    eps = [_episode(3, 5), _episode(7, 9)]
    path = _dataset(tmp_path / "ds", eps)
    assert not list((tmp_path / "ds").glob("*.tmp")), "temporary files must be renamed"
    with h5py.File(path) as f:
        assert f["frames"].dtype == np.uint8 and f["frames"].shape == (14, 8, 8, 3)
        assert f["frames"].chunks[0] <= 16, "chunked along N"
        assert f["frames"].id.get_create_plist().get_nfilters() > 0, "compressed"
        assert f["actions"].dtype == np.int32 and f["terminals"].dtype == bool
        assert f["episode_starts"][:].tolist() == [0, 5, 14]
        assert f["episode_seeds"][:].tolist() == [3, 7]
        assert (
            f.attrs["format_version"] == FORMAT_VERSION
            and json.loads(f.attrs["action_meanings"]) == ["a"] * 4
        )
    ds = ShardDataset(tmp_path / "ds")
    refs = ds.episodes()
    assert [(r.seed, r.length) for r in refs] == [(3, 5), (7, 9)]
    clip = ds.read(refs[1], 2, 6)
    np.testing.assert_array_equal(clip["frames"], eps[1].frames[2:6])
    np.testing.assert_array_equal(clip["actions"], eps[1].actions[2:6])
    assert [r.seed for r in ds.episodes((5, 10))] == [7]


def test_truncated_shard_is_named(tmp_path):
    path = _dataset(tmp_path / "ds", [_episode(0, 20)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="shard-000000.h5: not a readable HDF5 shard"):
        check_shard(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "shard-000000.h5"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5 shard"):
        check_shard(path)


def test_other_format_version(tmp_path):
    path = _dataset(tmp_path / "ds", [_episode(0, 4)])
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 7
    with pytest.raises(ValueError, match="format_version 7, this worldplay reads 1, 2"):
        check_shard(path)


def test_sha256_mismatch_names_the_shard(tmp_path):
    path = _dataset(tmp_path / "ds", [_episode(0, 4)])
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    (tmp_path / "ds" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"shard-000000.h5: sha256 does not match"):
        ShardDataset(tmp_path / "ds")
    assert path.is_file(), "nothing collected is deleted by a failed check"


def test_missing_shard_and_folder(tmp_path):
    path = _dataset(tmp_path / "ds", [_episode(0, 4)])
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing shard"):
        ShardDataset(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        ShardDataset(tmp_path / "nope")


def test_manifest_of_other_version(tmp_path):
    _dataset(tmp_path / "ds", [_episode(0, 4)], version=7)
    with pytest.raises(ValueError, match="format_version 7"):
        ShardDataset(tmp_path / "ds")


def test_checksums_hashed_once_per_process_until_a_shard_changes(tmp_path, monkeypatch):
    import common.data.shards as shards

    path = _dataset(tmp_path / "ds", [_episode(0, 4)])
    calls = []
    real = shards.sha256
    monkeypatch.setattr(shards, "sha256", lambda p: calls.append(p) or real(p))
    ShardDataset(tmp_path / "ds")
    ShardDataset(tmp_path / "ds")  # a second stage / split over the same folder
    assert len(calls) == 1
    with h5py.File(path, "r+") as f:  # same size, new content and mtime: hashed again, and caught
        f["frames"][0] = 255 - f["frames"][0]
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    manifest["shards"][0]["bytes"] = path.stat().st_size
    (tmp_path / "ds" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="sha256 does not match"):
        ShardDataset(tmp_path / "ds")
    assert len(calls) == 2
