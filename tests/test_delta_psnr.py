"""ΔtPSNR (Genie §3), shared by Genie (latent actions) and Oasis (recorded actions): the set-PSNR
difference on a known answer, and the generation protocol against an oracle world model."""

import math

import pytest
import torch

from common.delta_psnr import bootstrap_delta_psnr, delta_psnr, derive_delta_psnr
from common.evaluation import evaluate_rollout
from common.metrics import SetPSNR, mse, psnr_of_mse
from common.set_psnr_logging import SetPSNRLogging
from common.world_model import Step
from genie.module import GenieDynamicsModule
from oasis.module import OasisDiTModule
from tests.test_shuffled_actions import ActionShiftModel, clips


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


def _binomial_quantile(n: int, q: float) -> int:
    """Smallest k with P(Binomial(n, 1/2) <= k) >= q."""
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.comb(n, k) / 2**n
        if cdf >= q:
            return k
    return n


def test_bootstrap_interval_known_answer():
    """100 clips, real-action MSE 0.01 each, random-action MSE 0.04 on half and 0.02 on the other half.
    A resample draws K ~ Binomial(100, 1/2) clips of 0.04, so its ΔtPSNR is 10·log10((0.02 + K·0.0002)
    / 0.01), increasing in K: the 5th / 95th percentiles are those of K (42 and 58), exactly."""
    inferred = torch.full((100,), 0.01)
    random = torch.tensor([0.04] * 50 + [0.02] * 50)
    low, high = bootstrap_delta_psnr(inferred, random, resamples=10_000, seed=0)
    at = lambda k: 10 * math.log10((0.02 + k * 0.0002) / 0.01)  # noqa: E731
    assert (_binomial_quantile(100, 0.05), _binomial_quantile(100, 0.95)) == (42, 58)
    assert low == pytest.approx(at(42), abs=1e-6) and high == pytest.approx(
        at(58), abs=1e-6
    )  # K +- 1: 0.03 dB
    assert low < at(50) < high  # the point value (all 100 clips) lies inside
    assert bootstrap_delta_psnr(inferred, random, resamples=10_000, seed=0) == (low, high), "seeded"


def test_bootstrap_interval_collapses_on_identical_clips():
    """Every resample of identical clips is the whole set: the interval is the point value."""
    low, high = bootstrap_delta_psnr(torch.full((7,), 0.01), torch.full((7,), 0.04), resamples=1000)
    assert low == pytest.approx(10 * math.log10(4.0)) and high == pytest.approx(10 * math.log10(4.0))
    with pytest.raises(ValueError, match="at least 1000 resamples"):
        bootstrap_delta_psnr(torch.ones(3), torch.ones(3), resamples=10)


def test_level_bootstrap_resamples_whole_levels():
    """100 levels of 3 identical clips (the known-answer set, each clip three times): resampling levels
    draws K ~ Binomial(100, 1/2) levels of 0.04, the interval of the 100-clip set; resampling the 300
    clips one by one would treat them as independent and return a narrower interval."""
    inferred = torch.full((300,), 0.01)
    random = torch.tensor([0.04] * 150 + [0.02] * 150)
    levels = torch.arange(100).repeat_interleave(3)
    low, high = bootstrap_delta_psnr(inferred, random, resamples=10_000, seed=0, groups=levels)
    at = lambda k: 10 * math.log10((0.02 + k * 0.0002) / 0.01)  # noqa: E731
    assert low == pytest.approx(at(42), abs=1e-6) and high == pytest.approx(at(58), abs=1e-6)
    clip_low, clip_high = bootstrap_delta_psnr(inferred, random, resamples=10_000, seed=0)
    assert clip_high - clip_low < 0.7 * (high - low)  # about 1/sqrt(3) as wide
    unequal = torch.tensor([0] * 5 + [1])  # levels of unequal size: set PSNR of the drawn clips' mean MSE
    one = bootstrap_delta_psnr(torch.full((6,), 0.01), torch.tensor([0.02] * 5 + [0.08]), groups=unequal)
    assert one[0] == pytest.approx(10 * math.log10(2.0)) and one[1] == pytest.approx(10 * math.log10(8.0))


class Meter(SetPSNRLogging):
    """The logging mixin alone: what it would log, with a stand-in trainer of one process."""

    def __init__(self):
        self.logged = {}
        self.trainer = type("T", (), {"world_size": 1})()

    def log(self, name, value, **_):
        self.logged[name] = value


def test_mixin_logs_bounds_and_keeps_per_clip_values():
    """The epoch's ΔtPSNR gets `_low` / `_high` beside it; the per-clip errors and seeds stay readable."""
    m = Meter()
    m.on_test_epoch_start()
    inferred, random = torch.tensor([0.01, 0.02, 0.01, 0.03]), torch.tensor([0.04, 0.02, 0.05, 0.06])
    m.add_delta_psnr("test/delta_psnr_t4", (inferred[:2], random[:2]), seeds=torch.tensor([5, 5]))
    m.add_delta_psnr("test/delta_psnr_t4", (inferred[2:], random[2:]), seeds=torch.tensor([6, 7]))
    m.on_test_epoch_end()
    point = 10 * math.log10(random.mean() / inferred.mean())
    assert m.logged["test/delta_psnr_t4"] == pytest.approx(point, abs=1e-5)
    low, high = bootstrap_delta_psnr(inferred, random)
    assert m.logged["test/delta_psnr_t4_low"] == pytest.approx(low)
    assert m.logged["test/delta_psnr_t4_high"] == pytest.approx(high)
    assert low <= point <= high
    low, high = bootstrap_delta_psnr(inferred, random, groups=torch.tensor([5, 5, 6, 7]))
    assert m.logged["test/delta_psnr_t4_low_levels"] == pytest.approx(low)
    assert m.logged["test/delta_psnr_t4_high_levels"] == pytest.approx(high)
    record = m.eval_records["test/delta_psnr_t4"]
    assert record["mse_inferred"] == pytest.approx(inferred.tolist())
    assert record["mse_random"] == pytest.approx(random.tolist())
    assert record["seeds"] == [5, 5, 6, 7] and record["clips"] == 4 and record["levels"] == 3
    assert (record["low_levels"], record["high_levels"]) == (low, high)
    assert record["delta_psnr"] == pytest.approx((10 * torch.log10(random / inferred)).tolist(), abs=1e-4)


def test_mixin_logs_a_paired_difference_with_its_interval():
    """psnr_next - copy-last from per-clip errors: the set-PSNR difference, its bootstrap interval over clips,
    and the per-clip values under model / baseline names (not the ΔtPSNR's)."""
    m = Meter()
    m.on_test_epoch_start()
    model, copy = torch.tensor([0.01, 0.02, 0.01, 0.04]), torch.tensor([0.02, 0.02, 0.05, 0.03])
    m.add_paired_errors(
        "test/psnr_next_minus_copy_last", (model[:3], copy[:3]), seeds=torch.tensor([1, 1, 2])
    )
    m.add_paired_errors("test/psnr_next_minus_copy_last", (model[3:], copy[3:]), seeds=torch.tensor([3]))
    m.on_test_epoch_end()
    point = 10 * math.log10(copy.mean() / model.mean())  # set PSNR of the model - set PSNR of copy-last
    assert m.logged["test/psnr_next_minus_copy_last"] == pytest.approx(point, abs=1e-5)
    low, high = bootstrap_delta_psnr(model, copy)
    assert m.logged["test/psnr_next_minus_copy_last_low"] == pytest.approx(low)
    assert m.logged["test/psnr_next_minus_copy_last_high"] == pytest.approx(high)
    assert low < point < high
    record = m.eval_records["test/psnr_next_minus_copy_last"]
    assert record["mse_model"] == pytest.approx(model.tolist()) and record["mse_baseline"] == pytest.approx(
        copy.tolist()
    )
    assert "delta_psnr" not in record and record["levels"] == 3


class SeededActionShiftModel(ActionShiftModel):
    """ActionShiftModel with the rest of what evaluate_rollout calls (recorded actions, a seed)."""

    latent_actions = False

    def seed(self, seed):
        pass


def test_evaluation_logs_next_frame_differences_with_intervals():
    """evaluate_rollout on a model that follows its actions exactly: next frame far above copy-last and
    above the shuffled-action frame, both with an interval that excludes 0."""
    frames, actions = clips()
    m = Meter()
    m.on_test_epoch_start()
    batch = {"frames": frames, "actions": actions}
    evaluate_rollout(SeededActionShiftModel(), batch, torch.Generator().manual_seed(0), context=2, horizon=1,
                     prefix="test", meter=m)  # fmt: skip
    m.on_test_epoch_end()
    for name in ("test/psnr_next_minus_copy_last", "test/psnr_next_minus_shuffled"):
        assert m.logged[f"{name}_low"] > 20, name  # the model is exact; copy-last and shuffled are not
        assert m.logged[f"{name}_low"] <= m.logged[name] <= m.logged[f"{name}_high"]
    assert m.logged["test/psnr_next_minus_copy_last"] == pytest.approx(
        m.logged["test/psnr_next"] - m.logged["test/psnr_copy_last"], abs=1e-4
    )
