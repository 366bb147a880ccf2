"""oasis/rotary.py: frequencies, the relative-position property, axial tables, partial rotation."""

from __future__ import annotations

import math

import pytest
import torch

from oasis.rotary import RotaryEmbedding, apply_rotary, rotary_freqs, rotation


def test_frequencies_match_open_oasis_definitions():
    torch.testing.assert_close(rotary_freqs(16, "lang"), 1.0 / 10000 ** (torch.arange(0, 16, 2).float() / 16))
    torch.testing.assert_close(rotary_freqs(8, "pixel", max_freq=256), torch.linspace(1, 128, 4) * math.pi)
    with pytest.raises(ValueError, match="rotary kind"):
        rotary_freqs(8, "spiral")


def test_rotation_preserves_norm():
    rope = RotaryEmbedding(16)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(rope.rotate(x).norm(dim=-1), x.norm(dim=-1))


def test_relative_property_scores_depend_only_on_offset():
    torch.manual_seed(0)
    rope = RotaryEmbedding(16)
    q, k = torch.randn(16), torch.randn(16)

    def score(i: int, j: int) -> torch.Tensor:
        qi = apply_rotary(rope.angles(torch.tensor(float(i))), q)
        kj = apply_rotary(rope.angles(torch.tensor(float(j))), k)
        return (qi * kj).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(score(0, 0), (q * k).sum(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3))


def test_rotate_offset_equals_shifted_positions():
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 5, 8)
    full = rope.rotate(torch.cat((torch.zeros(2, 3, 8), x), dim=1))[:, 3:]
    torch.testing.assert_close(rope.rotate(x, offset=3), full)


def test_axial_pixel_table_rows_then_columns():
    rope = RotaryEmbedding(4, kind="pixel", max_freq=256)
    table = rope.axial_angles(3, 5)
    assert table.shape == (3, 5, 8)
    rows = rope.angles(torch.linspace(-1, 1, 3))
    cols = rope.angles(torch.linspace(-1, 1, 5))
    torch.testing.assert_close(table[:, 2, :4], rows)
    torch.testing.assert_close(table[1, :, 4:], cols)


def test_partial_rotation_passes_the_tail_through():
    rope = RotaryEmbedding(4)
    x = torch.randn(6, 10)
    out = apply_rotary(rope.angles(torch.arange(6.0))[:, :4], x)
    torch.testing.assert_close(out[:, 4:], x[:, 4:])
    assert not torch.allclose(out[1:, :4], x[1:, :4])
    cs = rope.angles(torch.arange(6.0))
    torch.testing.assert_close(apply_rotary((cs.cos(), cs.sin()), x), apply_rotary(cs, x))
    torch.testing.assert_close(apply_rotary(rotation(cs[:, :4]), x), out)  # complex form, partial
    torch.testing.assert_close(apply_rotary(rotation(cs), x), apply_rotary(cs, x))
    strided = torch.randn(6, 2, 10).transpose(0, 1)  # a non-contiguous view, as attention passes q and k
    torch.testing.assert_close(apply_rotary(rotation(cs), strided), apply_rotary(cs, strided))
    with pytest.raises(ValueError, match="rotary table has 12 channels"):
        apply_rotary(torch.zeros(6, 12), x)
