"""DIAMOND networks: EDM preconditioning, sigma schedule, conditioning, learning, world-model interface."""

from __future__ import annotations

import math

import pytest
import torch

from common.frames import to_signed
from diamond.denoiser import Denoiser, quantize
from diamond.module import DiamondModule
from diamond.reward_end import RewEndModel
from diamond.sampler import DiffusionSampler, karras_sigmas
from diamond.unet import InnerModel

TINY = dict(
    num_actions=3,
    frame_size=16,
    cond_channels=16,
    depths=[1, 1],
    channels=[8, 8],
    attn_depths=[False, False],
    rew_lstm_dim=8,
    rew_cond_channels=8,
    rew_depths=[1, 1],
    rew_channels=[8, 8],
    rew_attn_depths=[False, False],
)


def tiny_inner(num_actions: int = 3, seed: int = 0) -> InnerModel:
    torch.manual_seed(seed)
    return InnerModel(3, 4, 16, [1, 1], [8, 16], [False, False], num_actions)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """DIAMOND zero-initialises output convs: randomise all parameters so outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(1, p[0].numel())))
    return model


def test_edm_preconditioning_hand_computed():
    den = Denoiser(tiny_inner(), sigma_data=0.5, sigma_offset_noise=0.3)
    cs = den.conditioners(torch.tensor([1.0, 0.1]))
    for i, sigma in enumerate((1.0, 0.1)):
        s2 = sigma**2 + 0.3**2
        assert cs.c_in[i].item() == pytest.approx(1 / math.sqrt(s2 + 0.25), rel=1e-6)
        assert cs.c_skip[i].item() == pytest.approx(0.25 / (s2 + 0.25), rel=1e-6)
        assert cs.c_out[i].item() == pytest.approx(math.sqrt(s2) * 0.5 / math.sqrt(s2 + 0.25), rel=1e-6)
        assert cs.c_noise[i].item() == pytest.approx(math.log(math.sqrt(s2)) / 4, rel=1e-6)
    assert cs.c_in.shape == (2, 1, 1, 1) and cs.c_noise.shape == (2,)
    # 0-dim sigma (the sampler's) -> broadcastable conditioners and a (1,) noise level
    cs0 = den.conditioners(torch.tensor(2.0))
    assert cs0.c_in.shape == (1, 1, 1, 1) and cs0.c_noise.shape == (1,)


def test_edm_without_offset_noise_is_karras():
    den = Denoiser(tiny_inner(), sigma_data=0.5, sigma_offset_noise=0.0)
    cs = den.conditioners(torch.tensor([0.5]))
    assert cs.c_skip.item() == pytest.approx(0.5)  # sigma == sigma_data -> c_skip = 1/2
    assert cs.c_out.item() == pytest.approx(0.5 / math.sqrt(2), rel=1e-6)


def test_quantize_truncates_to_the_8bit_grid():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0, -0.5])
    q = quantize(x)
    k = (q + 1) / 2 * 255
    torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)
    assert q[0] == -1 and q[1] == -1 and q[4] == 1 and q[5] == 1
    assert q[2].item() == pytest.approx(127 / 255 * 2 - 1)  # 127.5 truncates to 127


def test_karras_sigmas():
    s = karras_sigmas(3, 2e-3, 5.0, 7)
    assert s.shape == (4,)
    torch.testing.assert_close(s, torch.tensor([5.0, 0.2830817, 2e-3, 0.0]), atol=1e-6, rtol=1e-5)
    s = karras_sigmas(10, 2e-3, 5.0, 7)
    assert (s[1:] < s[:-1]).all() and s[-1] == 0
    lin = karras_sigmas(5, 1.0, 5.0, 1)  # rho = 1: evenly spaced
    torch.testing.assert_close(lin[:-1], torch.linspace(5, 1, 5))


def test_action_conditioning_changes_the_output():
    den = Denoiser(randomize(tiny_inner()), 0.5, 0.3)
    x = torch.randn(2, 3, 16, 16)
    obs = torch.rand(2, 12, 16, 16) * 2 - 1
    sigma = torch.tensor([0.7, 0.7])
    a0 = torch.zeros(2, 4, dtype=torch.long)
    a1 = a0.clone()
    a1[:, -1] = 2
    cs = den.conditioners(sigma)
    with torch.no_grad():
        y0, y1 = den.model_output(x, obs, a0, cs), den.model_output(x, obs, a1, cs)
        y0b = den.model_output(x, obs, a0, cs)
    assert torch.equal(y0, y0b)
    assert (y0 - y1).abs().max() > 1e-3
    # past frames and noise level condition too
    with torch.no_grad():
        assert (den.model_output(x, obs.flip(0), a0, cs) - y0).abs().max() > 1e-3
        assert (den.model_output(x, obs, a0, den.conditioners(sigma * 3)) - y0).abs().max() > 1e-3


def test_unet_handles_sizes_not_divisible_by_the_downsampling():
    inner = randomize(tiny_inner())
    out = inner(
        torch.randn(1, 3, 10, 14),
        torch.zeros(1),
        torch.randn(1, 12, 10, 14),
        torch.zeros(1, 4, dtype=torch.long),
    )
    assert out.shape == (1, 3, 10, 14)


def test_bad_action_shape_is_a_clear_error():
    inner = tiny_inner()
    with pytest.raises(ValueError, match=r"act must be \(B, 4\)"):
        inner(
            torch.randn(1, 3, 8, 8),
            torch.zeros(1),
            torch.randn(1, 12, 8, 8),
            torch.zeros(1, 3, dtype=torch.long),
        )


def test_denoiser_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    den = Denoiser(tiny_inner(), 0.5, 0.3)
    nxt = torch.rand(4, 3, 16, 16) * 2 - 1
    obs = nxt.repeat(1, 4, 1, 1)
    act = torch.randint(0, 3, (4, 4))
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0])
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = den.loss(nxt, obs, act, sigma, generator=torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_reward_end_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    rm = RewEndModel(3, 16, 3, 8, 16, [1, 1], [8, 8], [False, False])
    obs = torch.rand(2, 5, 3, 16, 16) * 2 - 1
    nxt = torch.rand(2, 5, 3, 16, 16) * 2 - 1
    act = torch.randint(0, 3, (2, 5))
    rew = torch.tensor([[0, 1, 0, -1, 0], [0, 0, 2, 0, 0]], dtype=torch.float)
    end = torch.tensor([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    opt = torch.optim.Adam(rm.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = rm.loss(obs, act, nxt, rew, end)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_reward_end_model_without_the_next_frame():
    """next_frame=False: the logits do not depend on o_{t+1} but still on the frame and the action; the
    weights are those of DIAMOND's model (a state dict moves between the two)."""
    torch.manual_seed(0)
    seen = randomize(RewEndModel(3, 16, 3, 8, 16, [1, 1], [8, 8], [False, False]))
    hidden = RewEndModel(3, 16, 3, 8, 16, [1, 1], [8, 8], [False, False], next_frame=False)
    hidden.load_state_dict(seen.state_dict())
    obs, nxt, other = (torch.rand(2, 5, 3, 16, 16) * 2 - 1 for _ in range(3))
    act = torch.randint(0, 3, (2, 5))
    out = hidden(obs, act, nxt)[0]
    assert torch.equal(out, hidden(obs, act, other)[0])
    assert torch.allclose(out, seen(obs, act, obs)[0])
    assert not torch.allclose(seen(obs, act, nxt)[0], seen(obs, act, other)[0])
    assert not torch.allclose(out, hidden(obs, (act + 1) % 3, nxt)[0])
    assert not torch.allclose(out, hidden(other, act, nxt)[0])
    module = DiamondModule(**TINY, rew_next_frame=False)
    assert module.rew_end_model.next_frame is False and DiamondModule(**TINY).rew_end_model.next_frame


def test_sampler_euler_and_heun():
    den = Denoiser(randomize(tiny_inner()), 0.5, 0.3)
    prev = torch.rand(2, 4, 3, 16, 16) * 2 - 1
    act = torch.randint(0, 3, (2, 4))
    calls = []
    orig = den.denoise

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    den.denoise = counting
    x, traj = DiffusionSampler(den, num_steps=3, order=1).sample(
        prev, act, generator=torch.Generator().manual_seed(0)
    )
    assert x.shape == (2, 3, 16, 16) and len(traj) == 4 and len(calls) == 3
    # the last step lands on D (sigma -> 0): values on the 8-bit grid
    k = (x + 1) / 2 * 255
    torch.testing.assert_close(k, k.round(), atol=1e-3, rtol=0)
    calls.clear()
    x2, _ = DiffusionSampler(den, num_steps=3, order=2).sample(
        prev, act, generator=torch.Generator().manual_seed(0)
    )
    assert len(calls) == 5  # Heun: 2 evaluations per step except the last
    with pytest.raises(ValueError, match="order"):
        DiffusionSampler(den, order=3)


def test_world_model_reset_step_and_errors():
    module = DiamondModule(**TINY)
    wm = module.world_model()
    assert wm.context_length == 4 and wm.frame_shape == (16, 16, 3) and wm.num_actions == 3
    with pytest.raises(RuntimeError, match="reset"):
        wm.step(torch.tensor([0]))
    frames = torch.randint(0, 256, (2, 6, 16, 16, 3), dtype=torch.uint8)
    wm.reset(frames, torch.randint(0, 3, (2, 6)))
    step = wm.step(torch.tensor([0, 2]))
    assert step.frames.shape == (2, 16, 16, 3) and step.frames.dtype == torch.uint8
    assert step.reward.shape == (2,) and set(step.reward.tolist()) <= {-1.0, 0.0, 1.0}
    assert step.done.dtype == torch.bool and step.done.shape == (2,)
    wm.reset(frames[:, :4])  # no actions: zeros
    wm.step(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="action 3 out of range"):
        wm.step(torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="frames must be"):
        wm.reset(frames[:, :2])


def loader(batches: list[dict[str, torch.Tensor]]) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(batches, batch_size=None)


def synthetic_batches(n: int, b: int = 2, t: int = 7, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        terminals = torch.zeros(b, t, dtype=torch.bool)
        terminals[0, -1] = True  # the first clip ends its episode
        out.append(
            {
                "frames": torch.randint(0, 256, (b, t, 16, 16, 3), dtype=torch.uint8, generator=g),
                "actions": torch.randint(0, 3, (b, t), generator=g),
                "rewards": torch.randint(-1, 2, (b, t), generator=g).float(),
                "terminals": terminals,
            }
        )
    return out


def test_terminal_transition_reaches_the_end_head():
    module = DiamondModule(**TINY)
    out = module.losses(synthetic_batches(1)[0])
    # 6 transitions with a next frame per clip, plus the terminal last transition of clip 0
    assert out["target_end"].shape == (2 * 6 + 1,) and out["target_end"].sum() == 1


def test_rew_event_weight_weighs_the_event_classes():
    """rew_event_weight w: the reward and end cross-entropies weigh the event classes (-1, +1; end) w, the
    common class 1 (a weighted mean); w = 1 is DIAMOND's unweighted loss. Same weights, same batch."""
    import torch.nn.functional as F

    batch = synthetic_batches(1)[0]
    batch["rewards"].zero_()
    batch["rewards"][0, 2], batch["rewards"][1, 4] = 1.0, -1.0
    torch.manual_seed(0)
    plain = DiamondModule(**TINY)
    weighted = DiamondModule(**TINY, rew_event_weight=5.0)
    weighted.load_state_dict(plain.state_dict())
    out, out_w = plain.losses(batch), weighted.losses(batch)
    assert torch.equal(out["pred_rew"], out_w["pred_rew"])
    # the per-transition losses, recovered from the logits the plain module predicts
    x = to_signed(batch["frames"], channels_first=True)
    next_x = torch.cat((x[:, 1:], x[:, -1:]), dim=1)
    with torch.no_grad():
        logits_rew, logits_end, _ = plain.rew_end_model(x, batch["actions"].long(), next_x)
    keep = torch.ones_like(batch["terminals"])
    keep[:, -1] = batch["terminals"][:, -1]
    target = out["target_rew"]
    per = F.cross_entropy(logits_rew[keep], target, reduction="none")
    w = torch.where(target == 1, 1.0, 5.0)
    assert (target != 1).sum() == 2
    assert out["loss_rew"].item() == pytest.approx(per.mean().item(), rel=1e-5)
    assert out_w["loss_rew"].item() == pytest.approx(((w * per).sum() / w.sum()).item(), rel=1e-5)
    per_end = F.cross_entropy(logits_end[keep], out["target_end"], reduction="none")
    w_end = torch.where(out["target_end"] == 1, 5.0, 1.0)
    assert out_w["loss_end"].item() == pytest.approx(((w_end * per_end).sum() / w_end.sum()).item(), rel=1e-5)
    with pytest.raises(ValueError, match="rew_event_weight=0"):
        DiamondModule(**TINY, rew_event_weight=0)


def test_module_trains_and_evaluates_with_a_plain_trainer(tmp_path):
    import lightning as L

    module = DiamondModule(**TINY, warmup_steps=1, rollout_horizon=3)
    trainer = L.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(
        module,
        train_dataloaders=loader(synthetic_batches(3)),
        val_dataloaders=loader(synthetic_batches(1, 1)),
    )
    assert "train/loss" in trainer.callback_metrics
    test_batches = synthetic_batches(2, seed=2)
    trainer.test(module, dataloaders=loader(test_batches), verbose=False)
    metrics = trainer.callback_metrics
    with torch.no_grad():
        targets = [module.losses(batch) for batch in test_batches]
    assert float(metrics["test/end_events"]) == sum(float(o["target_end"].sum()) for o in targets) > 0
    assert float(metrics["test/reward_events"]) == sum(float((o["target_rew"] != 1).sum()) for o in targets)
    assert float(metrics["test/end_predicted"]) >= 0
    for key in ("test/psnr_next", "test/psnr_copy_last", "test/rollout_psnr_k3", "test/rollout_copy_last_k3",
                "test/psnr_next_shuffled"):  # fmt: skip
        assert key in metrics, sorted(metrics)
    assert 0.0 <= float(metrics["test/reward_f1"]) <= 1.0 and 0.0 <= float(metrics["test/end_f1"]) <= 1.0
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    again = DiamondModule.load_from_checkpoint(path, weights_only=True)
    assert again.hparams.channels == [8, 8]


def test_f1_is_undefined_not_perfect_when_the_split_has_no_events(tmp_path):
    """A test split without a nonzero reward or an episode end gives F1 = 0 / 0: nothing is logged under
    test/{reward,end}_f1 (1.0 there read as a perfect score), the event and prediction counts are."""
    import lightning as L

    module = DiamondModule(**TINY, rollout_horizon=1)
    with torch.no_grad():  # a constant head that predicts reward 0 and "not the end" everywhere
        hidden, out = module.rew_end_model.head[0], module.rew_end_model.head[-1]
        hidden.weight.zero_()
        hidden.bias.fill_(1.0)
        out.weight.zero_()
        out.weight[1] = out.weight[3] = 1.0  # reward classes (-1, 0, +1), end classes (no, yes)
    quiet = synthetic_batches(2, seed=3)
    for batch in quiet:
        batch["rewards"].zero_()
        batch["terminals"].zero_()
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path
    )
    trainer.test(module, dataloaders=loader(quiet), verbose=False)
    metrics = trainer.callback_metrics
    for name in ("reward", "end"):
        assert float(metrics[f"test/{name}_events"]) == 0 and float(metrics[f"test/{name}_predicted"]) == 0
        assert f"test/{name}_f1" not in metrics, float(metrics[f"test/{name}_f1"])
    with torch.no_grad():  # now it predicts an end everywhere: still no events, so still no F1
        out.weight[4] = 2.0
    trainer.test(module, dataloaders=loader(quiet), verbose=False)
    assert float(trainer.callback_metrics["test/end_predicted"]) > 0
    assert "test/end_f1" not in trainer.callback_metrics


def test_event_f1_from_counts():
    from diamond.module import event_f1

    assert event_f1(tp=2, predicted=4, events=4) == 0.5
    assert event_f1(tp=0, predicted=0, events=3) == 0.0  # events missed: F1 0, defined
    assert event_f1(tp=3, predicted=3, events=3) == 1.0
    assert event_f1(tp=0, predicted=0, events=0) is None and event_f1(tp=0, predicted=5, events=0) is None


def test_event_f1_counts_from_torchmetrics_equal_hand_counts():
    """nonzero_f1_counts (torchmetrics' per-class stat scores) = TP, predicted and actual events counted by
    hand, for rewards (3 classes, zero class 1) and ends (2 classes, zero class 0), and zeros when empty."""
    from diamond.module import nonzero_f1_counts

    g = torch.Generator().manual_seed(0)
    for num_classes, zero in ((3, 1), (2, 0)):
        pred, target = torch.randint(0, num_classes, (2, 200), generator=g)
        hand = [((pred == target) & (target != zero)).sum(), (pred != zero).sum(), (target != zero).sum()]
        assert nonzero_f1_counts(pred, target, zero, num_classes).tolist() == [float(c) for c in hand]
    empty = torch.zeros(0, dtype=torch.long)
    assert nonzero_f1_counts(empty, empty, 1).tolist() == [0.0, 0.0, 0.0]
