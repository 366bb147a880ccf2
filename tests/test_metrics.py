import math

import pytest
import torch

from common.metrics import SetPSNR, mse, psnr, rollout_metrics, ssim
from common.world_model import Step


def test_psnr_known_value():
    target = torch.full((2, 4, 4, 3), 0.5)
    torch.testing.assert_close(psnr(target + 0.1, target), torch.full((2,), 20.0))
    assert psnr(target, target).tolist() == pytest.approx([100.0, 100.0])


def test_ssim_identical_is_one_and_noise_lower():
    x = torch.rand(3, 16, 16, 3)
    torch.testing.assert_close(ssim(x, x), torch.ones(3))
    assert (ssim((x + 0.3 * torch.rand_like(x)).clamp(0, 1), x) < 0.95).all()


def reference_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Wang et al. 2004 written out: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data range 1, at
    every pixel of the reflect-padded frame, mean over pixels and channels. x, y (N, H, W, C) in [0, 1]."""
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11)
    pad = lambda t: torch.nn.functional.pad(t.double().permute(0, 3, 1, 2), (5, 5, 5, 5), mode="reflect")
    x, y = pad(x), pad(y)
    blur = lambda t: torch.nn.functional.conv2d(t, w, groups=3)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def test_ssim_is_wang_et_al_gaussian_window():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 24, 20, 3, generator=g)
    pred = (target + 0.2 * torch.randn(4, 24, 20, 3, generator=g)).clamp(0, 1)
    torch.testing.assert_close(ssim(pred, target), reference_ssim(pred, target), atol=1e-5, rtol=1e-5)
    frames = (pred * 255).round().to(torch.uint8)  # uint8 frames are scaled to [0, 1] first
    torch.testing.assert_close(
        ssim(frames, target), reference_ssim(frames.float() / 255, target), atol=1e-5, rtol=1e-5
    )


def test_set_psnr_is_torchmetrics_psnr_over_the_set():
    """SetPSNR of per-image MSEs added batch by batch = torchmetrics' PeakSignalNoiseRatio (data range 1,
    its default reduction) updated with the same images: both pool squared errors before the log."""
    from torchmetrics.image import PeakSignalNoiseRatio

    g = torch.Generator().manual_seed(1)
    meter, reference = SetPSNR(), PeakSignalNoiseRatio(data_range=1.0)
    for n in (3, 1, 5):
        target = torch.randint(0, 256, (n, 8, 8, 3), generator=g, dtype=torch.uint8)
        pred = (
            (target.int() + torch.randint(-20, 21, target.shape, generator=g)).clamp(0, 255).to(torch.uint8)
        )
        pred[0] = target[0]  # an exact copy scores no 100 dB of its own in a set PSNR
        meter.add("next", mse(pred, target))
        reference.update(pred.float() / 255, target.float() / 255)
    assert meter.compute()["next"] == pytest.approx(reference.compute().item(), abs=1e-4)


def test_set_psnr_pools_errors_not_decibels():
    """One exact copy and one frame off by 0.1: set PSNR = PSNR of mean MSE (23.01 dB), not (100 + 20) / 2."""
    target = torch.full((2, 4, 4, 3), 0.5)
    pred = target.clone()
    pred[1] += 0.1
    meter = SetPSNR()
    meter.add("a", mse(pred[:1], target[:1]))
    meter.add("a", mse(pred[1:], target[1:]))
    got = meter.compute()["a"]
    assert got == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-4)
    assert psnr(pred, target).mean().item() == pytest.approx(60.0, abs=1e-3)
    doubled = meter.compute(reduce=lambda t: 2 * t)["a"]  # a DDP sum of equal ranks: same mean
    assert doubled == pytest.approx(got, abs=1e-9)
    meter.reset()
    assert meter.compute() == {}


class CopyLast:
    """A world model that repeats the last context frame."""

    def reset(self, frames, actions=None):
        self.last = frames[:, -1]

    def step(self, actions):
        return Step(frames=self.last)


def test_rollout_metrics_copy_model_equals_baseline():
    frames = torch.randint(0, 256, (3, 7, 8, 8, 3), dtype=torch.uint8)
    actions = torch.zeros(3, 7, dtype=torch.long)
    meter = SetPSNR()
    result = rollout_metrics(CopyLast(), frames, actions, 2, 5, "test", meter, horizons={1, 5})
    extra, generated = result.ssims, result.generated
    assert generated.shape == (3, 5, 8, 8, 3)
    assert set(extra) == {"test/ssim_next", "test/ssim_copy_last"}
    assert extra["test/ssim_next"] == extra["test/ssim_copy_last"]  # the model is the baseline
    values = meter.compute()
    assert set(values) == {
        "test/psnr_next", "test/psnr_copy_last", "test/rollout_psnr_k1", "test/rollout_copy_last_k1",
        "test/rollout_psnr_k5", "test/rollout_copy_last_k5",
    }  # fmt: skip
    assert values["test/psnr_next"] == values["test/psnr_copy_last"]
    assert torch.equal(result.next_errors, result.copy_errors)
    # step 1's copy-last error: the last context frame against the first target frame
    assert torch.equal(result.copy_errors, mse(frames[:, 1], frames[:, 2]))
    expected = 10 * torch.log10(1 / mse(frames[:, 1], frames[:, 6]).double().mean()).item()
    assert values["test/rollout_copy_last_k5"] == pytest.approx(expected, abs=1e-6)


def test_ssim_is_the_same_inside_a_bf16_autocast_region():
    """A bf16-mixed stage tests under CPU autocast: SSIM must still be computed in float32 (in bf16 its
    variances cancel to noise: a next-frame SSIM of -0.16 was logged where float32 gives 0.78)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (4, 32, 32, 3), generator=g, dtype=torch.uint8)
    b = (a.int() + torch.randint(-12, 13, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    plain = ssim(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ssim(a, b)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain)
