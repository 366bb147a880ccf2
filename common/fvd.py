"""Fréchet Video Distance from a user-supplied I3D TorchScript file (nothing is downloaded).

FVD (Unterthiner et al. 2019) is the Fréchet distance between Gaussians fitted to I3D features of
real and generated clips. The feature network is the community TorchScript I3D used by StyleGAN-V
(`i3d_torchscript.pt`), called as `detector(videos, rescale=True, resize=True, return_features=True)`
on float videos (B, C, T, H, W) with values in [0, 255]; it returns (B, D) features (D = 400).
Any TorchScript module with that call signature (or a plain `detector(videos) -> (B, D)`) works.

FVD over a handful of clips is a rough indicator only: the covariance of D-dim features needs many
more clips than D to be well estimated. The report states the number of clips used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor


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


@torch.inference_mode()
def i3d_features(detector, videos: Tensor, batch_size: int = 16) -> Tensor:
    """uint8 videos (N, T, H, W, C) -> float64 features (N, D), in batches of `batch_size`."""
    if videos.dtype != torch.uint8 or videos.ndim != 5:
        got = f"{videos.dtype} {tuple(videos.shape)}"
        raise ValueError(f"FVD expects uint8 (N, T, H, W, C) videos, got {got}")
    feats = []
    for chunk in videos.split(batch_size):
        x = rearrange(chunk, "n t h w c -> n c t h w").float()  # values in [0, 255]
        try:
            f = detector(x, rescale=True, resize=True, return_features=True)
        except (TypeError, RuntimeError):
            f = detector(x)
        feats.append(f.reshape(f.shape[0], -1).double().cpu())
    return torch.cat(feats)


def _sqrt_psd(m: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix through its eigendecomposition."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features (N, D) and (M, D).

    d^2 = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a^1/2 S_b S_a^1/2)^1/2), in float64.
    """
    a, b = feats_a.double(), feats_b.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        got = f"{a.shape[0]} and {b.shape[0]}"
        raise ValueError(f"Fréchet distance needs at least 2 samples per side, got {got}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    d = a.shape[1]
    cov_a, cov_b = torch.cov(a.T).reshape(d, d), torch.cov(b.T).reshape(d, d)
    root_a = _sqrt_psd(cov_a)
    cross = _sqrt_psd(root_a @ cov_b @ root_a).trace()
    d2 = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(d2.item(), 0.0)


def fvd(detector, real: Tensor, generated: Tensor, batch_size: int = 16) -> float:
    """FVD between uint8 (N, T, H, W, C) real and generated clips (the same T for both)."""
    if real.shape[1] != generated.shape[1]:
        got = f"{real.shape[1]} and {generated.shape[1]}"
        raise ValueError(f"FVD compares clips of equal length, got {got} frames")
    feats_real = i3d_features(detector, real, batch_size)
    return frechet_distance(feats_real, i3d_features(detector, generated, batch_size))
