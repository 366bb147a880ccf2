"""ΔtPSNR (Genie §3), shared by Genie (latent actions) and Oasis (recorded actions): the set-PSNR
difference on a known answer, and the generation protocol against an oracle world model."""

import math

import pytest
import torch

from common.delta_psnr import delta_psnr, derive_delta_psnr
from common.metrics import SetPSNR, mse, psnr_of_mse
from common.world_model import Step
from genie.module import GenieDynamicsModule
from oasis.module import OasisDiTModule


@pytest.mark.parametrize("derive", [derive_delta_psnr, GenieDynamicsModule.derive_set_metrics,
                                    OasisDiTModule.derive_set_metrics])  # fmt: skip
def test_delta_psnr_known_answer(derive):
    """Errors 0.1 (real actions) and 0.2 (random) per pixel: ΔtPSNR = 10·log10(0.04 / 0.01) = 6.02 dB."""
    meter = SetPSNR()
    meter.add("test/delta_psnr_t4/inferred", torch.full((5,), 0.01))
    meter.add("test/delta_psnr_t4/random", torch.full((5,), 0.04))
    meter.add("test/psnr_next", torch.full((5,), 0.01))
    out = derive(meter.compute()) if derive is derive_delta_psnr else derive(None, meter.compute())
    assert set(out) == {"test/delta_psnr_t4", "test/psnr_next"}
    assert out["test/delta_psnr_t4"] == pytest.approx(10 * math.log10(4.0), abs=1e-6)


class OracleWorldModel:
    """Returns the real frame while every action so far equals the real one, else the real frame + 40."""

    num_actions = 1000

    def __init__(self, frames, actions):
        self.frames, self.actions = frames, actions

    def reset(self, frames, actions=None):
        assert frames.shape[1] == 1, "ΔtPSNR prompts with the first frame only"
        self.t, self.right = 0, torch.ones(frames.shape[0], dtype=torch.bool)

    def step(self, actions):
        self.right &= actions == self.actions[:, self.t]
        self.t += 1
        real = self.frames[:, self.t]
        wrong = (real.int() + 40).clamp(max=255).to(torch.uint8)
        return Step(frames=torch.where(self.right[:, None, None, None], real, wrong))


def test_delta_psnr_oracle():
    frames = torch.randint(0, 200, (3, 5, 8, 8, 3), dtype=torch.uint8)
    actions = torch.randint(1000, (3, 4))
    wm = OracleWorldModel(frames, actions)
    got = delta_psnr(wm, frames, actions, t=4, generator=torch.Generator().manual_seed(0))
    wrong = (frames[:, 3].int() + 40).clamp(max=255).to(torch.uint8)
    expected = psnr_of_mse(torch.tensor(0.0)) - psnr_of_mse(mse(wrong, frames[:, 3]).mean())
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="needs clips of >= 6 frames"):
        delta_psnr(wm, frames, actions, t=6)
