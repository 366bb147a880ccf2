"""What `python play.py` does once Hydra has composed conf/play.yaml: load, wire, play or record.

`checkpoint=PATH` is a worldplay checkpoint; `pretrained=NAME` one that common.hub resolves (a known name
such as diamond/Breakout or oasis/500m, downloaded and converted on first use, or a local upstream file).
The family comes from the checkpoint; the dataset (held-out context episodes, env source and game,
action names) from the datamodule hyperparameters the checkpoint holds. Contexts come from a held-out
dataset episode when the checkpoint names a dataset, else from the real env it names with the options
stored with it (converted DIAMOND weights: DIAMOND's Atari preprocessing, common/hub.py
DIAMOND_ATARI_ENV); `context=file:PATH` starts from an image or a video instead (no real env unless
source=/game= name one). What the model offers is read from the WorldModel interface, never from its
family's name: latent actions (`latent_actions`, Genie) get a latent keymap and `policy=dataset` plays
the latent actions `infer_actions` reads from the episode; a model of action vectors (`vector_actions`)
with 25 actions and no action names (converted open-oasis weights) takes Minecraft action vectors: the
Minecraft keymap. The checkpoint's agent (`WorldModel.policy`) plays on `m` in the window and with
`policy=agent` headless.
A window needs a display; `record=` runs headless on SDL's dummy driver.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from common.action_nmi import latent_legend
from common.play.context import (
    DatasetContext,
    DatasetInfo,
    FileContext,
    check_context_file,
    dataset_info,
    env_context,
)
from common.play.keymaps import MINECRAFT, MINECRAFT_ACTIONS, Keymap, keymap_for, with_overrides
from common.play.policies import AgentPolicy, SequencePolicy, action_batch, make_policy
from common.play.recorder import check_writable, record
from common.play.session import Session


def checkpoint_path(cfg) -> str:
    """`checkpoint=PATH`, or the worldplay checkpoint common.hub resolves `pretrained=NAME` to (with
    `revision=`, and `game=` for a local DIAMOND .pt). One-line errors."""
    if cfg.pretrained and cfg.checkpoint:
        raise ValueError("give pretrained=NAME or checkpoint=PATH, not both")
    if not cfg.pretrained:
        return cfg.checkpoint
    from common.hub import resolve

    return str(resolve(str(cfg.pretrained), revision=cfg.revision, game=cfg.game))


def load(checkpoint: str, device: str) -> tuple[Any, dict, str]:
    """-> (world model, checkpoint dict, family), the file read once (common.loader). One-line errors for a
    missing / foreign checkpoint."""
    from common.loader import load as load_checkpoint

    if not checkpoint:
        raise ValueError(
            "checkpoint=PATH or pretrained=NAME is required (e.g. <run_dir>/checkpoints/<stage>/last.ckpt, "
            "or pretrained=diamond/Breakout; `python -m common.hub list` names the pretrained models)"
        )
    world_model, ckpt = load_checkpoint(checkpoint, device=device)
    return world_model, ckpt.content, ckpt.family


def make_real_env(info: DatasetInfo):
    from common.data.envs import make_env

    if info.source is None:
        raise ValueError(
            "the checkpoint names no real environment: pass source=S game=G, or use context=file:PATH"
        )
    return make_env(info.source, info.game, **info.env_options)


def run(cfg) -> None:
    """cfg: the composed conf/play.yaml (see there for every key)."""
    from common.play.window import has_display

    torch.set_num_threads(int(cfg.threads))
    if cfg.record:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        check_writable(cfg.record)
    elif not has_display():
        raise RuntimeError("no display: use record=out.mp4 (headless), or run where a display is")
    context_file = _context_file(cfg.context, str(cfg.policy))
    checkpoint = checkpoint_path(cfg)
    world_model, ckpt, family = load(checkpoint, cfg.device)
    torch.manual_seed(int(cfg.seed))  # the model's and the agent's sampling
    agent = AgentPolicy(world_model.policy, cfg.device) if world_model.policy is not None else None
    if cfg.policy == "agent" and agent is None:
        raise ValueError(
            f"policy=agent: {checkpoint} carries no agent (its world model has no policy); use policy=random, "
            "or a checkpoint with one (e.g. pretrained=diamond/Breakout)"
        )
    latent = world_model.latent_actions
    info = dataset_info(ckpt, checkpoint, cfg.data_dir, cfg.split)
    mode = "file" if context_file else str(cfg.context or ("dataset" if info.path else "env"))
    if mode == "dataset" and info.path is None:
        raise ValueError(info.missing)
    named_env = bool(cfg.source or cfg.game)
    info.source, info.game = cfg.source or info.source, cfg.game or info.game
    context = None
    meanings: list[str] | None = None
    fps = 15
    if mode == "dataset":
        context = DatasetContext(info.path, world_model.context_length, info.seeds)
        meanings, fps = context.action_meanings, context.fps
    env, env_error = None, None
    if mode == "env" or (cfg.real_env and not cfg.record and (named_env or not context_file)):
        try:
            env = make_real_env(info)
            meanings, fps = meanings or env.action_meanings, env.fps
        except Exception as e:  # noqa: BLE001 - with a dataset context, no env only disables the env view
            if mode == "env":
                raise
            env_error = e
    fps = int(cfg.fps or fps)
    minecraft = (
        world_model.vector_actions and world_model.num_actions == len(MINECRAFT_ACTIONS) and not meanings
    )
    source = MINECRAFT if minecraft else info.source
    title = f"{source or 'file'}/{info.game or ''} ({family})".replace("/ (", " (")
    env_keymap = (
        keymap_for(info.source, meanings, len(meanings), game=info.game) if (latent and meanings) else None
    )
    keymap = with_overrides(
        keymap_for(
            source,
            meanings,
            world_model.num_actions,
            latent,
            game=info.game,
            latent_matches=latent_legend(checkpoint, world_model.num_actions) if latent else None,
        ),
        dict(cfg.bindings or {}),
    )
    if context_file:
        noop = env_keymap.default_action if env_keymap else keymap.default_action
        context = FileContext(
            context_file, world_model.frame_shape, world_model.context_length, noop, cfg.seed
        )
    if cfg.compile:
        from common.play.compile import compile_world_model

        warm = context(0) if context is not None else env_context(env, cfg.seed, world_model.context_length)
        compile_world_model(world_model, lambda: _warmup(world_model, warm, latent, keymap, cfg.device))
    if cfg.record:
        _record(cfg, world_model, context, env, latent, fps, keymap, agent)
        return
    session = Session(
        world_model,
        keymap,
        context=context,
        make_env=_env_factory(env, env_error) if (env or env_error) else None,
        env_keymap=env_keymap,
        max_steps=int(cfg.max_steps),
        seed=int(cfg.seed),
        device=cfg.device,
        fps=fps,
        threads=int(cfg.threads),
    )
    from common.play.window import Window

    try:
        Window(session, title, size=int(cfg.size), fps=fps).run()
    finally:
        session.close()


def _context_file(spec: str | None, policy: str) -> str | None:
    """`context=`: null | dataset | env | file:PATH -> PATH (checked before the model loads), None otherwise."""
    if spec in (None, "dataset", "env"):
        return None
    if not spec.startswith("file:"):
        raise ValueError(f"context={spec!r}: expected dataset, env or file:PATH (an image or a video)")
    if policy == "dataset":
        raise ValueError("policy=dataset needs context=dataset: a context file has no real continuation")
    return str(check_context_file(spec.removeprefix("file:")))


def _env_factory(env, error: Exception | None):
    def make():
        if error is not None:
            raise error
        return env

    return make


def _warmup(world_model, ctx, latent: bool, keymap: Keymap, device: str) -> None:
    with torch.inference_mode():
        world_model.reset(
            torch.from_numpy(ctx.frames).to(device)[None],
            None if latent else torch.from_numpy(ctx.actions).to(device)[None],
        )
        world_model.step(action_batch(keymap.default_action, device))


def _record(
    cfg, world_model, context, env, latent: bool, fps: int, keymap: Keymap, agent: AgentPolicy | None
) -> None:
    ctx = context(int(cfg.episode)) if context is not None else None
    if ctx is None:
        ctx = env_context(env, int(cfg.seed), world_model.context_length, keymap.default_action)
    with_real = cfg.policy == "dataset"
    if with_real and latent:
        policy = SequencePolicy(_latent_actions(world_model, ctx), "latent actions of the dataset episode")
    else:
        policy = make_policy(
            cfg.policy, world_model.num_actions, int(cfg.seed), ctx.future_actions, keymap.vector_actions,
            agent,
        )  # fmt: skip
    steps = int(cfg.steps)
    if isinstance(policy, SequencePolicy):
        steps = min(steps, len(policy))
    out = record(
        world_model, ctx, policy, steps, cfg.record, fps=fps, with_real=with_real,
        scale=int(cfg.record_scale), latent=latent, device=cfg.device,
    )  # fmt: skip
    print(f"wrote {out.path}: {len(out.frames)} frames of {out.frames.shape[2]}x{out.frames.shape[1]}")
    if out.psnr is not None:
        print(
            f"rollout PSNR over {len(out.psnr)} steps: mean {out.psnr.mean():.2f} dB, "
            f"k=1 {out.psnr[0]:.2f} dB, k={len(out.psnr)} {out.psnr[-1]:.2f} dB"
        )


def _latent_actions(world_model, ctx) -> np.ndarray:
    """A latent-action model on a dataset episode: the latent actions it infers from the real frames."""
    frames = np.concatenate([ctx.frames[-1:], ctx.future_frames])
    with torch.inference_mode():
        actions = world_model.infer_actions(torch.from_numpy(frames)[None])
    return np.asarray(torch.as_tensor(actions).reshape(-1).cpu(), dtype=np.int64)
