"""Genie stages: tokenizer -> dynamics handoff, self-contained dynamics checkpoints, WorldModel, test metrics."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from common.world_model import Step, WorldModel, load_world_model
from genie.module import GenieDynamicsModule, GenieTokenizerModule
from genie.world_model import GenieWorldModel

TOKENIZER = dict(frame_size=16, patch_size=4, d_model=32, num_heads=2, enc_layers=1, dec_layers=1,
                 num_codes=32, code_dim=8, warmup_steps=2, lr=1e-3, min_lr=1e-3)  # fmt: skip
DYNAMICS = dict(frame_size=16, max_frames=6, num_latent_actions=3, lam_patch_size=8, lam_d_model=32,
                lam_num_heads=2, lam_enc_layers=1, lam_dec_layers=1, lam_code_dim=8, dyn_d_model=32,
                dyn_num_heads=2, dyn_num_layers=1, maskgit_steps=3, context_frames=2, rollout_horizon=3,
                delta_t=4, rollout_batches=1, rollout_clips=2, warmup_steps=2, lr=1e-3, min_lr=1e-4,
                env_game="procgen:coinrun", num_env_actions=15)  # fmt: skip


class Clips(Dataset):
    """Moving bright squares on a dark background: uint8 (T, 16, 16, 3) clips in the batch format."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        frames = torch.full((6, 16, 16, 3), 20, dtype=torch.uint8)
        for t in range(6):
            x = (i + 2 * t) % 12
            frames[t, 4:8, x : x + 4] = 230
        actions = torch.tensor([7, 8, 1, 4, 7, 2])  # RIGHT, RIGHT_UP, LEFT, NOOP, RIGHT, LEFT_UP
        return {"frames": frames, "actions": actions, "seeds": torch.tensor(100 + i // 2)}


def trainer(steps=4):
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("genie")
    data = DataLoader(Clips(), batch_size=4)
    tok = GenieTokenizerModule(**TOKENIZER)
    t = trainer()
    t.fit(tok, data)
    tok_path = root / "tokenizer.ckpt"
    t.save_checkpoint(tok_path)
    dyn = GenieDynamicsModule(tokenizer_ckpt=str(tok_path), **DYNAMICS)
    torch.testing.assert_close(dyn.tokenizer.patch_in.weight, tok.tokenizer.patch_in.weight)
    t = trainer()
    t.fit(dyn, data)
    metrics = t.test(dyn, data, verbose=False)[0]
    dyn_path = root / "dynamics.ckpt"
    t.save_checkpoint(dyn_path)
    return tok_path, dyn_path, metrics


def test_dynamics_test_metrics(checkpoints):
    metrics = checkpoints[2]
    for name in ["psnr_next", "psnr_copy_last", "rollout_psnr_k3", "rollout_copy_last_k3", "delta_psnr_t4",
                 "delta_psnr_t4_low", "delta_psnr_t4_high", "action_nmi", "action_nmi_shuffled", "action_nmi_p",
                 "action_usage", "action_entropy", "dyn_ce"]:  # fmt: skip
        assert f"test/{name}" in metrics, name
    assert (
        metrics["test/delta_psnr_t4_low"]
        <= metrics["test/delta_psnr_t4"]
        <= metrics["test/delta_psnr_t4_high"]
    )
    assert 0 <= metrics["test/action_nmi"] <= 1 and 0 <= metrics["test/action_nmi_shuffled"] <= 1


def test_action_probe_table_pairs_latent_actions_with_grouped_controls(checkpoints):
    """The test's contingency table counts every test transition (8 clips x 5) by latent action and CoinRun
    control; its latent actions are the LAM's on those frames."""
    module = GenieDynamicsModule.load_from_checkpoint(checkpoints[1], weights_only=True)
    data = DataLoader(Clips(), batch_size=4)
    trainer().test(module, data, verbose=False)
    record = module.eval_records["test/action_nmi"]
    assert record["controls"] == ["NOOP", "LEFT", "RIGHT", "JUMP", "LEFT+JUMP", "RIGHT+JUMP"]
    table = torch.tensor(record["table"])
    assert table.shape == (3, 6) and table.sum() == 8 * 5 == record["transitions"]
    # per clip: RIGHT, RIGHT+JUMP, LEFT, NOOP, RIGHT -> column sums 8 x (1 NOOP, 1 LEFT, 2 RIGHT, 1 R+J)
    assert table.sum(0).tolist() == [8, 8, 16, 0, 0, 8]
    latent = torch.cat([module.latent_actions(b["frames"])[:, :-1].flatten() for b in data])
    assert table.sum(1).tolist() == torch.bincount(latent, minlength=3).tolist()
    clips = module.eval_records["test/delta_psnr_t4"]
    assert clips["clips"] == 2 and clips["seeds"] == [100, 100]  # rollout_batches=1 x rollout_clips=2


def test_tokenizer_test_metrics(checkpoints):
    metrics = trainer().test(
        GenieTokenizerModule.load_from_checkpoint(checkpoints[0]), DataLoader(Clips(), 4)
    )
    assert {"test/psnr_recon", "test/codebook_usage", "test/codebook_perplexity"} <= set(metrics[0])


def test_dynamics_checkpoint_is_self_contained(checkpoints, tmp_path):
    tok_path, dyn_path, _ = checkpoints
    moved = tmp_path / "dyn.ckpt"
    moved.write_bytes(dyn_path.read_bytes())  # the tokenizer checkpoint is not needed to load it
    module = GenieDynamicsModule.load_from_checkpoint(
        moved, tokenizer_ckpt="/nonexistent.ckpt", weights_only=True
    )
    assert module.hparams.tokenizer_hparams["d_model"] == 32
    wm = load_world_model(moved)
    assert isinstance(wm, GenieWorldModel) and isinstance(wm, WorldModel)


def test_handoff_errors(checkpoints, tmp_path):
    tok_path, dyn_path, _ = checkpoints
    with pytest.raises(ValueError, match="checkpoint of genie/dynamics, expected genie/tokenizer"):
        GenieDynamicsModule(tokenizer_ckpt=str(dyn_path), **DYNAMICS)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        GenieDynamicsModule(tokenizer_ckpt=str(tmp_path / "missing.ckpt"), **DYNAMICS)
    with pytest.raises(ValueError, match="tokenizer_ckpt is null"):
        GenieDynamicsModule(**DYNAMICS)


def test_world_model_rollout_shapes_and_range(checkpoints):
    wm = GenieWorldModel.from_checkpoint(checkpoints[1])
    assert wm.num_actions == 3 and wm.frame_shape == (16, 16, 3)
    frames = Clips()[0]["frames"][None].expand(2, -1, -1, -1, -1)
    wm.reset(frames[:, :2])
    for _ in range(7):  # beyond max_frames: the window slides
        step = wm.step(torch.tensor([0, 2]))
        assert (
            isinstance(step, Step)
            and step.frames.shape == (2, 16, 16, 3)
            and step.frames.dtype == torch.uint8
        )
    with pytest.raises(ValueError, match="action 3 out of range"):
        wm.step(torch.tensor([0, 3]))


def test_infer_actions_windows_long_videos(checkpoints):
    wm = GenieWorldModel.from_checkpoint(checkpoints[1])
    clip = Clips()[0]["frames"]
    long = torch.cat([clip, clip.flip(0), clip])[None]  # longer than max_frames
    assert long.shape[1] > wm.max_frames
    actions = wm.infer_actions(long)
    assert actions.shape == (1, long.shape[1] - 1) and actions.dtype == torch.long
    assert 0 <= actions.min() and actions.max() < wm.num_actions
    first = wm.infer_actions(long[:, : wm.max_frames])
    assert torch.equal(actions[:, : wm.max_frames - 1], first), "the first window is read as on its own"


def assert_cached_equals_uncached(module, frames):
    """Five generated frames from the first 3 of `frames` (uint8 (2, T, H, W, C)) are equal with the world
    model's caches and without them."""
    outputs = []
    for use_cache in (True, False):
        wm = module.world_model(use_cache=use_cache, seed=0, maskgit_steps=4)
        wm.reset(frames[:, :3])
        outputs.append(torch.stack([wm.step(torch.tensor([1, 2])).frames for _ in range(5)], 1))
    assert torch.equal(outputs[0], outputs[1])


def test_cached_equals_uncached(checkpoints):
    module = GenieDynamicsModule.load_from_checkpoint(checkpoints[1], weights_only=True)
    frames = torch.stack([Clips()[i]["frames"] for i in range(2)])
    assert_cached_equals_uncached(module, frames)


def test_copy_gate_module_trains_and_cached_equals_uncached(checkpoints):
    """copy_gate=True through the stage: a training step's loss is finite, and the world model's cached
    generation (the gate reads the last frame's codes) matches the uncached one."""
    torch.manual_seed(0)
    module = GenieDynamicsModule(tokenizer_ckpt=str(checkpoints[0]), **{**DYNAMICS, "copy_gate": True})
    with torch.no_grad():
        module.dynamics.copy_gate.bias.fill_(2.0)  # a gate that matters
    frames = torch.stack([Clips()[i]["frames"] for i in range(2)])
    loss, logs, _ = module._losses(frames)
    assert torch.isfinite(loss) and 0 <= logs["dyn_token_acc"] <= 1
    assert_cached_equals_uncached(module, frames)
