"""`init_from=`: a training stage that starts fresh takes its first weights from a checkpoint (fine-tuning).

    python train.py experiment=diamond_breakout init_from=pretrained:diamond/Breakout   # common.hub name
    python train.py experiment=diamond_breakout init_from=PATH    # a worldplay .ckpt (or an upstream file)

The source is resolved by `common.hub.resolve` (a Hub name after `pretrained:`, a local DIAMOND .pt or
open-oasis .safetensors converted once, or a worldplay checkpoint as it is). It must be a checkpoint of
the model's family, written by one of the stages the run trains; it initialises that stage only, and
only when the stage starts fresh: a stage that resumes from its own last.ckpt keeps resuming (that
checkpoint already holds the fine-tuned weights, optimizer and step).

- Constructor arguments the stage's config does not set come from the source's `hyper_parameters`:
  DIAMOND's agent (`actor_critic`, frozen, not trained) rides along, so the fine-tuned checkpoint still
  carries it (play's `m`, common.evaluate_agent).
- Every tensor of the module (parameters and buffers) is loaded from the source's `state_dict` (the
  weight average, when the source trained with one): the same names with the same shapes, or a one-line
  error naming the first tensor that differs and the hyperparameters that differ (the fix).
- The frozen copies of earlier stages that the stage is built on (Genie's tokenizer, Oasis' VAE) keep
  the weights this run hands over (`<earlier>_ckpt`), not the source's.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from common.checkpoint import META_KEY, read_checkpoint
from common.hparams import plain

PREFIX = "pretrained:"
MAX_HINTS = 6  # differing hyperparameters named in a mismatch line


class InitSource:
    """A checkpoint that initialises one stage. spec: the `init_from=` text; path: the resolved file."""

    def __init__(self, spec: str, path: Path, ckpt: dict[str, Any]) -> None:
        self.spec, self.path = spec, path
        self.state: dict[str, torch.Tensor] = ckpt.get("state_dict") or {}
        self.hparams: dict[str, Any] = dict(ckpt.get("hyper_parameters") or {})
        self.meta: dict[str, str] = ckpt.get(META_KEY) or {}

    def module_config(self, mcfg: DictConfig) -> DictConfig:
        """mcfg with the source's hyperparameters for constructor arguments it does not set."""
        import hydra

        takes = inspect.signature(hydra.utils.get_class(mcfg._target_).__init__).parameters
        extra = {k: v for k, v in self.hparams.items() if k not in mcfg and k in takes}
        if not extra:
            return mcfg
        mcfg = mcfg.copy()
        with open_dict(mcfg):
            for k, v in extra.items():
                mcfg[k] = v
        return mcfg

    def load(self, module: torch.nn.Module, mcfg: DictConfig, keep: Iterable[str] = ()) -> int:
        """Copy the source's tensors into `module` (same names, same shapes), except those under the
        submodules in `keep` (earlier stages handed over by this run). Returns the number of tensors
        loaded. ValueError (one line) naming the first tensor that is missing, extra or of another shape."""
        prefixes = tuple(f"{k}." for k in keep)
        own = {k: v for k, v in module.state_dict().items() if not k.startswith(prefixes)}
        theirs = {k: v for k, v in self.state.items() if not k.startswith(prefixes)}
        for name, tensor in own.items():
            if name not in theirs:
                self._fail(f"tensor {name} of this model is not there", mcfg)
            if theirs[name].shape != tensor.shape:
                there, here = _shape(theirs[name]), _shape(tensor)
                self._fail(f"tensor {name} is ({there}) there but ({here}) in this model", mcfg)
        extra = [k for k in theirs if k not in own]
        if extra:
            self._fail(f"tensor {extra[0]} there has no place in this model", mcfg)
        missing, unexpected = module.load_state_dict(theirs, strict=False)
        assert not unexpected and all(k.startswith(prefixes) for k in missing), (missing, unexpected)
        _say(
            f"init_from={self.spec}: stage {self.meta.get('stage')} starts from its {len(theirs)} tensors{self._where()}"
        )
        return len(theirs)

    def _where(self) -> str:
        return "" if Path(self.spec).expanduser() == self.path else f" ({self.path})"

    def _fail(self, what: str, mcfg: DictConfig) -> None:
        raise ValueError(f"init_from={self.spec}: {what}{self._hints(mcfg)}{self._where()}")

    def _hints(self, mcfg: DictConfig) -> str:
        """'; its hyperparameters differ: k=v there, w here, ...: set ...' (the fix), or '' when none does."""
        try:
            ours = OmegaConf.to_container(mcfg, resolve=True)
        except Exception:  # noqa: BLE001 - an unresolvable config only loses the hint
            return ""
        differ = [k for k, v in self.hparams.items() if k in ours and plain(ours[k]) != plain(v)]
        if not differ:
            return ""
        shown = ", ".join(
            f"{k}={_text(self.hparams[k])} there, {_text(ours[k])} here" for k in differ[:MAX_HINTS]
        )
        more = f" and {len(differ) - MAX_HINTS} more" if len(differ) > MAX_HINTS else ""
        stage = self.meta.get("stage", "<stage>")
        k = differ[0]
        return (
            f"; its hyperparameters differ: {shown}{more}: set those that shape the networks as it has "
            f"(e.g. model.{stage}.{k}={_text(self.hparams[k]).replace(' ', '')})"
        )


def init_source(spec: str | None, family: str, stage: str, stages: list[str]) -> InitSource | None:
    """The source that initialises `stage` (of `family`; the run trains `stages`), or None: no init_from,
    or a source written by another of the run's stages (said on stderr). One-line errors: a source of
    another family, or of a stage this run does not train; a missing or unreadable file (common.hub's
    errors for names)."""
    if not spec:
        return None
    spec = str(spec)
    from common.hub import HubError, resolve

    name = spec.removeprefix(PREFIX)
    if not spec.startswith(PREFIX) and not Path(name).expanduser().exists():
        raise FileNotFoundError(
            f"init_from={spec}: checkpoint not found (a file, or pretrained:NAME for a common.hub name)"
        )
    try:
        path = Path(resolve(name, quiet=False))
    except HubError as e:
        raise ValueError(f"init_from={spec}: {e}") from None
    try:
        ckpt = read_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"init_from={spec}: {e}") from None
    meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
    if not meta:
        raise ValueError(f"init_from={spec}: {path} is not a worldplay checkpoint (no '{META_KEY}' metadata)")
    got = f"{meta.get('family')}/{meta.get('stage')}"
    if meta.get("family") != family:
        raise ValueError(
            f"init_from={spec}: a checkpoint of {got}, this model is {family} (stages: {', '.join(stages)}): "
            f"give a {family} checkpoint"
        )
    if meta.get("stage") not in stages:
        raise ValueError(
            f"init_from={spec}: a checkpoint of {got}, a stage this run does not train "
            f"(stages: {', '.join(stages)}); give a checkpoint of one of them"
        )
    if meta.get("stage") != stage:
        _say(f"init_from={spec}: a checkpoint of {got}; stage {stage} starts from its own initialisation")
        return None
    return InitSource(spec, path, ckpt)


def _say(line: str) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(line, file=sys.stderr, flush=True)


def _shape(t: torch.Tensor) -> str:
    return ", ".join(str(n) for n in t.shape)


def _text(v: Any) -> str:
    return json.dumps(plain(v)) if isinstance(v, (list, tuple, dict)) else str(v)
