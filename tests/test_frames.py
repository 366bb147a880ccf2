"""common/frames.py: uint8 frames <-> the networks' float [-1, 1], the one conversion every family uses."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from common.frames import frame_batch, to_signed, to_uint8


def test_every_byte_round_trips_and_lands_on_each_familys_grid():
    k = torch.arange(256, dtype=torch.uint8)
    x = to_signed(k)
    assert x.dtype == torch.float32 and x[0] == -1 and x[-1] == 1
    assert torch.equal(x, k.float() / 127.5 - 1)  # Genie's and Oasis' k / 127.5 - 1
    assert torch.equal(x, k.float().div(255).mul(2).sub(1))  # DIAMOND's k / 255 * 2 - 1, bitwise
    assert torch.equal(to_uint8(x), k)


def test_to_uint8_clamps_and_rounds_to_the_nearest_level():
    x = torch.tensor([-3.0, -1.0, -0.999, 0.0, 0.5, 1.0, 7.0])
    # (x + 1) * 127.5 = 0, 0, 0.1275, 127.5, 191.25, 255, 255 -> round half to even at 127.5
    assert to_uint8(x).tolist() == [0, 0, 0, 128, 191, 255, 255]
    levels = (torch.arange(256).float() + 0.3) / 127.5 - 1  # just above each level: rounds down to it
    assert torch.equal(to_uint8(levels), torch.arange(256, dtype=torch.uint8))


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
def test_channels_first_moves_the_channel_axis_both_ways(lead):
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (*lead, 5, 4, 3), generator=g, dtype=torch.uint8)  # (..., H, W, C)
    x = to_signed(frames, channels_first=True)
    assert x.shape == (*lead, 3, 5, 4)
    assert torch.equal(x, to_signed(frames).movedim(-1, -3))
    back = to_uint8(x, channels_first=True)
    assert back.shape == frames.shape and torch.equal(back, frames)


def test_frame_batch_copies_only_what_torch_cannot_share():
    """An env frame (H, W, C) becomes a (1, H, W, C) uint8 batch: a read-only or strided array is copied
    (no warning, the env's buffer untouched), a writable contiguous one shared."""
    frame = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    shared = frame_batch(frame)
    assert shared.shape == (1, 4, 5, 3) and shared.dtype == torch.uint8
    assert shared.data_ptr() == frame.ctypes.data  # no copy
    frame.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it shares a read-only array
        copied = frame_batch(frame)
    assert copied.data_ptr() != frame.ctypes.data and torch.equal(copied[0], torch.from_numpy(frame.copy()))
    strided = np.zeros((4, 10, 3), np.uint8)[:, ::2]
    assert frame_batch(strided).shape == (1, 4, 5, 3)
