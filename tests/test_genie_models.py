"""Genie networks: shapes, causality in time, losses that fall on a fixed batch, MaskGIT schedule."""

import math

import pytest
import torch
import torch.nn.functional as F

from genie.dynamics import DynamicsModel
from genie.lam import LatentActionModel
from genie.maskgit import num_masked_after, sample_frame, training_mask
from genie.tokenizer import VideoTokenizer


def tokenizer(**kw):
    kw = {"num_codes": 64, **kw}
    return VideoTokenizer(frame_size=16, patch_size=4, d_model=32, num_heads=4, enc_layers=1, dec_layers=1,
                          code_dim=8, **kw)  # fmt: skip


def lam():
    return LatentActionModel(frame_size=16, patch_size=8, d_model=32, num_heads=4, enc_layers=1, dec_layers=1,
                             num_actions=4, code_dim=8)  # fmt: skip


def clip(b=2, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 16, 16, 3, generator=g) * 2 - 1


def test_tokenizer_shapes_and_causality():
    torch.manual_seed(0)
    tok = tokenizer().eval()
    x = clip()
    recon, tokens, loss, stats = tok(x)
    assert recon.shape == x.shape and tokens.shape == (2, 5, 16) and tokens.max() < 64
    x2 = x.clone()
    x2[:, 3:] = 0  # change frames 3.. (0-based)
    recon2, tokens2, _, _ = tok(x2)
    assert torch.equal(tokens2[:, :3], tokens[:, :3])
    torch.testing.assert_close(recon2[:, :3], recon[:, :3])
    assert set(stats) == {"usage", "perplexity"}


def test_patch_encoder_keeps_the_token_of_a_static_patch():
    """encoder="patch": changing one patch of frame 1 changes no other token; the ST encoder's tokens move."""
    x = clip(b=1, t=2)
    x[:, 1] = x[:, 0]
    x[:, 1, :4, :4] = -x[:, 1, :4, :4]  # frame 1 = frame 0 with patch (0, 0) changed
    for encoder, others_change in (("patch", False), ("st", True)):
        torch.manual_seed(0)
        tokens = tokenizer(encoder=encoder, num_codes=1024).eval()(x)[1]
        assert tokens.shape == (1, 2, 16)
        assert bool((tokens[0, 1, 1:] != tokens[0, 0, 1:]).any()) is others_change, encoder
    with pytest.raises(ValueError, match="tokenizer encoder 'conv'"):
        tokenizer(encoder="conv")


def test_tokenizer_fsq_option():
    tok = tokenizer(quantizer="fsq", fsq_levels=[4, 4, 4])
    assert tok.num_codes == 64 and tok(clip())[1].max() < 64


def test_lam_shapes_and_causality():
    torch.manual_seed(0)
    model = lam().eval()
    x = clip()
    pred, actions, _, _ = model(x)
    assert pred.shape == (2, 4, 16, 16, 3) and actions.shape == (2, 4) and actions.max() < 4
    x2 = x.clone()
    x2[:, 4] = 0  # the last frame only changes the last transition's action and nothing before
    pred2, actions2, _, _ = model(x2)
    assert torch.equal(actions2[:, :3], actions[:, :3])
    torch.testing.assert_close(pred2[:, :3], pred[:, :3])


def test_dynamics_shapes_and_causality():
    torch.manual_seed(0)
    dyn = DynamicsModel(
        num_codes=64, num_actions=4, grid=(4, 4), d_model=32, num_heads=4, num_layers=2
    ).eval()
    tokens = torch.randint(64, (2, 5, 16))
    prev = torch.tensor([[-1, 0, 1, 2, 3], [-1, 3, 2, 1, 0]])
    logits, _ = dyn(tokens, prev)
    assert logits.shape == (2, 5, 16, 64)
    tokens2, prev2 = tokens.clone(), prev.clone()
    tokens2[:, 4], prev2[:, 4] = 63, 0
    logits2, _ = dyn(tokens2, prev2)
    torch.testing.assert_close(logits2[:, :4], logits[:, :4])
    assert not torch.allclose(logits2[:, 4], logits[:, 4])


def test_copy_gate_adds_its_value_to_the_previous_frames_code():
    """copy_gate=True: neutral at initialisation; its value lands on the logit of the code the same position
    held one frame before, nowhere else and not on a frame without one; no prev_tokens is an error."""
    torch.manual_seed(0)
    dyn = DynamicsModel(num_codes=64, num_actions=4, grid=(4, 4), d_model=32, num_heads=4, num_layers=1,
                        copy_gate=True).eval()  # fmt: skip
    tokens = torch.randint(64, (2, 3, 16))
    prev = torch.tensor([[-1, 0, 1], [-1, 3, 2]])
    before = torch.nn.functional.pad(tokens[:, :-1], (0, 0, 1, 0), value=-1)
    plain = DynamicsModel(
        num_codes=64, num_actions=4, grid=(4, 4), d_model=32, num_heads=4, num_layers=1
    ).eval()
    plain.load_state_dict({k: v for k, v in dyn.state_dict().items() if not k.startswith("copy_gate")})
    at_init, _ = dyn(tokens, prev, prev_tokens=before)
    torch.testing.assert_close(at_init, plain(tokens, prev)[0])
    with torch.no_grad():
        dyn.copy_gate.bias.fill_(5.0)
    gated, _ = dyn(tokens, prev, prev_tokens=before)
    bonus = gated - at_init
    expected = torch.zeros_like(bonus)
    expected[:, 1:].scatter_(-1, tokens[:, :-1, :, None], 5.0)
    torch.testing.assert_close(bonus, expected)
    with pytest.raises(ValueError, match="prev_tokens"):
        dyn(tokens, prev)


def fit(model, loss_fn, steps=30, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_losses_fall_on_a_fixed_batch():
    torch.manual_seed(0)
    x = clip(b=2, t=3)
    tok = tokenizer()

    def tok_loss():
        recon, _, vq, _ = tok(x)
        return F.mse_loss(recon, x) + vq

    losses = fit(tok, tok_loss)
    assert losses[-1] < 0.5 * losses[0]

    model = lam()

    def lam_loss():
        pred, _, vq, _ = model(x)
        return F.mse_loss(pred, x[:, 1:]) + vq

    losses = fit(model, lam_loss)
    assert losses[-1] < 0.5 * losses[0]

    dyn = DynamicsModel(num_codes=64, num_actions=4, grid=(4, 4), d_model=32, num_heads=4, num_layers=1)
    tokens = torch.randint(64, (2, 3, 16))
    prev = torch.tensor([[-1, 0, 1], [-1, 2, 3]])
    mask = training_mask(tokens.shape, generator=torch.Generator().manual_seed(0))

    def dyn_loss():
        logits, _ = dyn(tokens.masked_fill(mask, dyn.mask_id), prev)
        return F.cross_entropy(logits[mask], tokens[mask])

    losses = fit(dyn, dyn_loss, steps=40)
    assert losses[-1] < 0.5 * losses[0]


def test_training_mask_keeps_first_frame_and_rate():
    mask = training_mask((64, 4, 100), generator=torch.Generator().manual_seed(0))
    assert not mask[:, 0].any()
    rate = mask[:, 1:].float().mean((1, 2))
    assert rate.min() > 0.4 and rate.max() <= 1.0 and 0.65 < rate.mean() < 0.85


def test_cosine_schedule_counts():
    n, steps = 256, 25
    counts = [num_masked_after(s, steps, n) for s in range(steps)]
    assert counts[-1] == 0 and all(a >= b for a, b in zip(counts, counts[1:]))
    assert counts[0] == math.floor(n * math.cos(math.pi / 2 / steps))
    assert [num_masked_after(s, 8, 16) for s in range(8)] == [15, 14, 13, 11, 8, 6, 3, 0]


def test_sample_frame_reveals_tokens_by_the_schedule():
    revealed = []

    def logits_fn(tokens):
        revealed.append(int((tokens != 99).sum()))
        return torch.randn(tokens.shape[0], tokens.shape[1], 99)

    out = sample_frame(logits_fn, batch=2, num_tokens=16, mask_id=99, steps=8, temperature=1.0)
    assert out.shape == (2, 16) and (out < 99).all()
    assert revealed == [2 * (16 - c) for c in [16, 15, 14, 13, 11, 8, 6, 3]]
    greedy = sample_frame(lambda t: torch.ones(1, 4, 5).cumsum(-1), 1, 4, mask_id=5, steps=2, temperature=0)
    assert torch.equal(greedy, torch.full((1, 4), 4))
