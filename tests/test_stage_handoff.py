"""A later stage is built on the earlier stage's final weights, also when a finished run is extended.

Rerunning a run directory with a larger `trainer.max_steps` trains the earlier stage on; the later stage
resumes and must then hold the earlier stage's new weights (its checkpoint says which ones, and the run
says in one line that they changed), never silently the old ones. Checked through train.py on the
two-stage test family and on the Genie (tokenizer -> dynamics) and Oasis (vae -> dit) modules.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from common.stages import StageError, StageInputs
from tests.test_resume import fake_conf, tiny_args, train


def state(path, prefix: str = "") -> dict[str, torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def changed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "changed since" in line]


def test_extended_run_hands_the_new_earlier_weights_to_the_later_stage(tmp_path):
    conf, data = fake_conf(tmp_path / "conf"), tmp_path / "data"
    args = tiny_args(conf, data) + ["logger=csv", "test=false"]
    run = tmp_path / "run"
    enc_last, pred_last = (
        run / "checkpoints" / "enc" / "last.ckpt",
        run / "checkpoints" / "pred" / "last.ckpt",
    )

    first = train([*args, "trainer.max_steps=2"], run)
    assert first.returncode == 0, first.stderr[-3000:]
    assert changed_lines(first.stderr) == []
    enc2 = state(enc_last)
    assert_same(state(pred_last, "enc."), enc2)

    # the same run extended: enc trains on to step 4, pred resumes from its step-2 checkpoint
    second = train([*args, "trainer.max_steps=4"], run)
    assert second.returncode == 0, second.stderr[-3000:]
    enc4 = state(enc_last)
    assert any(not torch.equal(enc4[k], enc2[k]) for k in enc4), "enc did not train on"
    pred = torch.load(pred_last, map_location="cpu", weights_only=True)
    assert pred["global_step"] == 4
    assert_same(state(pred_last, "enc."), enc4)
    (line,) = changed_lines(second.stderr)
    assert "pred" in line and "enc" in line and "step 2 -> 4" in line, line
    inputs = pred["stage_inputs"]["enc"]
    assert inputs["path"] == str(enc_last) and inputs["global_step"] == 4

    # only enc goes on (pred is finished at step 4): pred's checkpoint is rewritten on the new enc weights
    enc_on = "+stage_overrides={enc: {trainer: {max_steps: 6}}, pred: {trainer: {max_steps: 4}}}"
    third = train([*args, enc_on], run)
    assert third.returncode == 0, third.stderr[-3000:]
    enc6 = state(enc_last)
    pred = torch.load(pred_last, map_location="cpu", weights_only=True)
    assert pred["global_step"] == 4 and pred["stage_inputs"]["enc"]["global_step"] == 6
    assert_same(state(pred_last, "enc."), enc6)
    assert len(changed_lines(third.stderr)) == 1


def fake_checkpoint(module: L.LightningModule, path, step: int = 0) -> str:
    """A Lightning-format checkpoint of `module` without a Trainer (state_dict, hparams, family/stage)."""
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": step}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return str(path)


def test_earlier_stage_of_another_shape_is_refused_in_one_line(tmp_path):
    from tests.fake_family import FakeEnc, FakePred

    enc8 = fake_checkpoint(FakeEnc(code=8), tmp_path / "enc8.ckpt")
    pred8 = fake_checkpoint(FakePred(enc_ckpt=enc8), tmp_path / "pred8.ckpt")
    enc4 = fake_checkpoint(FakeEnc(code=4), tmp_path / "enc4.ckpt")
    module = FakePred(enc_ckpt=enc4)
    inputs = StageInputs(module, "pred", {"enc": enc4})
    with pytest.raises(StageError) as err:
        inputs.check_resume(pred8)
    message = str(err.value)
    assert "\n" not in message and "pred8.ckpt" in message and "enc4.ckpt" in message
    assert "stage=pred resume=false" in message


def fit(module, loader, steps: int, inputs: StageInputs | None = None, ckpt_path=None) -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[inputs] if inputs else [])  # fmt: skip
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer


def handoff_case(earlier_cls, earlier_kw, later_cls, later_kw, key, loader, root):
    """Earlier stage 2 steps -> later stage 2 steps -> earlier on to 4 -> later resumed to 3 steps."""
    torch.manual_seed(0)
    early = earlier_cls(**earlier_kw)
    trainer = fit(early, loader, 2)
    trainer.save_checkpoint(root / "early.ckpt")
    later = later_cls(**{key: str(root / "early.ckpt")}, **later_kw)
    inputs = StageInputs(later, later.stage, {early.stage: str(root / "early.ckpt")})
    trainer = fit(later, loader, 2, inputs)
    trainer.save_checkpoint(root / "later.ckpt")
    assert inputs.check_resume(root / "later.ckpt") == []  # nothing changed: nothing to say or load

    early2 = earlier_cls(**earlier_kw)
    trainer = fit(early2, loader, 4, ckpt_path=root / "early.ckpt")
    trainer.save_checkpoint(root / "early.ckpt")
    resumed = later_cls(**{key: str(root / "early.ckpt")}, **later_kw)
    inputs = StageInputs(resumed, resumed.stage, {early.stage: str(root / "early.ckpt")})
    (line,) = inputs.check_resume(root / "later.ckpt")
    assert "step 2 -> 4" in line and "\n" not in line
    trainer = fit(resumed, loader, 3, inputs, ckpt_path=root / "later.ckpt")
    assert trainer.global_step == 3
    trainer.save_checkpoint(root / "later2.ckpt")
    prefix = f"{early.stage}."
    # the later stage's copy of the earlier stage is the new one, in the module and in its checkpoint
    new = {k: v for k, v in early2.state_dict().items() if k.startswith(prefix)}
    assert_same({k: v for k, v in resumed.state_dict().items() if k.startswith(prefix)}, new)
    assert_same(state(root / "later2.ckpt", prefix), state(root / "early.ckpt", prefix))
    assert (
        torch.load(root / "later2.ckpt", weights_only=True)["stage_inputs"][early.stage]["global_step"] == 4
    )
    return resumed


def test_genie_dynamics_resumes_on_the_new_tokenizer(tmp_path):
    from genie.module import GenieDynamicsModule, GenieTokenizerModule
    from tests.test_genie_module import DYNAMICS, TOKENIZER, Clips

    loader = DataLoader(Clips(), batch_size=4)
    handoff_case(GenieTokenizerModule, TOKENIZER, GenieDynamicsModule, DYNAMICS, "tokenizer_ckpt", loader,
                 tmp_path)  # fmt: skip


def test_oasis_dit_resumes_on_the_new_vae_with_its_own_latent_scale(tmp_path):
    from oasis.module import OasisDiTModule, OasisVAEModule
    from tests.test_oasis_module import Clips

    loader = DataLoader(Clips(), batch_size=2)
    vae = dict(frame_size=32, patch_size=8, enc_dim=32, enc_depth=1, dec_dim=32, dec_depth=1)
    dit = dict(num_actions=5, hidden_size=32, depth=1, num_heads=2, max_frames=8, context_frames=3,
               val_horizon=2, test_horizon=5, log_horizons=[1, 5])  # fmt: skip
    resumed = handoff_case(OasisVAEModule, vae, OasisDiTModule, dit, "vae_ckpt", loader, tmp_path)
    # the DiT's latent scale is the one it was trained with (estimated on its first batch), not re-estimated
    saved = torch.load(tmp_path / "later.ckpt", weights_only=True)["hyper_parameters"]["scaling_factor"]
    assert resumed.hparams.scaling_factor == saved
