"""FVD: Fréchet distance maths, and the pipeline with a tiny TorchScript stand-in for I3D."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.fvd import frechet_distance, fvd, load_i3d, skip_reason


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


def test_frechet_distance_identical_is_zero():
    feats = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_shifted_equal_covariances_is_squared_mean_gap():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, 4, generator=g, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    # same samples shifted: covariances equal, so d^2 = |shift|^2 exactly
    assert frechet_distance(a, a + shift) == pytest.approx(shift.pow(2).sum().item(), rel=1e-6)


def test_frechet_distance_known_gaussians():
    # 1-D: d^2 = (m1 - m2)^2 + s1^2 + s2^2 - 2 s1 s2 = (m1 - m2)^2 + (s1 - s2)^2
    a = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)  # mean 0, var 2
    b = torch.tensor([[1.0], [5.0]], dtype=torch.float64)  # mean 3, var 8
    expected = 9.0 + (2**0.5 - 8**0.5) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


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
