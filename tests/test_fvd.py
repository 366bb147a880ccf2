"""FVD: the Fréchet distance of I3D features (torchmetrics), with a tiny TorchScript stand-in for I3D."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.fvd import fvd, load_i3d, skip_reason


class TinyDetector(nn.Module):
    """Stands in for I3D: mean colour per frame chunk as features, same call signature."""

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = True
    ):  # noqa: E501
        # x: (B, C, T, H, W) in [0, 255] -> (B, C * T) features
        if rescale:
            x = x / 127.5 - 1.0
        return x.mean(dim=(3, 4)).flatten(1)


@pytest.fixture
def detector_file(tmp_path):
    path = tmp_path / "i3d.pt"
    torch.jit.script(TinyDetector()).save(str(path))
    return path


def reference_fvd(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance of Gaussians fitted to features (N, D), (M, D), with scipy's matrix square root."""
    from scipy.linalg import sqrtm

    a, b = features_a.double().numpy(), features_b.double().numpy()
    ca, cb = torch.cov(torch.from_numpy(a).T).numpy(), torch.cov(torch.from_numpy(b).T).numpy()
    cross = sqrtm(ca @ cb).real.trace()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + ca.trace() + cb.trace() - 2 * cross)


def test_fvd_is_the_frechet_distance_of_the_detector_features(detector_file):
    detector = load_i3d(detector_file)
    g = torch.Generator().manual_seed(2)
    real = torch.randint(0, 256, (9, 2, 6, 6, 3), generator=g, dtype=torch.uint8)
    fake = (real.int() // 2 + torch.randint(0, 90, real.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    features = lambda v: TinyDetector()(v.permute(0, 4, 1, 2, 3).float())  # (N, C * T) = (N, 6)
    expected = reference_fvd(features(real), features(fake))
    assert expected > 0.05
    assert fvd(detector, real, fake, batch_size=4) == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="at least 2 clips per side"):
        fvd(detector, real[:1], fake)


def test_fvd_pipeline_with_torchscript_file(detector_file):
    detector = load_i3d(detector_file)
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (6, 4, 8, 8, 3), generator=g, dtype=torch.uint8)
    assert fvd(detector, real, real) == pytest.approx(0.0, abs=1e-6)
    brighter = (real.int() + 60).clamp(0, 255).to(torch.uint8)
    assert fvd(detector, real, brighter) > 0.1


def test_skip_reason_and_bad_files(tmp_path, detector_file):
    assert "no I3D TorchScript file" in skip_reason(None)
    assert "does not exist" in skip_reason(tmp_path / "missing.pt")
    assert skip_reason(detector_file) is None
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_i3d(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="junk.pt"):
        load_i3d(junk)


def test_fvd_rejects_bad_shapes(detector_file):
    detector = load_i3d(detector_file)
    with pytest.raises(ValueError, match="uint8"):
        fvd(detector, torch.zeros(2, 3, 4, 4, 3), torch.zeros(2, 3, 4, 4, 3))
    with pytest.raises(ValueError, match="equal length"):
        u8 = torch.uint8
        fvd(detector, torch.zeros(2, 3, 4, 4, 3, dtype=u8), torch.zeros(2, 4, 4, 4, 3, dtype=u8))
