"""Stage `agent` (diamond/agent.py): DIAMOND's actor-critic trained in a frozen world model's imagination.

The module reads the world-model stage's checkpoint and refuses, in one line, what it cannot train on;
its checkpoint plays (the world model with the trained agent as its policy); `train.py` runs both stages
of `diamond_boxing_agent_tiny` under fast_dev_run and writes the real-game returns into metrics.json.
"""

from __future__ import annotations

import json

import pytest
import torch

from common.loader import load_world_model
from diamond.agent import DiamondAgentModule
from diamond.module import DiamondModule
from tests.conftest import compose_train, run_train, tiny_data

TINY_WM = dict(
    num_actions=3, frame_size=16, cond_channels=16, depths=[1, 1], channels=[8, 8],
    attn_depths=[False, False], rew_lstm_dim=8, rew_cond_channels=8, rew_depths=[1, 1],
    rew_channels=[8, 8], rew_attn_depths=[False, False],
)  # fmt: skip
TINY_AGENT = dict(lstm_dim=8, channels=[4, 4], down=[1, 1], horizon=3, warmup_steps=1)


def world_model_checkpoint(path, drop_reward_end: bool = False, stage: str = "world_model"):
    module = DiamondModule(**TINY_WM)
    state = module.state_dict()
    if drop_reward_end:
        state = {k: v for k, v in state.items() if not k.startswith("rew_end_model.")}
    ckpt = {"state_dict": state, "hyper_parameters": dict(module.hparams)}
    ckpt["worldplay"] = {"family": "diamond", "stage": stage}
    torch.save(ckpt, path)
    return module


def batch(b: int = 2, t: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "frames": torch.randint(0, 256, (b, t, 16, 16, 3), dtype=torch.uint8, generator=g),
        "actions": torch.randint(0, 3, (b, t), generator=g),
    }


def test_world_model_weights_are_copied_and_frozen(tmp_path):
    wm = world_model_checkpoint(tmp_path / "wm.ckpt")
    agent = DiamondAgentModule(
        world_model_ckpt=str(tmp_path / "wm.ckpt"),
        num_actions=3,
        lr=5e-3,
        num_steps_denoising=1,
        **TINY_AGENT,
    )
    assert dict(agent.world_model.hparams) == dict(wm.hparams)  # the agent's lr, channels... stay its own
    for k, v in wm.state_dict().items():
        assert torch.equal(agent.world_model.state_dict()[k], v), k
    assert not any(p.requires_grad for p in agent.world_model.parameters())
    assert all(p.requires_grad for p in agent.actor_critic.parameters())
    loss = agent.losses(batch())["loss"]
    loss.backward()
    assert all(p.grad is None for p in agent.world_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor_critic.parameters())


def test_no_world_model_checkpoint():
    with pytest.raises(ValueError, match="world_model_ckpt is null") as e:
        DiamondAgentModule(world_model_ckpt=None)
    assert "\n" not in str(e.value)


def test_missing_world_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.agent.world_model_ckpt.*nowhere.ckpt"):
        DiamondAgentModule(world_model_ckpt=str(tmp_path / "nowhere.ckpt"))


def test_checkpoint_of_another_stage(tmp_path):
    world_model_checkpoint(tmp_path / "a.ckpt", stage="agent")
    with pytest.raises(ValueError, match="checkpoint of diamond/agent, expected diamond/world_model"):
        DiamondAgentModule(world_model_ckpt=str(tmp_path / "a.ckpt"))


def test_world_model_without_reward_end_model(tmp_path):
    world_model_checkpoint(tmp_path / "wm.ckpt", drop_reward_end=True)
    with pytest.raises(ValueError, match="no reward/end model") as e:
        DiamondAgentModule(world_model_ckpt=str(tmp_path / "wm.ckpt"))
    assert "\n" not in str(e.value)


def test_game_with_another_action_count(tmp_path):
    world_model_checkpoint(tmp_path / "wm.ckpt")
    with pytest.raises(ValueError, match=r"num_actions=6 \(game Pong\).* has 3 actions"):
        DiamondAgentModule(world_model_ckpt=str(tmp_path / "wm.ckpt"), num_actions=6, env_game="Pong")


def test_agent_checkpoint_plays(tmp_path):
    """The agent stage's module reloads from its checkpoint alone, and `world_model()` is the world model
    with the trained agent as its policy (what play's `m` and common.evaluate_agent use)."""
    import lightning as L

    world_model_checkpoint(tmp_path / "wm.ckpt")
    agent = DiamondAgentModule(world_model_ckpt=str(tmp_path / "wm.ckpt"), num_actions=3, **TINY_AGENT)
    with torch.no_grad():
        agent.actor_critic.actor_linear.bias.copy_(torch.tensor([0.0, 0.0, 9.0]))  # an agent that picks 2
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(agent)
    trainer.save_checkpoint(tmp_path / "agent.ckpt")
    (tmp_path / "wm.ckpt").unlink()  # self-contained: the world model's file is no longer needed
    ckpt = torch.load(tmp_path / "agent.ckpt", weights_only=True)
    assert ckpt["worldplay"] == {"family": "diamond", "stage": "agent"}
    loaded = DiamondAgentModule.load_from_checkpoint(tmp_path / "agent.ckpt", weights_only=True)
    # play.py and common.evaluate_agent open a checkpoint through common.loader
    for wm in (loaded.world_model(), load_world_model(tmp_path / "agent.ckpt")):
        assert wm.policy is not None and wm.num_actions == 3
        frames = batch(2, 4)["frames"]
        wm.reset(frames)
        assert (wm.policy.act(frames[:, -1]) == 2).all()
        assert wm.step(torch.tensor([2, 2])).frames.shape == (2, 16, 16, 3)


def test_experiment_composes():
    cfg = compose_train(["experiment=diamond_boxing_agent_tiny"])
    assert list(cfg.model.keys()) == ["world_model", "agent"]
    agent = cfg.model.agent
    assert agent._target_ == "diamond.agent.DiamondAgentModule" and agent.world_model_ckpt is None
    assert cfg.data.game == "Boxing" and agent.num_actions == 18 and agent.env_game == "Boxing"
    assert agent.eval_episodes >= 30


def test_diamond_defaults():
    """DIAMOND's config/trainer.yaml and config/agent/default.yaml values in conf/model/diamond_agent.yaml."""
    cfg = compose_train(["model=diamond_agent", "data=atari"])
    a = cfg.model.agent
    assert (a.horizon, a.gamma, a.lam, a.weight_value, a.weight_entropy) == (15, 0.985, 0.95, 1.0, 0.001)
    assert a.sign_rewards and (a.lr, a.weight_decay, a.eps, a.warmup_steps, a.max_grad_norm) == (
        1e-4, 0.0, 1e-8, 100, 100.0,
    )  # fmt: skip
    assert (a.lstm_dim, list(a.channels), list(a.down)) == (512, [32, 32, 64, 64], [1, 1, 1, 1])


@pytest.mark.slow
def test_fast_dev_run_both_stages(data_dir, tmp_path):
    overrides = ["experiment=diamond_boxing_agent_tiny", "trainer.fast_dev_run=true"]
    overrides += tiny_data("atari", data_dir, clip_length=8) + [
        "data.game=Boxing",
        "data.name=atari_boxing_test",
    ]
    overrides += ["model.agent.eval_episodes=2", "model.agent.eval_max_steps=5"]
    out = run_train(overrides, tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "agent" / "last.ckpt", weights_only=True)
    assert ckpt["worldplay"] == {"family": "diamond", "stage": "agent"}
    assert ckpt["hyper_parameters"]["world_model_ckpt"].endswith("checkpoints/world_model/last.ckpt")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "test/return_mean", "test/return_sem", "test/random_return_mean", "test/random_return_sem",
        "test/imagined_return_mean", "time/agent_wall_s",
    ):  # fmt: skip
        assert key in metrics, sorted(metrics)
    # play, headless, the trained agent holding the keys (what `m` does in the window)
    import subprocess
    import sys

    from tests.conftest import ROOT

    gif = tmp_path / "agent.gif"
    cmd = [sys.executable, str(ROOT / "play.py"), f"checkpoint={tmp_path}/checkpoints/agent/last.ckpt"]
    out = subprocess.run(
        cmd + [f"record={gif}", "steps=2", "policy=agent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and gif.is_file(), out.stderr[-2000:]


def test_agent_stage_without_world_model_checkpoint(tmp_path):
    out = run_train(["experiment=diamond_boxing_agent_tiny", "stage=agent"], tmp_path)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "needs the world_model checkpoint" in last and "world_model/last.ckpt not found" in last, last
