"""worldplay checkpoint metadata: which family and stage wrote a checkpoint, checked before loading.

Every LightningModule of worldplay mixes in `FamilyCheckpoint` and sets `family` and `stage`; the
metadata lands under the key "worldplay" of the Lightning checkpoint. Loading reads the file with
`weights_only=True`: nothing in a checkpoint can run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

META_KEY = "worldplay"


class FamilyCheckpoint:
    """Mixin for LightningModules: writes {"family", "stage"} into every checkpoint."""

    family: str = ""
    stage: str = ""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = {"family": self.family, "stage": self.stage}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) with one-line errors for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a checkpoint we can read"
        raise ValueError(f"{path}: not a readable worldplay checkpoint ({type(e).__name__})") from None


def read_meta(path: str | Path) -> dict[str, str]:
    """The {"family", "stage"} a worldplay checkpoint was written by."""
    ckpt = read_checkpoint(path)
    meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
    if not meta:
        raise ValueError(f"{path}: not a worldplay checkpoint (no '{META_KEY}' metadata)")
    return meta


def check_family(path: str | Path, family: str, stage: str | None = None) -> dict[str, Any]:
    """Read a checkpoint and fail in one line unless it was written by `family` (and `stage`)."""
    ckpt = read_checkpoint(path)
    meta = ckpt.get(META_KEY, {}) if isinstance(ckpt, dict) else {}
    got = f"{meta.get('family', '?')}/{meta.get('stage', '?')}"
    if meta.get("family") != family or (stage is not None and meta.get("stage") != stage):
        want = f"{family}/{stage}" if stage else family
        raise ValueError(f"{path}: checkpoint of {got}, expected {want}")
    return ckpt
