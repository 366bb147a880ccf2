"""StageClock: a stage's wall and CPU seconds, steps and parameters, kept across a resume."""

from __future__ import annotations

import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from common.report_metrics import derived_metrics, training_totals
from common.stage_clock import StageClock

SLEEP_S = 0.05  # wall time per step that uses no CPU
BUSY_S = 0.02  # CPU time per step


class Sleepy(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 3)  # 15 parameters
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)  # 6 more, not trained

    def training_step(self, batch, _):
        time.sleep(SLEEP_S)
        end = time.process_time() + BUSY_S
        while time.process_time() < end:
            pass
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=0.1)


def fit(tmp_path, max_steps: int, ckpt_path=None) -> tuple[StageClock, L.Trainer]:
    clock = StageClock("dynamics")
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, callbacks=[clock],
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    data = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=2)
    trainer.fit(Sleepy(), train_dataloaders=data, ckpt_path=ckpt_path)
    return clock, trainer


def test_clock_measures_a_fit_and_adds_a_resumed_one(tmp_path):
    clock, trainer = fit(tmp_path, 3)
    first = clock.metrics()
    assert first["time/dynamics_steps"] == 3
    assert first["params/dynamics"] == 21 and first["params/dynamics_trainable"] == 15
    assert first["time/dynamics_wall_s"] >= 3 * SLEEP_S
    assert 3 * BUSY_S <= first["time/dynamics_cpu_s"] < first["time/dynamics_wall_s"]
    assert "time/dynamics_gpu_s" not in first  # CPU training
    trainer.save_checkpoint(tmp_path / "last.ckpt")

    clock, _ = fit(tmp_path, 5, ckpt_path=tmp_path / "last.ckpt")
    second = clock.metrics()
    assert second["time/dynamics_steps"] == 5
    # the seconds in the checkpoint plus those of the 2 resumed steps, not the resumed piece alone
    assert second["time/dynamics_wall_s"] >= first["time/dynamics_wall_s"] + 2 * SLEEP_S
    assert second["time/dynamics_cpu_s"] >= first["time/dynamics_cpu_s"] + 2 * BUSY_S


def test_no_metrics_without_a_fit():
    assert StageClock("enc").metrics() == {}


def test_training_totals_sum_stages_and_derived_differences():
    metrics = {"time/tokenizer_wall_s": 60.0, "time/dynamics_wall_s": 120.0, "time/dynamics_cpu_s": 200.0,
               "time/dynamics_steps": 10.0, "test/psnr_next": 25.0, "test/psnr_copy_last": 24.5,
               "test/rollout_psnr_k8": 20.0, "test/rollout_copy_last_k8": 21.0, "test/rollout_psnr_k3": 1.0,
               "test/rollout_copy_last_k3": 0.0}  # fmt: skip
    assert training_totals(metrics) == {"time/train_wall_s": 180.0, "time/train_cpu_s": 200.0}
    assert derived_metrics(metrics) == {
        "test/psnr_next_minus_copy_last": 0.5,
        "test/rollout_psnr_k8_minus_copy_last": -1.0,  # headline k only: not k=3
        "time/train_wall_s": 180.0,
        "time/train_cpu_s": 200.0,
    }


class SlowWorldModel:
    """A world model whose every frame takes STEP_S of wall time (the protocol of common/world_model.py)."""

    context_length, frame_shape, num_actions, policy = 2, (4, 4, 3), 3, None
    STEP_S = 0.01

    def reset(self, frames, actions=None):
        self.threads = torch.get_num_threads()

    def step(self, action):
        time.sleep(self.STEP_S)
        return type("Step", (), {"frames": torch.zeros(1, *self.frame_shape, dtype=torch.uint8)})()


class Playable(Sleepy):
    def world_model(self):
        self.made = SlowWorldModel()
        return self.made

    def test_step(self, batch, _):
        return None


def test_a_stage_with_a_world_model_records_what_a_played_frame_costs(tmp_path):
    clock = StageClock("world_model")
    trainer = L.Trainer(logger=False, callbacks=[clock], enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    module, threads = Playable(), torch.get_num_threads()
    trainer.test(
        module, dataloaders=DataLoader(TensorDataset(torch.randn(2, 4)), batch_size=2), verbose=False
    )
    ms = clock.metrics()["play/ms_per_frame"]
    assert SlowWorldModel.STEP_S * 1000 <= ms < 10 * SlowWorldModel.STEP_S * 1000
    assert (
        module.made.threads == 1 and torch.get_num_threads() == threads
    )  # timed as play runs, then restored
    assert "play/ms_per_frame" not in fit(tmp_path, 1)[0].metrics()  # no world model: nothing timed
