import pytest

from common.optim import cosine_factor, warmup_cosine


def test_cosine_factor_runs_from_lr_to_min_lr():
    values = [cosine_factor(s, 10, 110, 1e-3, 1e-4) for s in range(0, 130, 5)]
    assert values[0] == pytest.approx(1.0) and cosine_factor(10, 10, 110, 1e-3, 1e-4) == pytest.approx(1.0)
    assert cosine_factor(60, 10, 110, 1e-3, 1e-4) == pytest.approx(0.55)  # halfway: (1e-3 + 1e-4) / 2
    assert cosine_factor(110, 10, 110, 1e-3, 1e-4) == pytest.approx(0.1)
    assert cosine_factor(500, 10, 110, 1e-3, 1e-4) == pytest.approx(0.1)  # stays at min_lr
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert cosine_factor(70, 10, 110, 1e-3, 1e-3) == pytest.approx(1.0)  # min_lr = lr: constant


def test_warmup_cosine_matches_each_family_schedule():
    genie = warmup_cosine(10, 110, 1e-3, 1e-4)
    assert [genie(s) for s in (0, 9)] == pytest.approx([0.1, 1.0])
    assert genie(110) == pytest.approx(0.1)
    diamond = warmup_cosine(100, 1000, 1e-4, 1e-4, offset=0)  # DIAMOND: from 0, then constant
    assert [diamond(s) for s in (0, 50, 100, 999)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    oasis = [warmup_cosine(w, w + 1, 1e-4, 1e-4) for w in (0, 4)]
    assert [oasis[0](s) for s in (0, 3)] == pytest.approx([1.0, 1.0])  # no warm-up
    assert [oasis[1](s) for s in (0, 3, 4, 50)] == pytest.approx([0.25, 1.0, 1.0, 1.0])


def test_adamw_warmup_cosine_builds_each_familys_optimiser():
    from types import SimpleNamespace

    import torch

    from common.optim import adamw_warmup_cosine

    w, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.zeros(2))
    run = SimpleNamespace(trainer=SimpleNamespace(estimated_stepping_batches=110))

    genie = adamw_warmup_cosine(run, [w, b], 1e-3, [0.9, 0.9], 1e-4, 10, min_lr=1e-4)
    opt, sched = genie["optimizer"], genie["lr_scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and genie["lr_scheduler"]["interval"] == "step"
    assert opt.defaults["betas"] == (0.9, 0.9) and opt.defaults["weight_decay"] == 1e-4
    factor = sched["scheduler"].lr_lambdas[0]
    assert [factor(s) for s in (0, 9, 60, 110)] == pytest.approx(
        [0.1, 1.0, 0.55, 0.1]
    )  # decays by the run's end

    oasis = adamw_warmup_cosine(None, [w], 1e-4, (0.9, 0.99), 2e-3, 4)  # constant: needs no trainer
    factor = oasis["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [factor(s) for s in (0, 3, 4, 10**6)] == pytest.approx([0.25, 1.0, 1.0, 1.0])

    groups = [{"params": [w], "weight_decay": 1e-2}, {"params": [b], "weight_decay": 0.0}]
    diamond = adamw_warmup_cosine(run, groups, 1e-4, [0.9, 0.999], 1e-2, 100, eps=1e-6, offset=0)
    opt = diamond["optimizer"]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-2, 0.0] and opt.defaults["eps"] == 1e-6
    factor = diamond["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [factor(s) for s in (0, 50, 100, 999)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.0]
    )  # from 0, then constant
