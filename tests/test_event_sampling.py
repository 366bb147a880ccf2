"""Clip sampling that favours reward / end transitions (data.event_weight), and the event F1 it is judged by.

On a constructed dataset of few rewards and one terminal per episode, weighted sampling raises the share
of reward and end transitions in the drawn batches by about the weight (a terminal is in one clip start
of its episode against `length` for an inner transition, so without weights it is the rarest of all);
the draw stays seeded, DDP-split and resumable. F1 is checked on constructed predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.sampler import ClipSampler, ResumableLoader, event_clip_weights

LENGTH = 4


def episodes() -> list[tuple[np.ndarray, np.ndarray]]:
    """Ten episodes of 40 transitions: one reward at row 20 and a terminal at the last row."""
    out = []
    for _ in range(10):
        rewards, terminals = np.zeros(40, np.float32), np.zeros(40, bool)
        rewards[20], terminals[-1] = 1.0, True
        out.append((rewards, terminals))
    return out


class Clips(torch.utils.data.Dataset):
    """TrainClips' indexing (every start of every episode, in order): item i -> (rewards, terminals)."""

    def __init__(self, eps, length):
        self.items = [
            (r[s : s + length], t[s : s + length]) for r, t in eps for s in range(len(r) - length + 1)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def event_shares(data: Clips, order: list[int]) -> tuple[float, float]:
    """Share of transitions with a next frame in the clip that pay a reward; share of clips that end."""
    rew = [data[i][0][:-1] != 0 for i in order]
    return float(np.concatenate(rew).mean()), float(np.mean([data[i][1].any() for i in order]))


def test_event_weights_mark_the_clips_holding_an_event():
    eps = episodes()
    w = event_clip_weights(eps, LENGTH, 10.0)
    data = Clips(eps, LENGTH)
    assert w.shape == (len(data),) and w.dtype == torch.float64
    for i in range(len(data)):
        rewards, terminals = data[i]
        # a reward counts where the clip holds the frame after it; a terminal always does
        expected = 10.0 if (rewards[:-1] != 0).any() or terminals.any() else 1.0
        assert w[i] == expected, i
    assert torch.equal(event_clip_weights(eps, LENGTH, 1.0), torch.ones(len(data), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"data.event_weight=0.5: must be >= 1"):
        event_clip_weights(eps, LENGTH, 0.5)


def test_weighted_sampling_raises_the_share_of_rare_transitions():
    eps = episodes()
    data = Clips(eps, LENGTH)
    plain = ClipSampler(data, seed=0, num_replicas=1, rank=0)
    weighted = ClipSampler(
        data, seed=0, num_replicas=1, rank=0, weights=event_clip_weights(eps, LENGTH, 10.0)
    )
    rew0, end0 = event_shares(data, [i for e in range(20) for i in plain.indices(e)])
    rew1, end1 = event_shares(data, [i for e in range(20) for i in weighted.indices(e)])
    assert rew0 == pytest.approx(1 / 37, rel=1e-6) and end0 == pytest.approx(1 / 37, rel=1e-6)
    # per episode 3 starts hold the reward (1 in their 3 transitions) and 1 the terminal, weight 10 each,
    # 33 starts hold neither: 30 / 73 of the draws hold a reward, 10 / 73 end
    assert rew1 == pytest.approx(30 / 73 / 3, rel=0.1) and rew1 > 4 * rew0
    assert end1 == pytest.approx(10 / 73, rel=0.15) and end1 > 4 * end0
    assert len(weighted) == len(data) and len(weighted.indices(0)) == len(data)


def test_weighted_sampling_is_seeded_split_and_resumable():
    eps = episodes()
    data = Clips(eps, LENGTH)
    w = event_clip_weights(eps, LENGTH, 10.0)
    one = ClipSampler(data, seed=3, num_replicas=1, rank=0, weights=w)
    assert one.indices(0) == ClipSampler(data, seed=3, num_replicas=1, rank=0, weights=w).indices(0)
    assert one.indices(0) != one.indices(1)
    ranks = [ClipSampler(data, seed=3, num_replicas=2, rank=r, weights=w).indices(0) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 185 and sorted(ranks[0] + ranks[1]) == sorted(one.indices(0))
    with pytest.raises(ValueError, match="370 clips but 5 weights"):
        ClipSampler(data, seed=0, num_replicas=1, rank=0, weights=torch.ones(5))

    def loader():
        return ResumableLoader(
            data, ClipSampler(data, seed=1, num_replicas=1, rank=0, weights=w), batch_size=8
        )

    ref = loader()
    full = [b for b in ref]
    first = loader()
    it = iter(first)
    head = [next(it) for _ in range(5)]
    again = loader()
    again.load_state_dict(first.state_dict())
    rest = list(again)
    assert len(head) + len(rest) == len(full)
    for a, b in zip(head + rest, full):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_event_f1_on_constructed_predictions():
    """Reward classes (-1, 0, +1) -> 0, 1, 2 with 1 the zero class; end: 1 the event."""
    from diamond.module import event_f1, nonzero_f1_counts

    target = torch.tensor([1, 1, 2, 1, 0, 2, 1, 1])
    never = nonzero_f1_counts(torch.ones_like(target), target, zero_class=1)
    assert never.tolist() == [0, 0, 3] and event_f1(*never.tolist()) == 0.0
    pred = torch.tensor([1, 2, 2, 1, 2, 2, 1, 1])  # 2 right, 1 false alarm, 1 with the wrong sign
    c = nonzero_f1_counts(pred, target, zero_class=1)
    assert c.tolist() == [2, 4, 3] and event_f1(*c.tolist()) == pytest.approx(2 * 2 / (4 + 3))
    end_target, end_pred = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 0, 1])
    c = nonzero_f1_counts(end_pred, end_target, zero_class=0)
    assert event_f1(*c.tolist()) == pytest.approx(2 / 3)


def test_datamodule_weights_its_train_clips(tmp_path):
    """data.event_weight reaches the train loader's sampler, with weights from the shards' own events."""
    from common.data.datamodule import VideoDataModule
    from common.data.shards import Episode
    from tests.test_data_shards import _dataset

    eps = episodes()
    frames = np.zeros((40, 8, 8, 3), np.uint8)
    _dataset(
        tmp_path / "ds",
        [Episode(seed, frames, np.zeros(40, np.int32), r, t) for seed, (r, t) in enumerate(eps)],
    )

    def module(weight: float) -> VideoDataModule:
        return VideoDataModule(
            "procgen", "coinrun", "ds", str(tmp_path), num_actions=4, frame_size=8, collect=False,
            episodes=10, splits={"train": 1.0}, clip_length=LENGTH, batch_size=2, event_weight=weight,
        )  # fmt: skip

    dm = module(10.0)
    sampler = dm.train_dataloader().sampler
    assert torch.equal(sampler.weights, event_clip_weights(eps, LENGTH, 10.0))
    steps = dm.shards.transitions(dm.datasets["train"].episodes[3])
    assert steps["rewards"][20] == 1 and steps["terminals"][-1] and steps["rewards"].shape == (40,)
    assert module(1.0).train_dataloader().sampler.weights is None
