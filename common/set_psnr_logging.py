"""LightningModule mixin that logs set PSNRs (common.metrics.SetPSNR) at the end of each evaluation epoch.

A module adds per-image MSEs to `self.set_psnr` in its validation/test steps; at the epoch's end the
mixin sums them over ranks, logs 10·log10(1 / mean MSE) per name (after `derive_set_metrics`, which
turns every `{name}/inferred` + `{name}/random` pair of sets into its ΔtPSNR, common.delta_psnr) and
empties the meter.
List the mixin before `L.LightningModule`; a module that defines its own epoch-end hook calls super().
"""

from __future__ import annotations

from common.delta_psnr import derive_delta_psnr
from common.metrics import SetPSNR


class SetPSNRLogging:
    @property
    def set_psnr(self) -> SetPSNR:
        if "_set_psnr" not in self.__dict__:
            self.__dict__["_set_psnr"] = SetPSNR()
        return self.__dict__["_set_psnr"]

    def derive_set_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """Set PSNRs -> the metrics to log: ΔtPSNR pairs become their difference, the rest pass through."""
        return derive_delta_psnr(values)

    def _log_set_psnr(self) -> None:
        reduce = None
        if self.trainer.world_size > 1:
            reduce = lambda t: self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").cpu()  # noqa: E731
        values = self.derive_set_metrics(self.set_psnr.compute(reduce))
        for name, value in values.items():
            self.log(name, value, prog_bar=name.endswith("psnr_next") or name.endswith("psnr_recon"))
        self.set_psnr.reset()

    def on_validation_epoch_start(self) -> None:
        self.set_psnr.reset()

    def on_test_epoch_start(self) -> None:
        self.set_psnr.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_set_psnr()

    def on_test_epoch_end(self) -> None:
        self._log_set_psnr()
