"""genie/quantize.py: straight-through gradients, codes of VQ and FSQ, dead-code restarts, stats."""

import pytest
import torch

from genie.quantize import FSQ, VectorQuantizer, code_stats, make_quantizer


def test_vq_straight_through_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 8, l2_normalize=False)
    z = torch.randn(4, 5, 8, requires_grad=True)
    z_q, idx, loss, _ = vq(z)
    assert z_q.shape == z.shape and idx.shape == (4, 5)
    torch.testing.assert_close(z_q, vq.embed(idx))  # forward value is the code
    (z_q * torch.arange(8.0)).sum().backward()  # gradient passes straight through
    torch.testing.assert_close(z.grad, torch.arange(8.0).expand(4, 5, 8))
    assert loss.item() > 0


def test_vq_l2_codes_are_unit_vectors_and_nearest():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 8).eval()
    z = torch.randn(100, 8)
    z_q, idx, _, _ = vq(z)
    torch.testing.assert_close(z_q.norm(dim=-1), torch.ones(100))
    codes = torch.nn.functional.normalize(vq.codebook, dim=-1)
    assert torch.equal(idx, (torch.nn.functional.normalize(z, dim=-1) @ codes.t()).argmax(-1))


def test_vq_dead_codes_restart():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, restart_after=2).train()
    vq.codebook.data[:] = torch.tensor([1.0, 0, 0, 0])  # every code the same: only code 0 ever wins
    z = torch.randn(64, 4)
    for _ in range(3):
        vq(z)
    _, idx, _, stats = vq(z)
    assert len(idx.unique()) > 1 and stats["usage"] > 1 / 8


@pytest.mark.parametrize("kind", ["vq", "fsq"])
def test_codes_under_bf16_autocast_match_float32(kind):
    """trainer.precision=bf16-mixed: the codes are the float32 ones, and dead-code restarts still run."""
    torch.manual_seed(0)
    q = VectorQuantizer(512, 8, restart_after=1) if kind == "vq" else FSQ([8, 8, 8], 8)
    z = torch.randn(4096, 8) * 3
    ref = q.eval()(z)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(q(z)[1], ref)
        q.train()(z)  # VQ: codes unused in the first call are now restarted


def test_code_stats():
    s = code_stats(torch.tensor([0, 1, 2, 3]), 8)
    assert s["usage"].item() == 0.5 and s["perplexity"].item() == pytest.approx(4.0)


def test_fsq_codes_roundtrip_and_gradient():
    torch.manual_seed(0)
    fsq = FSQ([8, 5, 5, 5], dim=6)
    assert fsq.num_codes == 1000
    z = (torch.randn(3, 7, 6) * 3).requires_grad_()
    z_q, idx, loss, _ = fsq(z)
    assert idx.min() >= 0 and idx.max() < 1000 and loss.item() == 0
    torch.testing.assert_close(z_q, fsq.embed(idx))
    z_q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_make_quantizer_errors():
    with pytest.raises(ValueError, match="unknown quantizer 'lfq2'"):
        make_quantizer("lfq2", 16, 8)
    with pytest.raises(ValueError, match="fsq_levels"):
        make_quantizer("fsq", 16, 8)
