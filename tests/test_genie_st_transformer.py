"""genie/st_transformer.py: ST-transformer shapes, causality in time, and cached temporal keys/values == full pass."""

import torch

from genie.attention import SelfAttention
from genie.posemb import sincos_1d, sincos_2d
from genie.st_transformer import STTransformer


def test_shapes_and_causality():
    torch.manual_seed(0)
    net = STTransformer(d_model=32, num_layers=2, num_heads=4, grid=(3, 4)).eval()
    x = torch.randn(2, 5, 12, 32)
    y, kv = net(x)
    assert y.shape == x.shape and len(kv) == 2 and kv[0][0].shape == (2 * 12, 4, 5, 8)
    x2 = x.clone()
    x2[:, 3:] = torch.randn_like(x2[:, 3:])  # change frames 3.. only
    y2, _ = net(x2)
    torch.testing.assert_close(y2[:, :3], y[:, :3])
    assert not torch.allclose(y2[:, 3:], y[:, 3:])


def test_spatial_attention_mixes_tokens_within_a_frame():
    torch.manual_seed(0)
    net = STTransformer(d_model=16, num_layers=1, num_heads=2, grid=(2, 2)).eval()
    x = torch.randn(1, 2, 4, 16)
    x2 = x.clone()
    x2[:, 0, 0] += 1.0
    y, y2 = net(x)[0], net(x2)[0]
    assert not torch.allclose(y[:, 0, 1:], y2[:, 0, 1:])  # other tokens of the same frame see it


def test_past_keys_values_match_full_pass():
    torch.manual_seed(0)
    net = STTransformer(d_model=32, num_layers=3, num_heads=4, grid=(2, 3)).eval()
    x = torch.randn(2, 6, 6, 32)
    full, _ = net(x)
    _, past = net(x[:, :4])
    step, past = net(x[:, 4:5], past)
    last, _ = net(x[:, 5:6], past)
    torch.testing.assert_close(step, full[:, 4:5], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, full[:, 5:6], atol=1e-5, rtol=1e-5)


def test_attention_causal_with_past_chunk():
    torch.manual_seed(0)
    attn = SelfAttention(16, 2).eval()
    x = torch.randn(3, 7, 16)
    full, _ = attn(x, causal=True)
    _, past = attn(x[:, :4], causal=True)
    chunk, _ = attn(x[:, 4:], causal=True, past=past)
    torch.testing.assert_close(chunk, full[:, 4:], atol=1e-5, rtol=1e-5)


def test_sincos_embeddings():
    e = sincos_1d(torch.arange(5), 8)
    assert e.shape == (5, 8) and torch.allclose(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    g = sincos_2d(3, 4, 16)
    assert g.shape == (12, 16) and len({tuple(r.tolist()) for r in g}) == 12
