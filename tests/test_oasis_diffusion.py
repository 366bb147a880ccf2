"""Diffusion forcing: per-frame noise levels, DDIM sampler on an oracle model, loss falls on a fixed batch."""

from __future__ import annotations

import torch
from torch import nn

from oasis.diffusion import DiffusionForcing, sigmoid_beta_schedule
from oasis.dit import DiT
from oasis.world_model import sample_next


def test_sigmoid_schedule_shape_and_monotone():
    betas = sigmoid_beta_schedule(1000)
    assert betas.shape == (1000,) and betas.dtype == torch.float64
    ab = torch.cumprod(1 - betas, 0)
    assert (ab[1:] <= ab[:-1]).all() and ab[0] > 0.999 and ab[-1] < 1e-3


def test_training_noise_levels_are_independent_per_frame():
    df = DiffusionForcing()
    t = df.sample_noise_levels(4096, 8, generator=torch.Generator().manual_seed(0)).float()
    assert t.min() >= 0 and t.max() <= 999
    assert (t != t[:, :1]).any(dim=1).float().mean() > 0.99  # frames of a clip get different levels
    corr = torch.corrcoef(t.T)  # (8, 8) correlation across frames
    off_diag = corr[~torch.eye(8, dtype=torch.bool)]
    assert off_diag.abs().max() < 0.06


class Oracle(nn.Module):
    """Predicts the exact v for a known clean target (and records what it was called with)."""

    def __init__(self, df: DiffusionForcing, target: torch.Tensor):
        super().__init__()
        self.df, self.target, self.calls = df, target, []

    def forward(self, x, t, cond):
        self.calls.append(t[:, :-1].clone())
        a = self.df.alphas_cumprod[t[:, -1]].view(-1, 1, 1, 1)
        eps = (x[:, -1] - a.sqrt() * self.target) / (1 - a).sqrt()
        v = a.sqrt() * eps - (1 - a).sqrt() * self.target
        return torch.cat((torch.zeros_like(x[:, :-1]), v[:, None]), dim=1)


def test_ddim_with_exact_model_returns_the_context_frame():
    df = DiffusionForcing(ddim_steps=10, stabilization_level=15)
    context = torch.randn(2, 3, 4, 5, 5)
    oracle = Oracle(df, target=context[:, -1])  # the clean next frame is a copy of the last context frame
    out = sample_next(oracle, df, context, None, None, max_frames=32, use_cache=False)
    torch.testing.assert_close(out, context[:, -1], atol=1e-4, rtol=1e-4)
    assert len(oracle.calls) == 10
    assert all((c == 14).all() for c in oracle.calls)  # context held at stabilization_level - 1


def test_ddim_levels_match_open_oasis():
    assert DiffusionForcing(ddim_steps=10).ddim_levels().tolist() == [-1, 99, 199, 299, 399, 499, 599, 699, 799,
                                                                      899, 999]  # fmt: skip


def test_ddim_step_is_open_oasis_update_in_x0_eps_form():
    """ddim_step equals open-oasis generate.py's update (eps from x0 through 1 / a) and the same update
    written as x' = cx x + cv v with cx, cv from the levels alone, and its last step returns x0."""
    df = DiffusionForcing(ddim_steps=10)
    ac = df.alphas_cumprod.double()
    x, v = torch.randn(2, 1, 4, 5, 5, dtype=torch.float64), torch.randn(2, 1, 4, 5, 5, dtype=torch.float64)
    pairs = df.ddim_timesteps()
    assert pairs[0] == (999, 899) and pairs[-1] == (99, -1) and len(pairs) == 10
    for t, t_next in pairs:
        a, a_next = ac[t], (ac[t_next] if t_next >= 0 else torch.tensor(1.0, dtype=torch.float64))
        x_start = a.sqrt() * x - (1 - a).sqrt() * v  # open-oasis generate.py
        x_noise = ((1 / a).sqrt() * x - x_start) / (1 / a - 1).sqrt()
        reference = a_next.sqrt() * x_start + x_noise * (1 - a_next).sqrt()
        cx = (a_next * a).sqrt() + ((1 - a_next) * (1 - a)).sqrt()
        cv = ((1 - a_next) * a).sqrt() - (a_next * (1 - a)).sqrt()
        out = df.ddim_step(x, v, t, t_next)
        torch.testing.assert_close(out, reference, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out, cx * x + cv * v, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(df.ddim_step(x, v, 99, -1), ac[99].sqrt() * x - (1 - ac[99]).sqrt() * v)


def test_scheduler_is_network_agnostic():
    """The DDIM loop that runs the DiT (and its key / value cache) lives in the world model, as in
    diffusers: oasis/diffusion.py calls none of the DiT's cache methods."""
    import inspect

    import oasis.diffusion

    source = inspect.getsource(oasis.diffusion)
    assert not [m for m in ("context_kv", "prepare_steps", "forward_cached") if m in source]
    assert not hasattr(DiffusionForcing, "sample_next")


def test_sliding_window_keeps_max_frames():
    df = DiffusionForcing(ddim_steps=2)
    seen = []

    class Spy(nn.Module):
        def forward(self, x, t, cond):
            seen.append(x.shape[1])
            return torch.zeros_like(x)

    sample_next(Spy(), df, torch.randn(1, 20, 2, 2, 2), None, None, max_frames=6, use_cache=False)
    assert seen == [6, 6]


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    dit = DiT(input_h=4, input_w=4, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
              external_cond_dim=3, max_frames=8)  # fmt: skip
    df = DiffusionForcing()
    x0 = torch.randn(4, 4, 4, 4, 4)
    cond = torch.randn(4, 4, 3)
    opt = torch.optim.Adam([p for p in dit.parameters() if p.requires_grad], lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    t = df.sample_noise_levels(4, 4, generator=gen)
    losses = []
    for _ in range(60):
        torch.manual_seed(2)  # same noise every step: a fixed batch
        loss = df.loss(dit, x0, cond, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_min_snr_weights_without_fusion():
    df = DiffusionForcing(snr_clip=5.0)
    t = torch.tensor([[0, 250, 500, 999]])
    a = df.alphas_cumprod[t]
    snr = a / (1 - a)
    torch.testing.assert_close(df.loss_weight(t), snr.clamp(max=5.0) / (snr + 1))


def fused_reference(df: DiffusionForcing, t: torch.Tensor) -> torch.Tensor:
    """Diffusion Forcing's fused-SNR v-prediction weights, frame by frame with Python floats."""
    c, d = df.snr_clip, df.cum_snr_decay
    out = torch.zeros(t.shape, dtype=torch.float64)
    for b in range(t.shape[0]):
        cum = 0.0
        for j in range(t.shape[1]):
            a = df.alphas_cumprod[t[b, j]].item()
            snr = a / (1 - a)
            n, r = min(snr, c) / c, snr / c
            prev = 0.0 if j == 0 else cum  # the running level of frames 0..j-1
            cum = n if j == 0 else d * cum + (1 - d) * n
            fused_n, fused_r = 1 - (1 - d * prev) * (1 - n), 1 - (1 - d * prev) * (1 - r)
            out[b, j] = c * fused_n / (c * fused_r + 1)
    return out


def test_fused_snr_weights_match_the_recurrence():
    df = DiffusionForcing(fused_snr=True, cum_snr_decay=0.96)
    t = df.sample_noise_levels(3, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(df.loss_weight(t).double(), fused_reference(df, t), atol=1e-5, rtol=1e-5)


def test_fused_snr_keeps_weight_on_noisy_frames_after_clean_ones():
    """min-SNR gives a pure-noise frame ~0 weight; after clean frames fusion gives it c(1-d) / (c(1-d) + 1)."""
    plain, fused = DiffusionForcing(), DiffusionForcing(fused_snr=True, cum_snr_decay=0.96)
    t = torch.tensor([[0, 0, 999]])
    assert plain.loss_weight(t)[0, 2] < 1e-3
    keep = 1 - 0.96  # clean frame 0 (n = 1) leaves this share of the noisy frame's own noise
    expected = 5 * (1 - keep) / (5 * (1 - keep) + 1)
    torch.testing.assert_close(fused.loss_weight(t)[0, 2].item(), expected, atol=2e-3, rtol=0)
    # nothing precedes frame 0: its weight is min-SNR's
    torch.testing.assert_close(fused.loss_weight(t)[:, 0], plain.loss_weight(t)[:, 0])
