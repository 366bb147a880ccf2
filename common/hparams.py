"""Hyperparameters as plain Python values, so that a checkpoint loads with `torch.load(weights_only=True)`.

A LightningModule built from a Hydra config may receive OmegaConf `ListConfig` / `DictConfig` arguments
(and tuples from its own defaults). Lightning stores `dict(module.hparams)` in the checkpoint, and
`weights_only=True` refuses OmegaConf objects. Every worldplay module calls `plain_hparams(self)` right
after `self.save_hyperparameters()` (and sets later entries, like Oasis' `scaling_factor`, as plain values).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def plain(value: Any) -> Any:
    """OmegaConf containers, dicts, lists and tuples -> dicts (str keys) and lists, recursively (interpolations
    resolved); anything else is returned as it is."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def plain_hparams(module: Any) -> None:
    """Replace every entry of `module.hparams` (a LightningModule's, after save_hyperparameters) by
    `plain(entry)`, in place."""
    module.hparams.update(plain(dict(module.hparams)))
