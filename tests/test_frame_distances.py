"""FID and LPIPS from user-supplied TorchScript networks (tiny stand-ins; nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.frame_distances import fid, load_network, lpips, skip_reason


class MeanColour(nn.Module):
    """Stands in for Inception: per-channel means and standard deviations of uint8 (N, 3, H, W) frames."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        return torch.cat((x.mean(dim=(2, 3)), x.std(dim=(2, 3))), dim=1)


class PixelDistance(nn.Module):
    """Stands in for LPIPS: mean squared difference of (N, 3, H, W) frames in [-1, 1], (N, 1, 1, 1)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).pow(2).mean(dim=(1, 2, 3), keepdim=True)


def frames(seed: int, n: int = 12) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 8, 8, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def test_fid_is_the_frechet_distance_of_the_networks_features(tmp_path):
    from scipy.linalg import sqrtm

    path = tmp_path / "features.pt"
    torch.jit.script(MeanColour()).save(str(path))
    net = load_network("FID", path)
    real, fake = frames(0), (frames(1).int() // 3 + 100).to(torch.uint8)
    a, b = (MeanColour()(x.permute(0, 3, 1, 2)).double() for x in (real, fake))
    ca, cb = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    expected = (
        (a.mean(0) - b.mean(0)).pow(2).sum().item()
        + ca.trace()
        + cb.trace()
        - 2 * sqrtm(ca @ cb).real.trace()
    )
    assert fid(net, real, fake, batch_size=5) == pytest.approx(expected, rel=1e-3)
    assert fid(net, real, real) == pytest.approx(0.0, abs=1e-4)


def test_lpips_is_the_mean_distance_over_pairs(tmp_path):
    path = tmp_path / "lpips.pt"
    torch.jit.script(PixelDistance()).save(str(path))
    net = load_network("LPIPS", path)
    real, fake = frames(2), frames(3)
    signed = lambda x: x.float() / 127.5 - 1.0
    expected = (signed(fake) - signed(real)).pow(2).mean().item()
    assert lpips(net, real, fake, batch_size=5) == pytest.approx(expected, rel=1e-5)
    assert lpips(net, real, real) == 0.0


def test_without_a_network_one_line_says_why(tmp_path):
    assert skip_reason("FID", None).startswith(
        "FID skipped: no feature network given (set eval.fid_weights=PATH"
    )
    assert "eval.lpips_weights=" in skip_reason("LPIPS", tmp_path / "nope.pt")
    assert skip_reason("FID", __file__) is None
    with pytest.raises(FileNotFoundError, match="FID network not found"):
        load_network("FID", tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_text("not torchscript")
    with pytest.raises(ValueError, match="not a loadable TorchScript file for LPIPS"):
        load_network("LPIPS", tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="paired uint8"):
        lpips(PixelDistance(), frames(0), frames(1, n=3))


def test_evaluation_logs_fid_and_lpips_of_the_generated_frames(tmp_path, caplog):
    """EvalVideoCallback with the two files: `test/fid`, `test/lpips` over the frames generated after the
    real context (black, against bright real ones); without them one line each says why not."""
    import logging

    from common.callbacks import EvalVideoCallback
    from tests.test_callbacks import WithWorldModel, loader, make_trainer

    torch.jit.script(MeanColour()).save(str(tmp_path / "fid.pt"))
    torch.jit.script(PixelDistance()).save(str(tmp_path / "lpips.pt"))
    callback = EvalVideoCallback(
        num_videos=0, horizon=3, fvd_num_videos=3, fid_weights=str(tmp_path / "fid.pt"),
        lpips_weights=str(tmp_path / "lpips.pt"),
    )  # fmt: skip
    (metrics,) = make_trainer(tmp_path, callback).test(WithWorldModel(), loader())
    assert metrics["test/fid"] > 0.01 and metrics["test/lpips"] > 0.1 and "test/fvd" not in metrics
    with caplog.at_level(logging.INFO):
        (metrics,) = make_trainer(tmp_path, EvalVideoCallback(num_videos=0)).test(WithWorldModel(), loader())
    assert "test/fid" not in metrics and "test/lpips" not in metrics
    assert any("LPIPS skipped: no feature network given" in r.message for r in caplog.records)
