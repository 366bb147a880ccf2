"""Collection under faults: a concurrent collection, kill -9, a full disk, a read-only folder, a damaged
manifest, an unknown game. Each ends in one line naming the folder and the fix, and loses nothing kept."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from common.data import collect as collect_mod
from common.data.collect import collect
from common.data.shards import MANIFEST, check_shard
from tests.conftest import ROOT, compose_train, tiny_data
from tests.test_data_collect import _data_cfg, _seeds

# printed to stderr by `import gym` (procgen imports it) whatever happens next: not ours to judge
GYM_NOTICE = (
    "Gym has been unmaintained",
    "Please upgrade to Gymnasium",
    "Users of this version of Gym",
    "See the migration guide",
)


def _cli(data_dir, *over, timeout: float = 120) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "common.data.collect", f"paths.data_dir={data_dir}", "data.progress=false"]
    return subprocess.run(args + list(over), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(GYM_NOTICE)]


def _shard_seeds(root: Path) -> list[int]:
    """Seeds of every complete shard file in the folder: what a rerun keeps (manifest or adopted)."""
    import h5py

    seeds = []
    for path in sorted(root.glob("shard-*.h5")):
        try:
            check_shard(path)
        except ValueError:
            continue
        with h5py.File(path, "r") as f:
            seeds += f["episode_seeds"][:].tolist()
    return seeds


def _root() -> bool:
    return os.geteuid() == 0


@contextmanager
def _read_only(folder: Path):
    """`folder` read-only: a read-only bind mount as root (permissions do not stop root), else chmod."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"root without mount permission: {bind.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


# 6: two collections into one folder ---------------------------------------------------------------


def test_a_collection_waits_for_the_one_holding_the_lock(tmp_path, capfd):
    """The lock train.py takes (fcntl on `.NAME.lock` beside the folder) makes `collect` wait, and the
    waiting collection leaves the running one's temporary shard alone."""
    data = _data_cfg("procgen", episodes=4, max_steps=10, shard_frames=20)
    root = tmp_path / data.name
    root.mkdir()
    theirs = root / "shard-000000.h5.tmp"  # the other collection is writing its first shard
    theirs.write_bytes(b"in progress")
    done, err = [], ""
    with open(tmp_path / f".{data.name}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: done.append(collect(data, tmp_path, progress=False)))
        worker.start()
        deadline = time.time() + 60
        while "waiting" not in err and time.time() < deadline:
            time.sleep(0.1)
            err += capfd.readouterr().err
        time.sleep(0.5)
        assert worker.is_alive() and not done, "collect must wait while another collection holds the lock"
        assert theirs.read_bytes() == b"in progress" and not (root / MANIFEST).exists()
    worker.join(timeout=60)
    assert done == [root] and _seeds(root) == [0, 1, 2, 3]
    assert not list(root.glob("*.tmp")), "the stray of a collection that is gone is removed"
    waiting = [line for line in err.splitlines() if "waiting" in line]
    assert waiting == [
        f"{root}: another collection holds {tmp_path / f'.{data.name}.lock'}; waiting for it to finish"
    ]


def test_two_concurrent_collections_make_one_dataset(tmp_path):
    over = ["data.episodes=40", "data.max_steps=20", "data.shard_frames=200", "data.num_envs=2"]
    args = [sys.executable, "-m", "common.data.collect", f"paths.data_dir={tmp_path}", "data.progress=false"]
    procs = [
        subprocess.Popen(args + over, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    root = tmp_path / "procgen_coinrun"
    manifest = json.loads((root / MANIFEST).read_text())
    seeds = [s for shard in manifest["shards"] for s in shard["episode_seeds"]]
    assert sorted(seeds) == list(range(40)), "each seed exactly once"
    assert sorted(_shard_seeds(root)) == list(range(40)) and not list(root.glob("*.tmp"))
    assert all("Traceback" not in o[1] for o in outs)


# 7: kill -9 loses at most the shard being written ------------------------------------------------

KILLED_COLLECTION = r"""
import json, os, sys, time
from omegaconf import OmegaConf
from common.data import collect as c

log = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
step = c._Rollout.step

def logged(self):  # record each finished episode the moment it exists
    ep = step(self)
    if ep is not None:
        os.write(log, b"%d\n" % ep.seed)
    return ep

write = c._write

def slow_write(*args):  # a slow disk: writing a shard takes a while
    time.sleep(0.15)
    return write(*args)

c._Rollout.step, c._write = logged, slow_write
c.collect(OmegaConf.create(json.loads(sys.argv[1])), sys.argv[3], progress=False)
"""


def test_kill9_loses_at_most_the_shard_being_written(tmp_path):
    """kill -9 at random moments of a real collection (2 envs in lockstep, 4-episode shards, a slow
    writer): the finished episodes a rerun must collect again never exceed one shard's."""
    per_shard, max_steps = 4, 10
    data = _data_cfg("procgen", episodes=120, max_steps=max_steps, shard_frames=per_shard * max_steps)
    cfg = json.dumps(OmegaConf.to_container(data, resolve=True))
    root, rng, lost = tmp_path / data.name, np.random.default_rng(0), []
    for trial in range(4):
        log = tmp_path / f"finished-{trial}.txt"
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_COLLECTION, cfg, str(log), str(tmp_path)], cwd=ROOT
        )
        deadline = time.time() + 60
        while time.time() < deadline and not (log.exists() and log.read_text()):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)  # the writer process dies with the collector (PR_SET_DEATHSIG)
        finished = {int(s) for s in log.read_text().split()}
        kept = _shard_seeds(root)
        assert len(kept) == len(set(kept))
        lost.append(len(finished - set(kept)))
        assert 0 < len(finished) and len(kept) < 120, "the kill should land mid-collection"
    assert max(lost) <= per_shard, f"finished episodes lost per kill: {lost} (shards of {per_shard})"
    data.shard_frames = 400  # not part of a dataset's identity: finish in a few shards
    root = collect(data, tmp_path, progress=False)
    assert _seeds(root) == list(range(120)) and not list(root.glob("*.tmp"))


def test_a_shard_closes_at_its_frame_budget(tmp_path):
    """A shard takes finished episodes until it holds `shard_frames` frames, whatever `num_envs`: the
    episodes a kill can lose are bounded by one shard (< shard_frames + max_steps frames)."""
    data = _data_cfg("procgen", episodes=24, max_steps=10, shard_frames=40, num_envs=3)
    root = collect(data, tmp_path, progress=False)
    manifest = json.loads((root / MANIFEST).read_text())
    assert [(s["episodes"], s["frames"]) for s in manifest["shards"]] == [(4, 40)] * 6


# 11: disk full ------------------------------------------------------------------------------------


def test_disk_full_is_one_line_and_a_rerun_completes(tmp_path, monkeypatch):
    data = _data_cfg("procgen", episodes=12, max_steps=10, shard_frames=20, num_envs=2)
    write = collect_mod.write_shard

    def full_after_two(path, *args, **kw):  # runs in the writer process
        if path.name >= "shard-000002.h5":
            path.with_name(path.name + ".tmp").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) + ".tmp")
        return write(path, *args, **kw)

    monkeypatch.setattr(collect_mod, "write_shard", full_after_two)
    root = tmp_path / data.name
    with pytest.raises(ValueError) as err:
        collect(data, tmp_path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(root) in msg and "no space left on device" in msg.lower()
    assert "4 of 12 episodes" in msg and "paths.data_dir" in msg, msg
    assert _seeds(root) == [0, 1, 2, 3] and not list(root.glob("*.tmp")), "kept shards stay; partial ones go"
    monkeypatch.setattr(collect_mod, "write_shard", write)
    collect(data, tmp_path, progress=False)
    assert _seeds(root) == list(range(12))


@pytest.mark.skipif(not _root(), reason="needs root to mount a small tmpfs (the monkeypatched test runs)")
def test_disk_full_on_a_real_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        over = ["data.episodes=30", "data.max_steps=30", "data.shard_frames=60", "data.num_envs=2"]
        out = _cli(mnt, *over)
        lines = _error_lines(out.stderr)
        root = mnt / "procgen_coinrun"
        assert out.returncode != 0 and len(lines) == 1, out.stderr[-3000:]
        assert lines[0].startswith(f"error: {root}") and "no space left on device" in lines[0], lines
        kept = _seeds(root)
        assert 0 < len(kept) < 30 and not list(root.glob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
        out = _cli(mnt, *over)
        assert out.returncode == 0, out.stderr[-3000:]
        assert _seeds(root) == list(range(30))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


# 12: read-only data folder ------------------------------------------------------------------------


def _datamodule(data_dir, episodes: int = 12):
    from hydra.utils import instantiate

    cfg = compose_train(tiny_data("procgen", data_dir) + [f"data.episodes={episodes}"])
    return instantiate(cfg.data, _convert_="all")


def test_read_only_complete_dataset_is_read_and_incomplete_one_is_one_line(tmp_path):
    _datamodule(tmp_path).prepare_data()
    before = sorted(p.name for p in tmp_path.iterdir())
    with _read_only(tmp_path):
        dm = _datamodule(tmp_path)
        dm.prepare_data()  # complete: nothing to write, no lock to take
        dm.setup()
        batch = next(iter(dm.train_dataloader()))
        assert batch["frames"].shape == (2, 8, 64, 64, 3)
        more = _datamodule(tmp_path, episodes=16)
        with pytest.raises(ValueError) as err:
            more.prepare_data()
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "procgen_tiny_test") in msg and "read-only" in msg.lower(), msg
    assert "12 of 16 episodes" in msg and "paths.data_dir" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# 13: manifest that is not JSON --------------------------------------------------------------------


@pytest.mark.parametrize("text", ['{"format_version": 1, "shards": [', "[]", '{"format_version": 1}'])
def test_damaged_manifest_is_one_line_naming_the_file(tmp_path, text):
    data = _data_cfg("procgen", episodes=4, max_steps=10)
    root = collect(data, tmp_path, progress=False)
    (root / MANIFEST).write_text(text)
    with pytest.raises(ValueError) as err:
        collect(data, tmp_path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{root / MANIFEST}: "), msg
    assert "delete it" in msg  # the fix: a rerun rebuilds the manifest from the shards beside it
    assert (root / MANIFEST).read_text() == text, "nothing is rewritten"


def test_deleted_manifest_is_rebuilt_from_the_shards(tmp_path):
    """The fix the damaged-manifest message gives: a shard missing in the middle is collected again, and
    no new shard takes the name of one already there."""
    data = _data_cfg("procgen", episodes=12, max_steps=10, shard_frames=40)
    root = collect(data, tmp_path, progress=False)
    (root / MANIFEST).unlink()
    (root / "shard-000001.h5").unlink()
    collect(data, tmp_path, progress=False)
    manifest = json.loads((root / MANIFEST).read_text())
    files = [s["file"] for s in manifest["shards"]]
    assert len(files) == len(set(files)) == 3 and _seeds(root) == list(range(12))
    assert sorted(_shard_seeds(root)) == list(range(12))


def test_a_copied_shard_is_not_adopted_into_the_manifest(tmp_path):
    """Rebuilding a manifest adopts shards a crash left out of it, never one holding seeds another shard
    holds (a copy, or another collection's): one line names it, and nothing on disk changes."""
    import shutil

    data = _data_cfg("procgen", episodes=8, max_steps=10, shard_frames=40)
    root = collect(data, tmp_path, progress=False)
    shutil.copy(root / "shard-000000.h5", root / "shard-000040.h5")
    (root / MANIFEST).unlink()
    with pytest.raises(ValueError) as caught:
        collect(data, tmp_path, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "shard-000040.h5" in message and "shard-000000.h5" in message
    assert "each seed once" in message
    assert sorted(p.name for p in root.glob("shard-*.h5"))[-1] == "shard-000040.h5"  # nothing deleted


def test_cli_errors_are_one_line(tmp_path):
    data = tmp_path / "data"
    root = data / "procgen_coinrun"
    root.mkdir(parents=True)
    (root / MANIFEST).write_text("{not json")
    out = _cli(data, "data.episodes=2", "data.max_steps=10")
    assert out.returncode == 2 and _error_lines(out.stderr) == [
        f"error: {root / MANIFEST}: not valid JSON (Expecting property name enclosed in double quotes at "
        f"line 1 column 2); restore it, or delete it and rerun to rebuild it from the shards in {root}"
    ], out.stderr
    out = _cli(tmp_path / "other", "data.game=notagame")
    assert out.returncode == 2 and len(_error_lines(out.stderr)) == 1, out.stderr
    assert "unknown procgen game 'notagame' (known: bigfish," in out.stderr
    assert not (tmp_path / "other").exists()


# 14: unknown game ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["procgen", "atari"])
def test_unknown_game_leaves_nothing_behind(tmp_path, source):
    data = _data_cfg(source, game="notagame", name=f"{source}_notagame")
    with pytest.raises(ValueError, match="unknown .* game 'notagame'"):
        collect(data, tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()
    dm = _datamodule(tmp_path / "dm")
    dm.hparams.game = "notagame"
    with pytest.raises(ValueError, match="unknown procgen game 'notagame' \\(known: bigfish"):
        dm.prepare_data()
    assert not (tmp_path / "dm").exists()
