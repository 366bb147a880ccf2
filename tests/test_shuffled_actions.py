"""psnr_next_shuffled: the next frame generated with the action of another clip of the batch (a seeded
derangement). On a constructed model whose next frame is set by its action it falls below psnr_next."""

from __future__ import annotations

import torch

from common.metrics import SetPSNR, derangement, rollout_metrics, shuffled_next_errors
from common.world_model import Step

B, T, S = 4, 5, 8


class ActionShiftModel:
    """Next frame = last context frame + 30 x action (the action decides the frame)."""

    num_actions, context_length = 4, 2

    def reset(self, frames, actions=None):
        self.last = frames[:, -1]

    def step(self, actions):
        self.last = (self.last.int() + 30 * actions[:, None, None, None]).clamp(0, 255).to(torch.uint8)
        return Step(frames=self.last)


def clips():
    """Frames that follow ActionShiftModel exactly, each clip with its own action."""
    actions = torch.arange(B)[:, None].expand(B, T).clone()
    frames = [torch.full((B, S, S, 3), 10, dtype=torch.uint8)]
    for t in range(T - 1):
        frames.append((frames[-1].int() + 30 * actions[:, t, None, None, None]).to(torch.uint8))
    return torch.stack(frames, 1), actions


def test_derangement_moves_every_clip_and_is_seeded():
    for n in (2, 3, 8, 33):
        perm = derangement(n, torch.Generator().manual_seed(n))
        assert sorted(perm.tolist()) == list(range(n)) and (perm != torch.arange(n)).all()
        assert torch.equal(perm, derangement(n, torch.Generator().manual_seed(n)))
    assert derangement(1, torch.Generator()).tolist() == [0]  # one clip: nothing to swap with


def test_shuffled_actions_score_below_the_true_ones_on_a_model_that_uses_them():
    frames, actions = clips()
    meter = SetPSNR()
    rollout_metrics(ActionShiftModel(), frames, actions, 2, 1, "test", meter)
    meter.add("test/psnr_next_shuffled",
              shuffled_next_errors(ActionShiftModel(), frames, actions, 2, torch.Generator().manual_seed(0)))  # fmt: skip
    psnr = meter.compute()
    assert psnr["test/psnr_next"] > 90  # exact with the true actions (set PSNR of MSE 0)
    assert psnr["test/psnr_next_shuffled"] < 25  # every clip got another clip's action: 30+ levels off
