"""train.py end to end on the small two-stage test family: stage handoff, metrics.json, eval-only, errors."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_train, tiny_data

FAKE_MODEL = """\
enc:
  _target_: tests.fake_family.FakeEnc
  frame_size: ${data.frame_size}
pred:
  _target_: tests.fake_family.FakePred
  enc_ckpt: null
"""


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """(base overrides, finished run dir) for a full two-stage run."""
    conf = tmp_path_factory.mktemp("conf")
    (conf / "model").mkdir()
    (conf / "model" / "fake.yaml").write_text(FAKE_MODEL)
    data = tmp_path_factory.mktemp("data")
    base = [
        f"hydra.searchpath=[file://{conf}]",
        "model=fake",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
    ]
    base += tiny_data("procgen", data)
    run_dir = tmp_path_factory.mktemp("run")
    out = run_train(base, run_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    return base, run_dir


def test_two_stages_in_one_run_dir(fake):
    _, run_dir = fake
    for stage in ("enc", "pred"):
        ckpt = torch.load(run_dir / "checkpoints" / stage / "last.ckpt", weights_only=True)
        assert ckpt["worldplay"] == {"family": "fake", "stage": stage}
        assert ckpt["global_step"] == 6
        assert (run_dir / "csv" / stage / "metrics.csv").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {k for k in metrics if k.startswith("test/")} == {"test/psnr_recon", "test/loss"}
    assert metrics["time/enc_steps"] == metrics["time/pred_steps"] == 6  # and each stage's clock
    assert (run_dir / "config.yaml").read_text().count("_target_: tests.fake_family.FakePred") == 1
    pred = torch.load(run_dir / "checkpoints" / "pred" / "last.ckpt", weights_only=True)
    assert pred["hyper_parameters"]["enc_ckpt"] == str(run_dir / "checkpoints" / "enc" / "last.ckpt")
    enc = torch.load(run_dir / "checkpoints" / "enc" / "last.ckpt", weights_only=True)
    torch.testing.assert_close(pred["state_dict"]["enc.enc.weight"], enc["state_dict"]["enc.weight"])


def test_rerun_resumes_finished_stages_without_training(fake, tmp_path):
    base, run_dir = fake
    before = torch.load(run_dir / "checkpoints" / "pred" / "last.ckpt", weights_only=True)["state_dict"]
    out = run_train(base, run_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    after = torch.load(run_dir / "checkpoints" / "pred" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 6
    torch.testing.assert_close(after["state_dict"]["pred.weight"], before["pred.weight"])


def test_later_stage_alone_needs_the_earlier_checkpoint(fake, tmp_path):
    base, run_dir = fake
    out = run_train(base + ["stage=pred"], tmp_path / "fresh")
    assert out.returncode == 2
    assert "error: stage 'pred' needs the enc checkpoint" in out.stderr and "Traceback" not in out.stderr
    ok = run_train(
        base + ["stage=pred", f"model.pred.enc_ckpt={run_dir}/checkpoints/enc/last.ckpt"], tmp_path / "b"
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert {k for k in metrics if not k.startswith(("time/", "params/"))} == {"test/loss"}


def test_checkpoint_of_another_stage_is_refused(fake, tmp_path):
    base, run_dir = fake
    out = run_train(
        base + ["stage=pred", f"model.pred.enc_ckpt={run_dir}/checkpoints/pred/last.ckpt"], tmp_path
    )
    assert out.returncode == 2
    assert "checkpoint of fake/pred, expected fake/enc" in out.stderr


def test_eval_only(fake, tmp_path):
    base, run_dir = fake
    out = run_train(base + ["train=false", f"ckpt_path={run_dir}/checkpoints/pred/last.ckpt"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"test/loss"}


def test_bad_stage_and_config_typo(fake, tmp_path):
    base, _ = fake
    out = run_train(base + ["stage=decoder"], tmp_path / "a")
    assert out.returncode == 2 and "stage='decoder' is not a stage of this model" in out.stderr
    out = run_train(base + ["trainer.max_stepz=3"], tmp_path / "b")
    assert out.returncode != 0 and "max_stepz" in out.stderr


def test_no_model_chosen(tmp_path):
    out = run_train(["logger=csv"], tmp_path)
    assert out.returncode == 2 and "pass experiment=<name>" in out.stderr


def test_last_checkpoint_written_by_lightning_is_not_written_again(tmp_path):
    """ModelCheckpoint(save_last=True) writes last.ckpt when training ends (fast_dev_run too); run_stage
    then skips its own save, which for a paper-scale stage costs tens of seconds."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from common.stages import last_is_current

    for fast_dev_run in (False, True):
        folder = tmp_path / f"fast{int(fast_dev_run)}"
        checkpoint = ModelCheckpoint(dirpath=folder, save_last=True, every_n_train_steps=1000)
        trainer = L.Trainer(max_steps=2, fast_dev_run=fast_dev_run, callbacks=[checkpoint], logger=False,
                            enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(BoringModel())
        last = folder / "last.ckpt"
        assert last_is_current(trainer, last)
        assert not last_is_current(trainer, folder / "other.ckpt")
        torch.save({"global_step": trainer.global_step - 1, "optimizer_states": []}, last)  # stale
        assert not last_is_current(trainer, last)
        torch.save({"global_step": trainer.global_step}, last)  # weights only: enough for fast_dev_run
        assert last_is_current(trainer, last) == fast_dev_run


class _BadClips(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise ValueError("shard-000000.h5: frames [0, 6) cannot be read: the shard is corrupt")


def test_errors_reach_the_user_as_their_own_one_line_message():
    """OmegaConf's interpolation wrapper and a DataLoader worker's re-raise are peeled off: the user sees
    the message the code raised, on one line."""
    from omegaconf import OmegaConf

    from train import one_line

    def bad_game():
        raise ValueError("no game 'x'")

    OmegaConf.register_new_resolver("wp_test_bad", bad_game)
    try:
        _ = OmegaConf.create({"a": "${wp_test_bad:}"}).a
    except ValueError as e:
        assert one_line(e) == "no game 'x'"
    else:
        raise AssertionError("the resolver did not raise")
    finally:
        OmegaConf.clear_resolver("wp_test_bad")
    loader = torch.utils.data.DataLoader(_BadClips(), num_workers=1)
    with pytest.raises(ValueError) as caught:
        next(iter(loader))
    assert "\n" in str(caught.value)  # torch's worker re-raise carries the whole traceback
    assert one_line(caught.value) == "shard-000000.h5: frames [0, 6) cannot be read: the shard is corrupt"


def test_eval_only_takes_model_settings_from_the_command_line(fake, tmp_path):
    """train=false evaluates the checkpoint's weights with the hyperparameters set on the command line (a
    sampler's temperature, rollout batches), the checkpoint's for the rest."""
    import yaml

    base, run_dir = fake
    ckpt = f"ckpt_path={run_dir}/checkpoints/pred/last.ckpt"
    out = run_train(base + ["train=false", ckpt, "+model.pred.lr=0.25"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    hparams = yaml.safe_load((tmp_path / "csv" / "pred" / "hparams.yaml").read_text())
    assert hparams["lr"] == 0.25 and hparams["enc_ckpt"] is not None
