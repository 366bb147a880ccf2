"""FID and LPIPS of generated frames, from feature networks the user supplies as TorchScript files.

Nothing is downloaded: torchmetrics' own FID network (`feature=2048`) needs torch-fidelity and fetches
Inception weights, and its LPIPS class fetches a torchvision backbone, so both take the user's file instead.

- FID (Heusel et al. 2017): torchmetrics' FrechetInceptionDistance with the file as its feature network,
  called on uint8 frames (N, 3, H, W) in [0, 255] and returning (N, D) features (e.g. torch-fidelity's
  Inception-v3 exported with `torch.jit.trace`); it resizes as it needs.
- LPIPS (Zhang et al. 2018): the file's network called as `net(generated, real)` on float frames
  (N, 3, H, W) in [-1, 1] (the `lpips` package's convention; e.g. `torch.jit.trace(lpips.LPIPS(net="alex"),
  (x, x))`), returning one distance per pair; the mean over pairs through torchmetrics' MeanMetric.

Frames: uint8 (N, H, W, C), real and generated paired by index.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.image.fid import FrechetInceptionDistance

KEYS = {"FID": "eval.fid_weights", "LPIPS": "eval.lpips_weights"}


def skip_reason(metric: str, weights: str | Path | None) -> str | None:
    """None when `metric` ("FID" or "LPIPS") can run with `weights`, else the one line saying why not."""
    key = KEYS[metric]
    if weights is None or str(weights) == "":
        return f"{metric} skipped: no feature network given (set {key}=PATH of a TorchScript file; nothing is downloaded)"
    if not Path(weights).is_file():
        return f"{metric} skipped: {key}={weights} does not exist"
    return None


def load_network(metric: str, path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load `metric`'s TorchScript network; a one-line error names a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{metric} network not found: {path} ({KEYS[metric]})")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - any failure means "not a TorchScript file we can use"
        raise ValueError(
            f"{path}: not a loadable TorchScript file for {metric} ({type(e).__name__})"
        ) from None


def _check(real: Tensor, generated: Tensor, metric: str) -> None:
    if real.dtype != torch.uint8 or real.ndim != 4 or real.shape != generated.shape:
        got = f"{real.dtype} {tuple(real.shape)} and {generated.dtype} {tuple(generated.shape)}"
        raise ValueError(f"{metric} expects paired uint8 (N, H, W, C) frames, got {got}")


class _Features(nn.Module):
    """A feature network as torchmetrics' FID takes it: knows its feature width `num_features`."""

    def __init__(self, net, num_features: int):
        super().__init__()
        self.net, self.num_features = net, num_features

    def forward(self, frames: Tensor) -> Tensor:  # uint8 (N, 3, H, W) -> (N, D)
        f = self.net(frames)
        return f.reshape(f.shape[0], -1)


@torch.inference_mode()
def fid(net, real: Tensor, generated: Tensor, batch_size: int = 64) -> float:
    """FID between real and generated uint8 frames (N, H, W, C), N >= 2, features from `net`."""
    _check(real, generated, "FID")
    if real.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 frames per side, got {real.shape[0]}")
    to_net = lambda x: rearrange(x, "n h w c -> n c h w")
    features = _Features(net, 0)
    features.num_features = features(to_net(real[:1])).shape[-1]
    metric = FrechetInceptionDistance(feature=features)
    for frames, is_real in ((real, True), (generated, False)):
        for chunk in frames.split(batch_size):
            metric.update(to_net(chunk), real=is_real)
    return max(metric.compute().item(), 0.0)


@torch.inference_mode()
def lpips(net, real: Tensor, generated: Tensor, batch_size: int = 64) -> float:
    """Mean LPIPS distance of generated to real uint8 frames (N, H, W, C), paired by index."""
    _check(real, generated, "LPIPS")
    to_net = lambda x: rearrange(x, "n h w c -> n c h w").float() / 127.5 - 1.0
    mean = MeanMetric()
    for r, g in zip(real.split(batch_size), generated.split(batch_size)):
        mean.update(net(to_net(g), to_net(r)).reshape(-1))
    return mean.compute().item()
