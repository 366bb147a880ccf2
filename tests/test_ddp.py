"""DDP on CPU (gloo): 2 processes x batch 2 train exactly like 1 process x batch 4.

A train.py run with `trainer=ddp trainer.accelerator=cpu trainer.devices=2`, stopped by SIGTERM to
rank 0 and rerun, against one plain run: the same loss at every step (train/loss reduced across ranks
with sync_dist) and the same weights. The DDP run also shows that data is collected by global rank 0
only (in prepare_data) and that only rank 0 writes files and opens a W&B run.
"""

from __future__ import annotations

import csv
import fcntl
import json
import signal
import threading
from pathlib import Path

import torch

from common.data import collect as collect_mod
from common.data.datamodule import VideoDataModule
from tests.fake_family import FakeEnc
from tests.test_resume import fake_conf, tiny_args, train, weights


class SyncFakeEnc(FakeEnc):
    """FakeEnc whose train/loss is averaged over the DDP ranks (what a 1-process run logs)."""

    def training_step(self, batch, _):
        recon, x = self(batch["frames"])
        loss = (recon - x).pow(2).mean()
        self.log("train/loss", loss, sync_dist=True)
        return loss


class CountingDataModule(VideoDataModule):
    """VideoDataModule that records each prepare_data call (which process collected the data)."""

    def prepare_data(self) -> None:
        Path(self.hparams.root).mkdir(parents=True, exist_ok=True)
        with open(Path(self.hparams.root) / "prepare_data_calls.txt", "a") as f:
            f.write(f"{self.trainer.global_rank}\n")
        super().prepare_data()


def loss_curve(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "enc" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    conf, data = fake_conf(tmp_path / "conf"), tmp_path / "data"
    (conf / "model" / "fakesync.yaml").write_text(
        "enc:\n  _target_: tests.test_ddp.SyncFakeEnc\n  frame_size: ${data.frame_size}\n"
    )
    args = tiny_args(conf, data, model="fakesync") + [
        "test=false",
        "trainer.max_steps=6",
        "trainer.log_every_n_steps=1",
        "trainer.val_check_interval=100",
    ]
    ddp_dir = tmp_path / "ddp"
    ddp_args = [
        *args,
        "data._target_=tests.test_ddp.CountingDataModule",
        "logger=default",
        "logger.csv._target_=common.resume.ResumableCSVLogger",  # keeps the rows from before the stop
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.batch_size=2",
    ]
    # rank 0 gets SIGTERM after step 3: both ranks save the same step and stop; the rerun finishes
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.step=3"]
    stopped = train([*ddp_args, *kill], ddp_dir)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert weights(ddp_dir / "checkpoints" / "enc" / "last.ckpt")[0] in (3, 4)
    ddp = train(ddp_args, ddp_dir)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one_dir = tmp_path / "one"
    one = train([*args, "logger=csv", "data.batch_size=4"], one_dir)
    assert one.returncode == 0, one.stderr[-3000:]

    curve_ddp, curve_one = loss_curve(ddp_dir), loss_curve(one_dir)
    assert len(curve_one) == 6 and curve_ddp.keys() == curve_one.keys()
    for step, loss in curve_one.items():
        assert abs(curve_ddp[step] - loss) <= 1e-5 * max(1.0, abs(loss)), (step, curve_ddp[step], loss)
    step_d, w_d = weights(ddp_dir / "checkpoints" / "enc" / "last.ckpt")
    step_o, w_o = weights(one_dir / "checkpoints" / "enc" / "last.ckpt")
    assert step_d == step_o == 6
    assert [p.name for p in (ddp_dir / "checkpoints" / "enc").iterdir()] == ["last.ckpt"]  # no last-v1.ckpt
    for k in w_o:
        torch.testing.assert_close(w_d[k], w_o[k], rtol=1e-5, atol=1e-6, msg=k)

    # collected by global rank 0 (once per run); the other rank waited for it
    assert (data / "prepare_data_calls.txt").read_text().split() == ["0", "0"]
    # rank 0 alone writes and logs to W&B: one offline run per launch, both with the stage's one id
    ids = json.loads((ddp_dir / "wandb_ids.json").read_text())
    runs = list((ddp_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{ids['enc']}") for r in runs), (ids, runs)
    assert (ddp_dir / "config.yaml").is_file()


def test_datamodule_collects_on_global_rank_zero_only(tmp_path):
    dm = VideoDataModule(source="procgen", game="coinrun", name="x", root=str(tmp_path), num_actions=15)
    assert dm.prepare_data_per_node is False


def test_parallel_jobs_collect_one_after_another(tmp_path, monkeypatch):
    """Sweep jobs sharing a dataset folder: prepare_data waits while another process holds the lock."""
    calls = []
    # the collection under the lock: collect() takes the lock itself, for train.py and the CLI alike
    monkeypatch.setattr(
        collect_mod, "_collect_missing", lambda root, data, envs, progress: calls.append(root)
    )
    dm = VideoDataModule(source="procgen", game="coinrun", name="x", root=str(tmp_path), num_actions=15)
    with open(tmp_path / ".x.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another job is collecting
        worker = threading.Thread(target=dm.prepare_data)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not calls
    worker.join(timeout=10)
    assert not worker.is_alive() and calls == [tmp_path / "x"]
