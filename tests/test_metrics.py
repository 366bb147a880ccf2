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
    extra, generated = rollout_metrics(CopyLast(), frames, actions, 2, 5, "test", meter, horizons={1, 5})
    assert generated.shape == (3, 5, 8, 8, 3)
    assert set(extra) == {"test/ssim_next"}
    values = meter.compute()
    assert set(values) == {
        "test/psnr_next", "test/psnr_copy_last", "test/rollout_psnr_k1", "test/rollout_copy_last_k1",
        "test/rollout_psnr_k5", "test/rollout_copy_last_k5",
    }  # fmt: skip
    assert values["test/psnr_next"] == values["test/psnr_copy_last"]
    expected = 10 * torch.log10(1 / mse(frames[:, 1], frames[:, 6]).double().mean()).item()
    assert values["test/rollout_copy_last_k5"] == pytest.approx(expected, abs=1e-6)
