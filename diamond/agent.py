"""DiamondAgentModule (stage `agent`): DIAMOND's actor-critic trained in the imagination of a frozen world model.

Runs after the `world_model` stage: `world_model_ckpt` (filled by train.py with this run's
`checkpoints/world_model/last.ckpt`, common/stages.py) is read once, and the world model's constructor
arguments and weights are kept in this module (`world_model_hparams`, submodule `world_model`), so an
agent checkpoint is self-contained: `DiamondAgentModule.load_from_checkpoint(path)` needs nothing else,
and `world_model()` gives play and evaluation a DiamondWorldModel whose `policy` is the trained agent.

Each training step takes a batch of real clips, starts an imagined segment from each clip's first
`context_length` frames (diamond/imagination.py) and minimises DIAMOND's actor-critic loss on it
(`diamond.actor_critic.actor_critic_loss`): REINFORCE with a value baseline on λ-returns, value regression,
entropy bonus. Defaults are DIAMOND's (config/trainer.yaml: horizon 15 = backup_every, gamma 0.985,
lambda 0.95, value weight 1, entropy weight 0.001, rewards as their sign, AdamW lr 1e-4 without weight
decay, eps 1e-8, 100 warm-up steps, gradient norm clipped at 100; config/agent/default.yaml: LSTM 512,
channels [32, 32, 64, 64], down [1, 1, 1, 1]). Validation and test log the imagined return of the
agent from the split's clips (`{split}/imagined_return_clips`, reward signs over `horizon` steps); with
`eval_episodes` > 0 the test also plays that many real episodes with the agent (epsilon 0, DIAMOND's test
setting) and with a uniformly random policy on the same env seeds, and imagines `horizon` steps from the
same starts (common.evaluate_agent.evaluate_policy): `test/return_mean`, `test/return_sem`,
`test/random_return_mean`, `test/random_return_sem`, `test/return_minus_random_z` (the difference in
standard errors of the difference), `test/hns`, `test/imagined_return_mean`. The per-episode returns
stay in `real_game` after the test. With `val_episodes` > 0 each validation plays that many real
episodes with the agent alone (`val/return_mean`, `val/return_sem`): the real-game learning curve.

Errors (one line): no world-model checkpoint, a checkpoint of another family or stage, a world model
without a reward/end model, an action count other than the world model's (a different game).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from common.checkpoint import FamilyCheckpoint, check_family
from common.hparams import plain, plain_hparams
from diamond.actor_critic import ActorCritic, ActorCriticPolicy, actor_critic_loss
from diamond.imagination import imagine
from diamond.module import DiamondModule

LOSS_LOGS = ("loss", "loss_actions", "loss_values", "loss_entropy", "entropy", "returns")


def read_world_model(path: str | None) -> tuple[dict, dict[str, Tensor]]:
    """(constructor arguments, weights) of the DiamondModule in a diamond/world_model checkpoint, its agent
    (if it carries one) left out. One-line ValueError / FileNotFoundError naming what is wrong."""
    if path is None:
        raise ValueError(
            "DiamondAgentModule: world_model_ckpt is null: give model.agent.world_model_ckpt=PATH of a "
            "diamond/world_model checkpoint, or run the world_model stage first in the same run"
        )
    try:
        ckpt = check_family(path, "diamond", "world_model")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"model.agent.world_model_ckpt: world-model checkpoint not found: {path}"
        ) from None
    hparams = dict(ckpt["hyper_parameters"])
    hparams["actor_critic"] = None
    prefix = ("denoiser.", "rew_end_model.")
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not any(k.startswith("rew_end_model.") for k in state):
        raise ValueError(
            f"{path}: the world model has no reward/end model (no rew_end_model.* weights): an agent "
            "learns from predicted rewards and ends; train the world_model stage with its reward/end model"
        )
    return plain(hparams), state


class FrozenWorldModel(DiamondModule):
    """The world-model stage's DiamondModule inside the agent stage, frozen (submodule `world_model`, the
    name common/stages.py hands the `world_model` checkpoint to). Calling it gives what a playing stage's
    `world_model()` gives (common/loader.py): a DiamondWorldModel over its weights, with the agent stage's
    actor-critic (`agent`, set by DiamondAgentModule) as its policy, so `agent_module.world_model()` plays."""

    agent: ActorCriticPolicy | None = None

    def forward(self):
        wm = DiamondModule.world_model(self)
        wm.policy = None if self.agent is None else ActorCriticPolicy(self.agent.net)
        return wm


def frozen_world_model(hparams: dict) -> FrozenWorldModel:
    """FrozenWorldModel(**hparams), built outside DiamondAgentModule.__init__: Lightning's
    save_hyperparameters reads the arguments of every enclosing __init__ frame, and the agent's own (lr,
    channels, num_steps_denoising...) would overwrite the world model's hyperparameters of the same name."""
    return FrozenWorldModel(**hparams)


class DiamondAgentModule(FamilyCheckpoint, L.LightningModule):
    family = "diamond"
    stage = "agent"

    def __init__(
        self,
        world_model_ckpt: str | None = None,
        world_model_hparams: dict | None = None,
        num_actions: int | None = None,
        # actor-critic network (DIAMOND config/agent/default.yaml)
        lstm_dim: int = 512,
        channels: list[int] = (32, 32, 64, 64),
        down: list[int] = (1, 1, 1, 1),
        # imagination and loss (DIAMOND config/trainer.yaml world_model_env, actor_critic_loss)
        horizon: int = 15,
        gamma: float = 0.985,
        lam: float = 0.95,
        weight_value: float = 1.0,
        weight_entropy: float = 0.001,
        sign_rewards: bool = True,
        num_steps_denoising: int | None = None,  # None: the world model's own sampler steps
        # optimisation (DIAMOND config/trainer.yaml actor_critic)
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        eps: float = 1e-8,
        warmup_steps: int = 100,
        max_grad_norm: float = 100.0,
        # real-game evaluation at test (0 episodes: none)
        eval_episodes: int = 0,
        eval_max_steps: int | None = None,
        eval_seed: int = 100_000,
        val_episodes: int = 0,  # real episodes at each validation (val/return_mean: the learning curve)
        env_source: str = "atari",
        env_game: str | None = None,
        env_options: dict | None = None,
    ) -> None:
        super().__init__()
        state = None
        if world_model_hparams is None:  # first construction: read the world-model stage's checkpoint
            world_model_hparams, state = read_world_model(world_model_ckpt)
        world_model_hparams = plain(world_model_hparams)
        wm_actions = int(world_model_hparams["num_actions"])
        if num_actions is not None and int(num_actions) != wm_actions:
            raise ValueError(
                f"model.agent.num_actions={num_actions} (game {env_game}) but the world model "
                f"{world_model_ckpt} has {wm_actions} actions: use the world model's game (data.game)"
            )
        num_actions = wm_actions
        self.save_hyperparameters()
        plain_hparams(self)
        self.world_model = frozen_world_model(world_model_hparams)
        if state is not None:
            self.world_model.load_state_dict(state)
        self.world_model.requires_grad_(False).eval()
        hp = world_model_hparams
        self.actor_critic = ActorCritic(
            hp["img_channels"], hp["frame_size"], num_actions, lstm_dim, list(channels), list(down)
        )
        self.actor_critic.to(memory_format=torch.channels_last)
        self.world_model.agent = ActorCriticPolicy(self.actor_critic)  # a plain object: no weights twice

    def train(self, mode: bool = True):
        super().train(mode)
        self.world_model.eval()  # frozen
        return self

    # ------------------------------------------------------------------------------------- inference
    def imagination_model(self):
        """The frozen world model as a DiamondWorldModel without a policy (the agent acts through `imagine`)."""
        wm = DiamondModule.world_model(self.world_model)
        steps = self.hparams.num_steps_denoising
        if steps is not None:
            from diamond.sampler import DiffusionSampler

            h = self.world_model.hparams
            wm.sampler = DiffusionSampler(
                self.world_model.denoiser, steps, h.sampler_sigma_min, h.sampler_sigma_max, h.sampler_rho,
                h.sampler_order,
            )  # fmt: skip
        return wm

    def imagine(self, batch: dict[str, Tensor], generator: torch.Generator | None = None, **kwargs):
        n = self.world_model.hparams.context_length
        frames, actions = batch["frames"], batch["actions"].long()
        if frames.shape[1] < n:
            raise ValueError(f"agent: clips of {frames.shape[1]} frames, need >= {n} (the context)")
        return imagine(
            self.actor_critic,
            self.imagination_model(),
            frames[:, :n],
            actions[:, :n],
            self.hparams.horizon,
            generator=generator,
            **kwargs,
        )

    @torch.no_grad()
    def sample_video(self, batch: dict[str, Tensor]) -> Tensor:
        """The agent playing in imagination from each clip's context: uint8 (B, n + k, H, W, C), the n real
        context frames then k = min(horizon, T - n) imagined ones (common/callbacks.py sample videos)."""
        n = self.world_model.hparams.context_length
        out = self.imagine(batch, generator=torch.Generator().manual_seed(0), keep_frames=True)
        k = max(1, min(self.hparams.horizon, batch["frames"].shape[1] - n))
        return torch.cat((batch["frames"][:, :n], out.frames[:, :k].to(batch["frames"].device)), 1)

    # ------------------------------------------------------------------------------------- training
    def losses(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        hp = self.hparams
        out = self.imagine(batch, generator=generator)
        losses = actor_critic_loss(
            out.logits, out.actions, out.values, out.rewards, out.ends, out.next_values, out.valid,
            hp.gamma, hp.lam, hp.weight_value, hp.weight_entropy, hp.sign_rewards,
        )  # fmt: skip
        losses["imagined_return"] = out.returns.mean()
        losses["imagined_end_rate"] = out.ends.mean()
        return losses

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.losses(batch)
        b = batch["frames"].shape[0]
        for name in (*LOSS_LOGS, "imagined_return", "imagined_end_rate"):
            self.log(f"train/{name}", out[name], prog_bar=name == "imagined_return", batch_size=b)
        return out["loss"]

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, prefix: str) -> None:
        with torch.no_grad():
            out = self.losses(batch, generator=torch.Generator().manual_seed(batch_idx))
        b = batch["frames"].shape[0]
        for name in (*LOSS_LOGS, "imagined_end_rate"):
            self.log(f"{prefix}/{name}", out[name], on_epoch=True, sync_dist=True, batch_size=b)
        # the agent's imagined return from the split's clips (reward signs over `horizon` steps)
        self.log(
            f"{prefix}/imagined_return_clips", out["imagined_return"], on_epoch=True, sync_dist=True,
            batch_size=b,
        )  # fmt: skip

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self.hparams.val_episodes > 0 and not self.trainer.sanity_checking:
            for name, value in self.real_game_returns("val").items():
                self.log(name, value, rank_zero_only=True)

    def on_test_epoch_end(self) -> None:
        if self.hparams.eval_episodes > 0:
            for name, value in self.real_game_returns("test").items():
                self.log(name, value, rank_zero_only=True)

    # ------------------------------------------------------------------------------------- real game
    @torch.no_grad()
    def real_game_returns(self, split: str = "test") -> dict[str, float]:
        """test: the agent's and a uniform policy's returns over `eval_episodes` real episodes on the same env
        seeds, and the agent's imagined return from the same starts over `horizon` steps
        (common.evaluate_agent.evaluate_policy; the agent at epsilon 0, actions sampled from its softmax).
        val: the agent's return alone over `val_episodes` episodes on other seeds (eval_seed + 10^6 on)."""
        from common.data.envs import make_env
        from common.evaluate_agent import evaluate_policy

        hp = self.hparams
        if hp.env_game is None:
            raise ValueError("model.agent.env_game is null: name the real game to evaluate in (data.game)")
        env = make_env(hp.env_source, hp.env_game, **(hp.env_options or {}))
        was_training = self.actor_critic.training
        self.actor_critic.eval()
        try:
            agent = ActorCriticPolicy(
                self.actor_critic, generator=torch.Generator().manual_seed(hp.eval_seed)
            )
            test = split == "test"
            world_model = DiamondModule.world_model(self.world_model) if test else None
            if world_model is not None:
                world_model.seed(hp.eval_seed)
            out = evaluate_policy(
                agent, world_model, env, hp.env_game if hp.env_source == "atari" else None,
                int(hp.eval_episodes if test else hp.val_episodes), int(hp.eval_seed) + (0 if test else 10**6),
                0.0, hp.eval_max_steps, hp.horizon, random_baseline=test, prefix=split,
            )  # fmt: skip
        finally:
            self.actor_critic.train(was_training)
            env.close()
        if test:
            self.real_game = {k: out[k] for k in ("real", "random", "imagination")}  # per-episode values
        return out["metrics"]

    # ------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        from common.optim import adamw_warmup_cosine

        hp = self.hparams
        params, betas = self.actor_critic.parameters(), (0.9, 0.999)  # AdamW's default betas, as DIAMOND
        warmup = max(1, hp.warmup_steps)  # then constant, DIAMOND's warm-up from 0
        return adamw_warmup_cosine(self, params, hp.lr, betas, hp.weight_decay, warmup, eps=hp.eps, offset=0)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """DIAMOND clips the actor-critic's gradient norm at 100."""
        torch.nn.utils.clip_grad_norm_(self.actor_critic.parameters(), self.hparams.max_grad_norm)
