"""Checkpoint files survive a kill at any moment: written beside their target and renamed into place;
a resume that finds an unreadable last.ckpt continues from the newest readable checkpoint of the stage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from common.checkpoint import StageCheckpoint
from common.resume import resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# A child process that trains BoringModel for 3 steps with a checkpoint every step and reports every file
# it opens for writing. It SIGKILLs itself at the moment the second last.ckpt (step 2) is about to
# replace the first: the last instant before the target changes, so what a kill -9 can leave behind.
CHILD = r"""
import os, signal, sys
import lightning as L
from lightning.pytorch.demos.boring_classes import BoringModel
from common.checkpoint import StageCheckpoint

folder = sys.argv[1]
target = os.path.join(folder, "last.ckpt")
hits = []

def path_of(value):
    try:
        return os.path.abspath(os.fsdecode(value))
    except TypeError:  # a file descriptor
        return None

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writing and path_of(path):
            os.write(2, f"WRITE {path_of(path)}\n".encode())
        if writing and path_of(path) == target:
            os.write(2, b"OPENED TARGET FOR WRITING\n")
            hits.append(event)
    elif event in ("os.rename", "shutil.copyfile", "shutil.copymode", "os.link") and path_of(args[1]) == target:
        hits.append(event)
    else:
        return
    if len(hits) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
trainer = L.Trainer(
    max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    default_root_dir=folder, callbacks=[StageCheckpoint(dirpath=folder, save_last=True, every_n_train_steps=1)],
)
trainer.fit(BoringModel())
"""


def other_filesystem_tmpdir(tmp_path: Path) -> Path:
    """A TMPDIR on another filesystem than tmp_path when the machine has one (/dev/shm), as on clusters
    whose /tmp is a tmpfs; else a separate folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        folder = shm / f"worldplay-test-{os.getpid()}-{tmp_path.name}"
    else:
        folder = tmp_path / "tmpdir"
    folder.mkdir()
    return folder


def test_kill_during_checkpoint_write_leaves_the_previous_one_and_no_file_elsewhere(tmp_path):
    folder, tmpdir = tmp_path / "checkpoints" / "enc", other_filesystem_tmpdir(tmp_path)
    try:
        env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder)], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        leftovers = sorted(p.name for p in tmpdir.rglob("*"))
    finally:
        for p in sorted(tmpdir.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        tmpdir.rmdir()
    written = [line.split(" ", 1)[1] for line in child.stderr.splitlines() if line.startswith("WRITE ")]
    assert written and all(Path(p).parent == folder for p in written), written
    assert "OPENED TARGET FOR WRITING" not in child.stderr  # only ever renamed into place
    assert leftovers == []  # TMPDIR untouched
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1  # the previous last.ckpt, whole
    pending = [p for p in folder.iterdir() if p.suffix == ".tmp"]
    assert len(pending) == 1 and torch.load(pending[0], weights_only=True)["global_step"] == 2  # complete

    # the next run's checkpoint callback removes the killed write's temporary file
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[StageCheckpoint(dirpath=folder, save_last=True)],
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"]


def save(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"global_step": step, "worldplay": {"family": "fake", "stage": "enc"}, "w": torch.ones(64)}, path
    )
    return path


def test_unreadable_last_ckpt_falls_back_to_the_newest_readable_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    folder = run / "checkpoints" / "enc"
    save(folder / "step_4.ckpt", 4)
    save(folder / "step_12.ckpt", 12)
    save(folder / "step_8.ckpt", 8)
    truncated = save(folder / "step_16.ckpt", 16)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    last = save(folder / "last.ckpt", 16)
    os.utime(folder / "step_4.ckpt")  # the newest file is not the newest checkpoint

    assert resume_checkpoint(True, run, "enc", "fake") == str(last)  # readable: used, nothing said
    assert capsys.readouterr().err == ""

    for broken in (b"", last.read_bytes()[:100]):  # a 0-byte or a truncated last.ckpt
        last.write_bytes(broken)
        assert resume_checkpoint(True, run, "enc", "fake") == str(folder / "step_12.ckpt")
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert str(last) in err and "step_12.ckpt" in err and "step 12" in err, err
        assert resume_checkpoint(str(run), tmp_path / "new", "enc", "fake") == str(folder / "step_12.ckpt")
        capsys.readouterr()

    last.unlink()  # killed between a periodic checkpoint and the first last.ckpt
    assert resume_checkpoint(True, run, "enc", "fake") == str(folder / "step_12.ckpt")
    assert "step_12.ckpt" in capsys.readouterr().err

    for p in folder.glob("step_*.ckpt"):
        p.write_bytes(b"")
    last.write_bytes(b"")
    assert resume_checkpoint(True, run, "enc", "fake") is None  # nothing readable: the stage starts over
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "from the start" in err, err

    with pytest.raises(ValueError, match="not a readable"):  # a file named by the user is not replaced
        resume_checkpoint(str(last), run, "enc", "fake")


def test_a_periodic_checkpoint_newer_than_last_ckpt_is_resumed_from(tmp_path, capsys):
    """A kill while last.ckpt was being replaced at step 10 leaves step_10.ckpt complete beside the step-5
    last.ckpt: resume from step 10, not redo 5 steps; a stale step file older than last.ckpt (an earlier
    run's, in the same run dir) is never taken."""
    run = tmp_path / "run"
    folder = run / "checkpoints" / "enc"
    stale = save(folder / "step_20.ckpt", 20)
    last = save(folder / "last.ckpt", 5)
    os.utime(stale, (last.stat().st_mtime - 60, last.stat().st_mtime - 60))
    assert resume_checkpoint(True, run, "enc", "fake") == str(last)
    assert capsys.readouterr().err == ""
    newer = save(folder / "step_10.ckpt", 10)
    os.utime(newer, (last.stat().st_mtime + 1, last.stat().st_mtime + 1))
    assert resume_checkpoint(True, run, "enc", "fake") == str(newer)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "step_10.ckpt (step 10)" in err and "(step 5)" in err, err
