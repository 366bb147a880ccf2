"""Fréchet Video Distance from a user-supplied I3D TorchScript file (nothing is downloaded).

FVD (Unterthiner et al. 2019) is the Fréchet distance between Gaussians fitted to I3D features of
real and generated clips. The feature network is the community TorchScript I3D used by StyleGAN-V
(`i3d_torchscript.pt`), called as `detector(videos, rescale=True, resize=True, return_features=True)`
on float videos (B, C, T, H, W) with values in [0, 255]; it returns (B, D) features (D = 400).
Any TorchScript module with that call signature (or a plain `detector(videos) -> (B, D)`) works.

The Fréchet distance itself is torchmetrics' FrechetInceptionDistance, given I3D as its feature network.
FVD over a handful of clips is a rough indicator only: the covariance of D-dim features needs many
more clips than D to be well estimated. The report states the number of clips used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance


def skip_reason(weights: str | Path | None) -> str | None:
    """None when FVD can run with `weights`, else the one line saying why it is skipped."""
    if weights is None or str(weights) == "":
        return "FVD skipped: no I3D TorchScript file given (set eval.fvd_weights=PATH; nothing is downloaded)"
    if not Path(weights).is_file():
        return f"FVD skipped: eval.fvd_weights={weights} does not exist"
    return None


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load the I3D TorchScript feature network; a one-line error names a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D TorchScript file not found: {path}")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # noqa: BLE001 - any failure means "not a TorchScript file we can use"
        raise ValueError(f"{path}: not a loadable TorchScript I3D file ({type(e).__name__})") from None
    return model.eval()


class I3DFeatures(nn.Module):
    """The I3D detector as the feature network of torchmetrics' FrechetInceptionDistance: uint8 videos
    (N, T, H, W, C) -> features (N, D), D = num_features (FID needs it before the first update)."""

    def __init__(self, detector, num_features: int):
        super().__init__()
        self.detector, self.num_features = detector, num_features

    def forward(self, videos: Tensor) -> Tensor:
        if videos.dtype != torch.uint8 or videos.ndim != 5:
            got = f"{videos.dtype} {tuple(videos.shape)}"
            raise ValueError(f"FVD expects uint8 (N, T, H, W, C) videos, got {got}")
        x = rearrange(videos, "n t h w c -> n c t h w").float()  # values in [0, 255]
        try:
            f = self.detector(x, rescale=True, resize=True, return_features=True)
        except (TypeError, RuntimeError):
            f = self.detector(x)
        return f.reshape(f.shape[0], -1)


@torch.inference_mode()
def fvd(detector, real: Tensor, generated: Tensor, batch_size: int = 16) -> float:
    """FVD between uint8 (N, T, H, W, C) real and generated clips (the same T for both, N >= 2 each):
    torchmetrics' FrechetInceptionDistance (float64 feature sums, synced across DDP ranks) over I3D
    features, in batches of `batch_size` clips."""
    if real.shape[1] != generated.shape[1]:
        got = f"{real.shape[1]} and {generated.shape[1]}"
        raise ValueError(f"FVD compares clips of equal length, got {got} frames")
    if real.shape[0] < 2 or generated.shape[0] < 2:
        got = f"{real.shape[0]} and {generated.shape[0]}"
        raise ValueError(f"FVD needs at least 2 clips per side, got {got}")
    features = I3DFeatures(detector, 0)
    features.num_features = features(real[:1]).shape[-1]
    metric = FrechetInceptionDistance(feature=features, reset_real_features=True)
    for videos, is_real in ((real, True), (generated, False)):
        for chunk in videos.split(batch_size):
            metric.update(chunk, real=is_real)
    return max(metric.compute().item(), 0.0)
