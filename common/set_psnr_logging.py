"""LightningModule mixin that logs set PSNRs (common.metrics.SetPSNR) at the end of each evaluation epoch.

A module adds per-image MSEs to `self.set_psnr` in its validation/test steps, and the per-clip errors of
each ΔtPSNR with `self.add_delta_psnr(name, errors, seeds)`. At the epoch's end the mixin sums the MSEs
over ranks and logs 10·log10(1 / mean MSE) per name (after `derive_set_metrics`, which turns every
`{name}/inferred` + `{name}/random` pair of sets into its ΔtPSNR, common.delta_psnr). For every ΔtPSNR it
also gathers the per-clip errors of all ranks and logs the bootstrap interval over clips as `{name}_low`
(5th percentile) and `{name}_high` (95th); when every clip's level seed is known, also the bootstrap over
levels (whole levels resampled: clips of one level are correlated) as `{name}_low_levels` /
`{name}_high_levels`. A paired difference of set PSNRs on the same frames (the model's next frame against
copy-last's or against the one generated with shuffled actions), added per clip with
`self.add_paired_errors(name, errors, seeds)`, is logged as `{name}` with the same intervals: at one seed
a verdict on "beats copy-last" reads them instead of the point value. It keeps the per-clip values in
`self.eval_records[name]` (plain lists: what common.callbacks writes to `<run_dir>/test_records.json` after a
test). Then it empties the meters.
List the mixin before `L.LightningModule`; a module that defines its own epoch-end hook calls super().
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from common.delta_psnr import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    ClipErrors,
    bootstrap_delta_psnr,
    derive_delta_psnr,
)
from common.metrics import SetPSNR, psnr_of_mse


class SetPSNRLogging:
    @property
    def set_psnr(self) -> SetPSNR:
        if "_set_psnr" not in self.__dict__:
            self.__dict__["_set_psnr"] = SetPSNR()
        return self.__dict__["_set_psnr"]

    @property
    def clip_errors(self) -> ClipErrors:
        """The epoch's per-clip ΔtPSNR errors (common.delta_psnr.ClipErrors)."""
        if "_clip_errors" not in self.__dict__:
            self.__dict__["_clip_errors"] = ClipErrors()
        return self.__dict__["_clip_errors"]

    @property
    def eval_records(self) -> dict[str, dict[str, Any]]:
        """Per-clip values of the last evaluation epoch, by metric name (JSON-ready)."""
        if "_eval_records" not in self.__dict__:
            self.__dict__["_eval_records"] = {}
        return self.__dict__["_eval_records"]

    def add_delta_psnr(self, name: str, errors: tuple[Tensor, Tensor], seeds: Tensor | None = None) -> None:
        """Add `delta_psnr_errors` output ((B,) real-action and (B,) random-action MSEs) for metric `name`
        (e.g. "test/delta_psnr_t4"); seeds: (B,) level seeds of the clips, kept in the per-clip record."""
        self.set_psnr.add(f"{name}/inferred", errors[0])
        self.set_psnr.add(f"{name}/random", errors[1])
        self.clip_errors.add(name, errors, seeds)

    @property
    def paired_names(self) -> set[str]:
        """Names added with `add_paired_errors` (the rest of `clip_errors` are ΔtPSNRs)."""
        if "_paired_names" not in self.__dict__:
            self.__dict__["_paired_names"] = set()
        return self.__dict__["_paired_names"]

    def add_paired_errors(
        self, name: str, errors: tuple[Tensor, Tensor], seeds: Tensor | None = None
    ) -> None:
        """Per-clip MSEs ((B,) the model's, (B,) a baseline's, on the same target frames) of the difference
        `name` = set PSNR of the model - set PSNR of the baseline, in dB (e.g. "test/psnr_next_minus_copy_last");
        logged at the epoch's end with its bootstrap intervals. seeds: (B,) level seeds of the clips."""
        self.paired_names.add(name)
        self.clip_errors.add(name, errors, seeds)

    def derive_set_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """Set PSNRs -> the metrics to log: ΔtPSNR pairs become their difference, the rest pass through."""
        return derive_delta_psnr(values)

    def _gather_objects(self):
        """object -> every rank's object (rank order) under DDP; None with one process."""
        if self.trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return None

        def gather(obj):
            out = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(out, obj)
            return out

        return gather

    def _bootstrap_intervals(self) -> dict[str, float]:
        """`{name}_low` / `{name}_high` for every ΔtPSNR and paired difference of the epoch (and the paired
        differences' point values); fills `eval_records`."""
        out = {}
        for name, (inferred, random, seeds) in self.clip_errors.gather(self._gather_objects()).items():
            if inferred.numel() == 0:
                continue
            paired = name in self.paired_names
            if paired:  # the difference of the two sets' PSNRs, as the ΔtPSNR is
                out[name] = (psnr_of_mse(inferred.mean()) - psnr_of_mse(random.mean())).item()
            low, high = bootstrap_delta_psnr(inferred, random)
            out[f"{name}_low"], out[f"{name}_high"] = low, high
            record = {"clips": inferred.numel(), "low": low, "high": high}
            if (seeds >= 0).all():  # every clip's level is known: the bootstrap over levels too
                levels = bootstrap_delta_psnr(inferred, random, groups=seeds)
                out[f"{name}_low_levels"], out[f"{name}_high_levels"] = levels
                record.update(levels=int(seeds.unique().numel()), low_levels=levels[0], high_levels=levels[1])
            model, base, diff = ("mse_model", "mse_baseline", "difference") if paired else (
                "mse_inferred", "mse_random", "delta_psnr")  # fmt: skip
            self.eval_records[name] = {
                **record,
                "quantiles": [0.05, 0.95],
                "resamples": BOOTSTRAP_RESAMPLES,
                "bootstrap_seed": BOOTSTRAP_SEED,
                "seeds": seeds.tolist(),
                model: inferred.tolist(),
                base: random.tolist(),
                diff: (psnr_of_mse(inferred) - psnr_of_mse(random)).tolist(),  # per clip, dB
            }
        return out

    def _log_set_psnr(self) -> None:
        reduce = None
        if self.trainer.world_size > 1:
            reduce = lambda t: self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").cpu()  # noqa: E731
        values = self.derive_set_metrics(self.set_psnr.compute(reduce))
        values.update(self._bootstrap_intervals())
        for name, value in values.items():
            self.log(name, value, prog_bar=name.endswith("psnr_next") or name.endswith("psnr_recon"))
        self.set_psnr.reset()
        self.clip_errors.reset()

    def _reset_meters(self) -> None:
        self.set_psnr.reset()
        self.clip_errors.reset()
        self.eval_records.clear()

    def on_validation_epoch_start(self) -> None:
        self._reset_meters()

    def on_test_epoch_start(self) -> None:
        self._reset_meters()

    def on_validation_epoch_end(self) -> None:
        self._log_set_psnr()

    def on_test_epoch_end(self) -> None:
        self._log_set_psnr()
