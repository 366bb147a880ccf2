"""Diffusion forcing: per-frame noise levels, DDIM sampler on an oracle model, loss falls on a fixed batch."""

from __future__ import annotations

import torch
from torch import nn

from oasis.diffusion import DiffusionForcing, sigmoid_beta_schedule
from oasis.dit import DiT


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
    out = df.sample_next(oracle, context, None, None, max_frames=32, use_cache=False)
    torch.testing.assert_close(out, context[:, -1], atol=1e-4, rtol=1e-4)
    assert len(oracle.calls) == 10
    assert all((c == 14).all() for c in oracle.calls)  # context held at stabilization_level - 1


def test_ddim_levels_match_open_oasis():
    assert DiffusionForcing(ddim_steps=10).ddim_levels().tolist() == [-1, 99, 199, 299, 399, 499, 599, 699, 799,
                                                                      899, 999]  # fmt: skip


def test_sliding_window_keeps_max_frames():
    df = DiffusionForcing(ddim_steps=2)
    seen = []

    class Spy(nn.Module):
        def forward(self, x, t, cond):
            seen.append(x.shape[1])
            return torch.zeros_like(x)

    df.sample_next(Spy(), torch.randn(1, 20, 2, 2, 2), None, None, max_frames=6, use_cache=False)
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
