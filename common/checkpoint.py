"""worldplay checkpoint files: which family and stage wrote one, and writing them so that a kill cannot
destroy the last good one.

- Metadata: every LightningModule of worldplay mixes in `FamilyCheckpoint` and sets `family` and
  `stage`; the metadata lands under the key "worldplay" of the Lightning checkpoint. Loading reads the
  file with `weights_only=True`: nothing in a checkpoint can run code.
- `write_atomically`: a file is written to a temporary name in its own folder, flushed to disk (fsync)
  and renamed over the target (`os.replace`, atomic within one filesystem). Lightning's own writer
  (fsspec's transaction) puts the temporary file in TMPDIR and *moves* it; with TMPDIR on another
  filesystem (a tmpfs /tmp, common on clusters) the move is a copy into the truncated target, and a
  kill -9 during it left a 0-byte `last.ckpt`. `AtomicCheckpointIO` is Lightning's TorchCheckpointIO
  with this writer.
- `StageCheckpoint`: the ModelCheckpoint of a stage's folder (conf/callbacks/checkpoint.yaml). It installs
  `AtomicCheckpointIO`, and writes `last.ckpt` at the batch where training stops (max_steps, or a stop
  requested during the batch: common.resume.Preemption), after every other callback's batch end.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

META_KEY = "worldplay"
TEMP_SUFFIX = ".tmp"


class FamilyCheckpoint:
    """Mixin for LightningModules: writes {"family", "stage"} into every checkpoint."""

    family: str = ""
    stage: str = ""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = {"family": self.family, "stage": self.stage}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True, mmap=True) with one-line errors for a missing or unreadable file.

    Memory-mapped: loading reads the file's index and pickled structure, and a tensor's bytes only where
    they are used (copied into a module, say), so a 3 GB checkpoint opens in well under a second and is
    never held twice. A file in torch's legacy (pre-zip) format cannot be mapped and is read whole."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except Exception as e:  # noqa: BLE001 - any failure here means "not a checkpoint we can read"
        raise ValueError(f"{path}: not a readable worldplay checkpoint ({type(e).__name__})") from None


def saved_step(path: str | Path) -> int | None:
    """The global step a checkpoint file was saved at, or None when it cannot be read (empty, cut short,
    not a checkpoint). Reads the file's index and pickled structure, not its tensor data (mmap)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable for whatever reason
        return None
    return int(ckpt.get("global_step", 0)) if isinstance(ckpt, dict) else None


def checkpoint_meta(ckpt: Any, path: str | Path) -> dict[str, str]:
    """The {"family", "stage"} of a checkpoint already read from `path` (one-line error without them)."""
    meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
    if not meta:
        raise ValueError(f"{path}: not a worldplay checkpoint (no '{META_KEY}' metadata)")
    return meta


def check_meta(ckpt: Any, path: str | Path, family: str, stage: str | None = None) -> dict[str, str]:
    """Fail in one line unless the checkpoint read from `path` was written by `family` (and `stage`)."""
    meta = ckpt.get(META_KEY, {}) if isinstance(ckpt, dict) else {}
    got = f"{meta.get('family', '?')}/{meta.get('stage', '?')}"
    if meta.get("family") != family or (stage is not None and meta.get("stage") != stage):
        want = f"{family}/{stage}" if stage else family
        raise ValueError(f"{path}: checkpoint of {got}, expected {want}")
    return meta


def read_meta(path: str | Path) -> dict[str, str]:
    """The {"family", "stage"} a worldplay checkpoint was written by."""
    return checkpoint_meta(read_checkpoint(path), path)


def check_family(path: str | Path, family: str, stage: str | None = None) -> dict[str, Any]:
    """Read a checkpoint and fail in one line unless it was written by `family` (and `stage`)."""
    ckpt = read_checkpoint(path)
    check_meta(ckpt, path, family, stage)
    return ckpt


def write_atomically(path: str | Path, write: Callable[[IO], None], text: bool = False) -> None:
    """Write `path` through `write(file)` so that it holds either its old content or all of the new.

    The data goes to `.<name>.<random>.tmp` in the same folder (created with the process umask, as an
    ordinary file), is fsync'ed, and the file is renamed over `path`; the folder is fsync'ed so that
    the rename survives a crash of the machine too. A failure removes the temporary file; a kill leaves
    it (StageCheckpoint removes such files when the next run starts). `text`: a text file (newline="").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO, writing local files with `write_atomically` (remote URLs: as Lightning)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomically(path, lambda f: torch.save(checkpoint, f))


class StageCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for `<run_dir>/checkpoints/<stage>/` (periodic `step_N.ckpt` and `last.ckpt`), which:

    - installs `AtomicCheckpointIO` when the strategy has Lightning's default TorchCheckpointIO, so every
      checkpoint of the run (this callback's, the preemption one, the one train.py writes after fit) is
      written beside its target and renamed into place; at the start of a fit it removes the temporary
      files of writes that a kill cut short.
    - writes `last.ckpt` at the end of the batch where training stops: when `trainer.max_steps` is
      reached, or when `trainer.should_stop` was set during the batch (common.resume.Preemption). Lightning
      runs checkpoint callbacks after all others, so the file holds the state every callback left after
      that step (the weight average has counted it, StepSeeds its batch), with the loops and the clip
      sampler at the same batch. A rerun with a larger max_steps then continues mid-epoch exactly as an
      uninterrupted run; Lightning's own last.ckpt, written when training ends, marks the epoch as
      finished and the rerun would skip the rest of it.
    - overwrites a checkpoint of the same name (`enable_version_counter=False`): a rerun in the same run
      directory redoes the same steps, and its files replace those of the run it continues.
    """

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any):
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)
        self._last_step: int | None = None  # global step of the last.ckpt this process wrote last

    @property
    def last_path(self) -> Path:
        if not self.dirpath:
            raise ValueError("StageCheckpoint needs dirpath (train.py sets it to checkpoints/<stage>/)")
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if (
            stage == "fit"
            and trainer.is_global_zero
            and self.dirpath
            and _is_local_file_protocol(self.dirpath)
        ):
            for tmp in Path(self.dirpath).glob(f".*{self.FILE_EXTENSION}.*{TEMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)  # a write that a kill cut short

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        max_steps_reached = trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps
        stops = trainer.should_stop or max_steps_reached
        if stops and not trainer.fast_dev_run and self._last_step != trainer.global_step:
            self.write_last(trainer)

    def write_last(self, trainer: L.Trainer) -> Path:
        """Write `last.ckpt` now (all ranks call this; global rank 0 writes)."""
        path = self.last_path
        self.last_model_path = str(path)  # before saving: it is part of the saved state
        self._save_checkpoint(trainer, str(path))
        return path

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if os.path.abspath(filepath) == os.path.abspath(self.last_path):
            self._last_step = trainer.global_step
