"""Oasis networks: open-oasis fixture reproduction, temporal causality, KV-cache equivalence, zero init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from oasis.diffusion import DiffusionForcing
from oasis.dit import DiT
from oasis.vae import AutoencoderKL
from oasis.world_model import sample_next

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "oasis"


def small_dit(**kw) -> DiT:
    torch.manual_seed(0)
    args = dict(input_h=4, input_w=6, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                external_cond_dim=5, max_frames=8)  # fmt: skip
    dit = DiT(**{**args, **kw}).eval()
    for p in dit.parameters():  # zero-initialised layers would hide most of the computation
        if p.requires_grad:
            p.data.normal_(0, 0.2)
    return dit


@pytest.fixture(scope="module")
def fixture():
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} not present")
    from safetensors.torch import load_file

    cfg = json.loads((FIXTURE / "config.json").read_text())
    return cfg, load_file(str(FIXTURE / "io.safetensors"))


def test_dit_reproduces_open_oasis_fixture(fixture):
    from safetensors.torch import load_file

    cfg, io = fixture
    dit = DiT(**cfg["dit"]["kwargs"]).eval()
    missing, unexpected = dit.load_state_dict(load_file(str(FIXTURE / "dit.safetensors")), strict=False)
    assert not unexpected
    assert set(missing) == set(cfg["fixture"]["dit_shared_aliases_dropped_by_save_model"])
    assert len(dit.state_dict()) == cfg["fixture"]["dit_state_dict_num_keys"]
    with torch.no_grad():
        out = dit(io["dit_x"], io["dit_t"], io["dit_external_cond"])
    torch.testing.assert_close(out, io["dit_out"], atol=1e-5, rtol=1e-5)


def test_vae_reproduces_open_oasis_fixture(fixture):
    from safetensors.torch import load_file

    cfg, io = fixture
    kwargs = {k: v for k, v in cfg["vae"]["kwargs"].items()}
    vae = AutoencoderKL(**kwargs).eval()
    vae.load_state_dict(load_file(str(FIXTURE / "vae.safetensors")))
    with torch.no_grad():
        post = vae.encode(io["vae_img"])
        dec = vae.decode(io["vae_mean"])
    torch.testing.assert_close(post.mean, io["vae_mean"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(post.logvar, io["vae_logvar"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec, io["vae_dec"], atol=1e-5, rtol=1e-5)


def test_schedule_matches_fixture(fixture):
    _, io = fixture
    torch.testing.assert_close(DiffusionForcing().alphas_cumprod, io["alphas_cumprod"], atol=1e-6, rtol=1e-6)


def test_temporal_attention_is_causal():
    dit = small_dit()
    x, t, a = torch.randn(2, 5, 4, 4, 6), torch.randint(0, 1000, (2, 5)), torch.randn(2, 5, 5)
    with torch.no_grad():
        out = dit(x, t, a)
        x2, t2, a2 = x.clone(), t.clone(), a.clone()
        x2[:, 3:] += torch.randn_like(x2[:, 3:])
        t2[:, 3:] = 7
        a2[:, 3:] = 0
        out2 = dit(x2, t2, a2)
    torch.testing.assert_close(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3:], out2[:, 3:])


def test_cached_context_equals_full_window():
    dit = small_dit()
    x, t, a = torch.randn(2, 6, 4, 4, 6), torch.randint(0, 1000, (2, 6)), torch.randn(2, 6, 5)
    with torch.no_grad():
        full = dit(x, t, a)
        for spare in (0, 1, 2):  # no free slot (keys concatenated), room for one / both new frames
            past = dit.context_kv(x[:, :4], t[:, :4], a[:, :4], spare=spare)
            assert past[0].keys.shape[-2] == 4 + spare and past[0].length == 4
            one = dit.forward_cached(x[:, 4:5], t[:, 4:5], a[:, 4:5], past)
            two = dit.forward_cached(x[:, 4:], t[:, 4:], a[:, 4:], past)  # several new frames: causal mask
            again = dit.forward_cached(x[:, 4:5], t[:, 4:5], a[:, 4:5], past)  # slots are overwritten
            torch.testing.assert_close(one, full[:, 4:5], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(two, full[:, 4:], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(again, one, atol=0, rtol=0)


def test_cached_sampler_equals_uncached():
    dit = small_dit()
    df = DiffusionForcing(ddim_steps=4)
    ctx, ctx_cond, cond = torch.randn(2, 9, 4, 4, 6), torch.randn(2, 9, 5), torch.randn(2, 5)
    outs = []
    for use_cache in (True, False):
        gen = torch.Generator().manual_seed(3)
        outs.append(
            sample_next(dit, df, ctx, ctx_cond, cond, max_frames=8, use_cache=use_cache, generator=gen)
        )
    assert outs[0].shape == (2, 4, 4, 6)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_fresh_dit_outputs_zero_and_shared_rotary():
    dit = DiT(input_h=4, input_w=4, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
              external_cond_dim=3)  # fmt: skip
    out = dit(torch.randn(1, 3, 4, 4, 4), torch.zeros(1, 3, dtype=torch.long), torch.randn(1, 3, 3))
    assert torch.count_nonzero(out) == 0  # zero-initialised adaLN and final layer
    assert dit.blocks[1].t_attn.rotary_emb is dit.temporal_rotary_emb
    assert dit.blocks[0].s_attn.rotary_emb is dit.spatial_rotary_emb
    assert not any(p.requires_grad for n, p in dit.named_parameters() if n.endswith("freqs"))


def test_modulate_is_dits_adaln():
    """DiT models.py: modulate(x, shift, scale) = x * (1 + scale) + shift."""
    from oasis.dit import modulate

    x, shift, scale = torch.randn(2, 3, 4, 4, 8), torch.randn(2, 3, 1, 1, 8), torch.randn(2, 3, 1, 1, 8)
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + scale) + shift)
