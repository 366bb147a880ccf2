"""Open a worldplay checkpoint once: read it, check its family, build its LightningModule, hand out the
WorldModel.

    world_model, ckpt = load("run/checkpoints/dit/last.ckpt", device="cuda")   # play.py, evaluate_agent
    module = build_module(ckpt)                  # the LightningModule itself (weights, hyperparameters)

The file is read one time, memory-mapped (`common.checkpoint.read_checkpoint`: torch.load with
`mmap=True, weights_only=True`), so a 3 GB Oasis checkpoint is neither read nor held twice. Its
"worldplay" metadata names the family and stage; `FAMILIES` says which stage of a family plays and
which LightningModule that stage trains. The module is built from the hyperparameters stored with the
weights (no Hydra, as `Module.load_from_checkpoint` would), with its parameters left uninitialised until
the checkpoint's weights are copied in (every parameter and persistent buffer must be in the file:
strict), then `module.world_model()` gives the WorldModel over those weights.

A family's `world_model.py` holds inference only and imports nothing from its `module.py`: the loader is
where the two meet.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from common.checkpoint import check_meta, checkpoint_meta, read_checkpoint

# family (as stored in every checkpoint) -> (the stage whose checkpoint plays, "module:Class" of its
# LightningModule, which has `world_model() -> WorldModel`)
FAMILIES: dict[str, tuple[str, str]] = {
    "genie": ("dynamics", "genie.module:GenieDynamicsModule"),
    "diamond": ("world_model", "diamond.module:DiamondModule"),
    "oasis": ("dit", "oasis.module:OasisDiTModule"),
}
# later stages that play too: they hold the playing stage's weights and add to them (DIAMOND's agent stage:
# the frozen world model with the trained actor-critic as its policy)
ALSO_PLAYS: dict[tuple[str, str], str] = {("diamond", "agent"): "diamond.agent:DiamondAgentModule"}


# in-place fills: where every weight init ends (torch.nn.init's xavier_uniform_, kaiming_uniform_, zeros_,
# ... call them on the tensor, most without a torch-function hook of their own)
INIT_FILLS = frozenset({
    torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.random_, torch.Tensor.bernoulli_,
    torch.Tensor.exponential_, torch.Tensor.cauchy_, torch.Tensor.log_normal_, torch.Tensor.geometric_,
    torch.Tensor.zero_, torch.Tensor.fill_,
})  # fmt: skip


class SkipRandomInit(TorchFunctionMode):
    """Inside it, initialising a Parameter does nothing: torch.nn.init's functions and the in-place fills
    (`INIT_FILLS`) return a Parameter as allocated (uninitialised memory). For building a module whose
    every parameter a strict `load_state_dict` then overwrites. Buffers (a rotary table, a noise schedule,
    possibly not in the state dict) are computed as always. Lightning's `_EmptyInit` skips torch.nn.init's
    functions only, which misses the fills that xavier_uniform_ and zeros_ end in."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in INIT_FILLS or getattr(func, "__module__", None) == "torch.nn.init":
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.nn.Parameter):
                return tensor
        return func(*args, **kwargs)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file read once. content: what torch.load returned (tensors memory-mapped)."""

    path: Path
    content: dict[str, Any]
    family: str
    stage: str

    def get(self, key: str, default: Any = None) -> Any:
        return self.content.get(key, default)


def open_checkpoint(path: str | Path, family: str | None = None, stage: str | None = None) -> Checkpoint:
    """Read `path` once (memory-mapped) and check it was written by `family` / `stage` where given.

    Errors, one line each: FileNotFoundError (no such file); ValueError (not readable, not a worldplay
    checkpoint, another family or stage: `PATH: checkpoint of genie/tokenizer, expected genie/dynamics`)."""
    content = read_checkpoint(path)
    meta = checkpoint_meta(content, path)
    if family is not None:
        check_meta(content, path, family, stage)
    return Checkpoint(Path(path), content, meta["family"], meta["stage"])


def module_class(family: str, path: str | Path = "") -> tuple[str, type]:
    """(the stage that plays, its LightningModule class) of `family`; one-line error for an unknown one."""
    if family not in FAMILIES:
        raise ValueError(f"{path}: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    stage, target = FAMILIES[family]
    module_name, cls_name = target.split(":")
    return stage, getattr(importlib.import_module(module_name), cls_name)


def build_module(
    ckpt: Checkpoint,
    cls: type | None = None,
    device: str | torch.device = "cpu",
    overrides: dict | None = None,
):
    """The LightningModule `cls` (default: the one of the checkpoint's family that plays; its stage is
    checked) with the checkpoint's hyperparameters and weights, in eval mode on `device`. `overrides`
    replace hyperparameters (evaluation settings such as a sampler's temperature or the number of rollout
    batches; one that changes a weight's shape fails in load_state_dict, naming the tensor).

    As Lightning's `load_from_checkpoint`: `cls(**hyper_parameters)`, then `on_load_checkpoint`, then a
    strict `load_state_dict`; but the constructor's random initialisation is skipped (`SkipRandomInit`:
    every value it would draw is overwritten by the checkpoint's), which at Oasis-500M size was most of
    the time a load took."""
    if cls is None and (ckpt.family, ckpt.stage) in ALSO_PLAYS:
        module_name, cls_name = ALSO_PLAYS[(ckpt.family, ckpt.stage)].split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
    if cls is None:
        stage, cls = module_class(ckpt.family, ckpt.path)
        check_meta(ckpt.content, ckpt.path, ckpt.family, stage)
    hparams = {**(ckpt.get("hyper_parameters") or {}), **(overrides or {})}
    with SkipRandomInit():
        module = cls(**hparams)
    module.on_load_checkpoint(ckpt.content)
    module.load_state_dict(ckpt.get("state_dict") or {}, strict=True)
    return module.to(device).eval()


def load(path: str | Path, device: str | torch.device = "cpu", family: str | None = None):
    """-> (WorldModel, Checkpoint) of the checkpoint at `path`: its family's playing stage's module, built
    from one read of the file, gives the WorldModel. `family`: fail unless the file is of this family."""
    ckpt = open_checkpoint(path, family)
    return build_module(ckpt, device=device).world_model(), ckpt


def load_world_model(path: str | Path, device: str | torch.device = "cpu", family: str | None = None):
    """The WorldModel of the checkpoint at `path` (see `load`)."""
    return load(path, device, family)[0]
