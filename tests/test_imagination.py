"""DIAMOND's actor-critic objective and its imagined rollouts: λ-returns by hand, the gradient's sign on a
bandit, rollout shapes with a real (tiny) DIAMOND world model and that no real environment is touched."""

from __future__ import annotations

import pytest
import torch

from common.world_model import Step
from diamond.actor_critic import ActorCritic, actor_critic_loss, lambda_returns
from diamond.imagination import imagine
from diamond.module import DiamondModule

TINY_WM = dict(
    num_actions=3, frame_size=16, cond_channels=16, depths=[1, 1], channels=[8, 8],
    attn_depths=[False, False], rew_lstm_dim=8, rew_cond_channels=8, rew_depths=[1, 1],
    rew_channels=[8, 8], rew_attn_depths=[False, False],
)  # fmt: skip


def tiny_agent(num_actions: int = 3, size: int = 16) -> ActorCritic:
    return ActorCritic(3, size, num_actions, lstm_dim=8, channels=[4, 4], down=[1, 1])


def test_lambda_returns_by_hand():
    gamma, lam = 0.5, 0.5
    rewards = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])
    ends = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    next_values = torch.tensor([[4.0, 8.0, 16.0], [4.0, 8.0, 16.0]])
    got = lambda_returns(rewards, ends, next_values, gamma, lam)
    # G2 = 2 + .5 * 16 = 10; G1 = 0 + .5 (.5 * 8 + .5 * 10) = 4.5; G0 = 1 + .5 (.5 * 4 + .5 * 4.5) = 3.125
    # an end at step 1 cuts its future: G1 = 0, G0 = 1 + .5 (.5 * 4 + .5 * 0) = 2
    assert torch.allclose(got, torch.tensor([[3.125, 4.5, 10.0], [2.0, 0.0, 10.0]]))
    # λ = 0: one-step TD targets; λ = 1: discounted sum bootstrapped at the horizon
    assert torch.allclose(lambda_returns(rewards[:1], ends[:1], next_values[:1], 0.5, 0.0), torch.tensor([[3.0, 4.0, 10.0]]))  # fmt: skip
    assert torch.allclose(lambda_returns(rewards[:1], ends[:1], next_values[:1], 0.5, 1.0), torch.tensor([[3.5, 5.0, 10.0]]))  # fmt: skip


def test_lambda_returns_shape_error():
    with pytest.raises(ValueError, match="same"):
        lambda_returns(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), 0.9, 0.9)


def test_loss_gradient_raises_the_rewarded_action():
    """One step, reward 1 for action 0 and 0 otherwise, values 0: descending the loss raises logit 0."""
    logits = torch.zeros(4, 1, 3, requires_grad=True)
    values = torch.zeros(4, 1, requires_grad=True)
    actions = torch.tensor([[0], [1], [2], [0]])
    rewards = (actions == 0).float()
    out = actor_critic_loss(logits, actions, values, rewards, torch.zeros(4, 1), torch.zeros(4, 1))
    out["loss"].backward()
    grad = logits.grad.sum((0, 1))
    assert grad[0] < 0 and grad[1] > 0 and grad[2] > 0  # a gradient step moves logit 0 up, the others down
    assert values.grad.sum() < 0  # and the value towards the positive returns


def test_rewards_enter_as_their_sign():
    logits, values = torch.zeros(1, 2, 2), torch.zeros(1, 2)
    acts, ends, nv = torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2), torch.zeros(1, 2)
    big = actor_critic_loss(logits, acts, values, torch.tensor([[7.0, -3.0]]), ends, nv)
    unit = actor_critic_loss(logits, acts, values, torch.tensor([[1.0, -1.0]]), ends, nv)
    assert torch.allclose(big["returns"], unit["returns"])
    raw = actor_critic_loss(logits, acts, values, torch.tensor([[7.0, -3.0]]), ends, nv, sign_rewards=False)
    assert not torch.allclose(raw["returns"], unit["returns"])


class BanditWorld:
    """A fake world model: reward 1 when the action is `good`, else 0; never ends; constant frames."""

    def __init__(self, good: int, num_actions: int = 3, size: int = 16):
        self.good, self.num_actions, self.context_length = good, num_actions, 4
        self.frame_shape = (size, size, 3)
        self.policy = None
        self.resets = self.steps = 0

    def reset(self, frames, actions=None):
        self.resets += 1
        self.b = frames.shape[0]

    def step(self, actions):
        self.steps += 1
        frames = torch.full((self.b, *self.frame_shape), 128, dtype=torch.uint8)
        return Step(frames, reward=(actions == self.good).float(), done=torch.zeros(self.b, dtype=torch.bool))


def test_bandit_probability_of_the_rewarded_action_rises():
    torch.manual_seed(0)
    net = tiny_agent()
    world = BanditWorld(good=2)
    frames = torch.full((16, 4, 16, 16, 3), 128, dtype=torch.uint8)
    actions = torch.zeros(16, 4, dtype=torch.long)
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    gen = torch.Generator().manual_seed(0)

    def p_good() -> float:
        with torch.no_grad():
            out = imagine(net, world, frames, actions, horizon=3, generator=gen)
        return out.logits.softmax(-1)[..., 2].mean().item()

    before = p_good()
    assert abs(before - 1 / 3) < 1e-5  # DIAMOND's zero-initialised heads: uniform at first
    for _ in range(15):
        out = imagine(net, world, frames, actions, horizon=3, generator=gen)
        loss = actor_critic_loss(
            out.logits, out.actions, out.values, out.rewards, out.ends, out.next_values, out.valid
        )["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert p_good() > 0.6 > before


def test_rollout_shapes_and_no_real_environment(monkeypatch):
    """A real (tiny) DIAMOND world model: shapes, reward signs, valid steps stop after an end, and no
    environment adapter is ever made or stepped."""
    import common.data.envs as envs

    def forbidden(*args, **kwargs):
        raise AssertionError("imagination touched a real environment")

    monkeypatch.setattr(envs, "make_env", forbidden)
    for cls in (envs.Env, envs.AtariEnv, envs.ProcgenEnv, envs.CrafterEnv):
        monkeypatch.setattr(cls, "reset", forbidden)
        monkeypatch.setattr(cls, "step", forbidden)
    torch.manual_seed(0)
    wm = DiamondModule(**TINY_WM).eval().world_model()
    net = tiny_agent()
    b, h = 3, 5
    frames = torch.randint(0, 256, (b, 6, 16, 16, 3), dtype=torch.uint8)
    actions = torch.randint(0, 3, (b, 6))
    out = imagine(net, wm, frames, actions, horizon=h, keep_frames=True)
    assert out.logits.shape == (b, h, 3) and out.logits.requires_grad
    assert out.values.shape == (b, h) and out.values.requires_grad
    for name in ("actions", "rewards", "ends", "next_values", "valid"):
        assert getattr(out, name).shape == (b, h), name
    assert not out.next_values.requires_grad
    assert out.frames.shape == (b, h, 16, 16, 3) and out.frames.dtype == torch.uint8
    assert set(out.rewards.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert out.valid[:, 0].all()
    ended = out.ends.cumsum(1) > 0
    assert not (out.valid[:, 1:] & ended[:, :-1]).any()  # no valid step after a predicted end
    assert torch.allclose(out.next_values[:, :-1], out.values[:, 1:].detach())


def test_world_model_without_rewards_is_refused():
    class NoRewards(BanditWorld):
        def step(self, actions):
            return Step(torch.zeros((self.b, *self.frame_shape), dtype=torch.uint8))

    frames = torch.zeros(2, 4, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="no rewards or ends"):
        imagine(tiny_agent(), NoRewards(0), frames, torch.zeros(2, 4, dtype=torch.long), horizon=2)
