import pytest

from common.optim import cosine_factor


def test_cosine_factor_runs_from_lr_to_min_lr():
    values = [cosine_factor(s, 10, 110, 1e-3, 1e-4) for s in range(0, 130, 5)]
    assert values[0] == pytest.approx(1.0) and cosine_factor(10, 10, 110, 1e-3, 1e-4) == pytest.approx(1.0)
    assert cosine_factor(60, 10, 110, 1e-3, 1e-4) == pytest.approx(0.55)  # halfway: (1e-3 + 1e-4) / 2
    assert cosine_factor(110, 10, 110, 1e-3, 1e-4) == pytest.approx(0.1)
    assert cosine_factor(500, 10, 110, 1e-3, 1e-4) == pytest.approx(0.1)  # stays at min_lr
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert cosine_factor(70, 10, 110, 1e-3, 1e-3) == pytest.approx(1.0)  # min_lr = lr: constant
