"""The training loop (common/loop.py) and its collection (common/data/append.py): real steps appended to the
run's dataset epoch after epoch, none lost or duplicated when a run is killed and resumed; the manifest
valid after every append; DIAMOND's Atari 100k experiment composes and runs under fast_dev_run."""

from __future__ import annotations

import csv
import json
import os
import re

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from common.data import append as append_mod
from common.data.append import append_steps, read_record
from common.data.collect import collect
from common.data.policies import AgentActor, RandomActor
from common.data.shards import MANIFEST, ShardDataset
from common.loop import check_schedule, loop_config
from common.stages import StageError
from tests.conftest import compose_train, run_train
from tests.fake_family import FakeEnc

STEPS = 30  # per epoch; episodes are cut at 24 frames, so one carries over from epoch to epoch


class CrashingEnc(FakeEnc):
    """FakeEnc that dies like a kill -9 once it has trained WORLDPLAY_TEST_CRASH_AT optimizer steps."""

    def training_step(self, batch, i):
        at = os.environ.get("WORLDPLAY_TEST_CRASH_AT")
        if at is not None and self.global_step == int(at):
            os._exit(137)
        return super().training_step(batch, i)


def loop_data(tmp_path):
    """The data config the loop gives its stages (held-out seeds 0-3, training seeds from 4)."""
    overrides = [
        "data=atari",
        "data.game=Breakout",
        "data.max_steps=24",
        "data.num_envs=1",
        "data.progress=false",
    ]
    cfg = compose_train(overrides)
    with open_dict(cfg):
        cfg.loop = {"held_out": {"val": 2, "test": 2}}
    return loop_config(cfg, tmp_path).data


def dataset(root):
    """{seed: actions} of the training episodes, and the row count, from a fresh reader (sha256 checked)."""
    ds = ShardDataset(root, verify=True)
    out = {}
    for ref in ds.episodes((4, 10**9)):
        out[ref.seed] = ds.read(ref)["actions"].tolist()
    ds.close()
    return out


def check_manifest(root):
    """The manifest after an append: every listed file present with its checksum, no other shard file,
    each seed once, and the record's env_steps equal to the training rows on disk."""
    manifest = json.loads((root / MANIFEST).read_text())
    listed = {s["file"] for s in manifest["shards"]}
    on_disk = {p.name for p in root.glob("*.h5")}
    assert listed == on_disk, (listed, on_disk)
    assert not list(root.glob("*.tmp"))
    episodes = dataset(root)  # raises on a duplicated seed or a changed shard
    assert manifest["loop"]["env_steps"] == sum(len(a) for a in episodes.values())
    return manifest["loop"], episodes


def test_append_keeps_the_manifest_valid_and_continues_episodes(tmp_path):
    data = loop_data(tmp_path)
    root = collect(data, data.root, progress=False)
    actor = RandomActor("random", 4)
    records, snapshots = [], []
    for epoch in (1, 2, 3):
        rec = append_steps(root, data, actor, epoch, STEPS)
        got, episodes = check_manifest(root)
        assert got == rec and rec["epoch"] == epoch and rec["steps"] == STEPS
        records.append(rec)
        snapshots.append(episodes)
    assert [r["env_steps"] for r in records] == [30, 60, 90]
    # the episode in progress at the end of an epoch is on disk, then continued: its actions so far are a
    # prefix of what it holds after the next epoch
    for before, after in zip(snapshots, snapshots[1:]):
        for seed, actions in before.items():
            assert after[seed][: len(actions)] == actions
    assert records[0]["open"]["file"] == "open-000001.h5" and not (root / "open-000001.h5").exists()
    # asking again for an epoch on disk steps nothing
    assert append_steps(root, data, actor, 2, STEPS) == records[-1]
    assert check_manifest(root)[1] == snapshots[-1]


def test_append_killed_before_its_manifest_write_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    """A collection killed after writing its files but before the manifest: the rerun deletes them and
    collects that epoch again; the dataset is the one an uninterrupted run makes, step for step."""
    data_a = loop_data(tmp_path / "a")
    root_a = collect(data_a, data_a.root, progress=False)
    for epoch in (1, 2, 3):
        append_steps(root_a, data_a, RandomActor("random", 4), epoch, STEPS)

    data = loop_data(tmp_path / "b")
    root = collect(data, data.root, progress=False)
    append_steps(root, data, RandomActor("random", 4), 1, STEPS)

    def killed(path, manifest):
        raise KeyboardInterrupt  # the process dies here: shard and open files written, manifest not

    monkeypatch.setattr(append_mod, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        append_steps(root, data, RandomActor("random", 4), 2, STEPS)
    monkeypatch.undo()
    assert read_record(root)["epoch"] == 1
    assert {p.name for p in root.glob("*.h5")} > {
        s["file"] for s in json.loads((root / MANIFEST).read_text())["shards"]
    }
    for epoch in (2, 3):  # a new process: a fresh actor
        append_steps(root, data, RandomActor("random", 4), epoch, STEPS)
    rec, episodes = check_manifest(root)
    assert rec["env_steps"] == 3 * STEPS
    assert episodes == dataset(root_a)


def test_append_refuses_an_epoch_out_of_order_and_a_replay_that_differs(tmp_path):
    data = loop_data(tmp_path)
    root = collect(data, data.root, progress=False)
    with pytest.raises(ValueError, match="collect epoch 2; epochs are collected in order"):
        append_steps(root, data, RandomActor("random", 4), 2, STEPS)
    rec = append_steps(root, data, RandomActor("random", 4), 1, STEPS)
    path = root / rec["open"]["file"]
    manifest = json.loads((root / MANIFEST).read_text())
    with h5py.File(path, "r+") as f:  # another env would replay other frames
        f["actions"][0] = (int(f["actions"][0]) + 1) % 4
    entry = next(s for s in manifest["shards"] if s["file"] == path.name)
    entry["sha256"] = __import__("common.data.shards", fromlist=["sha256"]).sha256(path)
    entry["bytes"] = path.stat().st_size
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no longer gives its frames"):
        append_steps(root, data, RandomActor("random", 4), 2, STEPS)


class _Greedy:
    """A Policy that always picks action 2 and counts the frames it saw since its last reset."""

    num_actions = 4

    def __init__(self):
        self.seen = 0

    def reset(self):
        self.seen = 0

    def act(self, frames):
        self.seen += len(frames)
        return torch.full((len(frames),), 2, dtype=torch.long)


def test_agent_actor_is_epsilon_greedy_and_burns_in_on_resume():
    policy = _Greedy()
    actor = AgentActor(policy, epsilon=0.25, rng_seed=0, burn_in=5)
    frame = np.zeros((8, 8, 3), np.uint8)
    actions = np.array([actor(frame) for _ in range(4000)])
    other = (actions != 2).mean()  # a uniform draw replaces the choice with p 0.25, and is 2 a quarter of it
    assert abs(other - 0.25 * 0.75) < 0.02
    actor.resume(7, np.zeros((12, 8, 8, 3), np.uint8))
    assert policy.seen == 5
    with pytest.raises(ValueError, match="loop.epsilon=1.5"):
        AgentActor(policy, epsilon=1.5)


FAKE_MODEL = """\
enc:
  _target_: tests.test_loop.CrashingEnc
  frame_size: ${data.frame_size}
pred:
  _target_: tests.fake_family.FakePred
  enc_ckpt: null
"""

LOOP = [
    "data=atari",
    "data.game=Breakout",
    "data.max_steps=24",
    "data.num_envs=1",
    "data.clip_length=4",
    "data.eval_clips=4",
    "data.batch_size=2",
    "data.progress=false",
    "+loop.env_steps=60",
    "+loop.first_epoch={min: 20, max: 40, threshold_rew: 0}",
    "+loop.steps_per_epoch=20",
    "+loop.final_epochs=1",
    "+loop.epsilon=0.01",
    "+loop.policy_stage=null",
    "+loop.stage_steps={enc: {first: 4, per_epoch: 2}, pred: {first: 4, per_epoch: 2}}",
    "+loop.held_out={val: 2, test: 2}",
    "+loop.keep_every=0",
    "+loop.burn_in=8",
    "callbacks.checkpoint.every_n_train_steps=1",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
]


def loop_rows(run_dir):
    with open(run_dir / "csv" / "loop" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("loop/env_steps")]


@pytest.fixture(scope="module")
def fake_loop(tmp_path_factory):
    conf = tmp_path_factory.mktemp("conf")
    (conf / "model").mkdir()
    (conf / "model" / "fake.yaml").write_text(FAKE_MODEL)
    return [f"hydra.searchpath=[file://{conf}]", "model=fake", *LOOP]


def test_loop_killed_mid_epoch_resumes_without_losing_or_repeating_a_step(fake_loop, tmp_path):
    run_dir = tmp_path / "run"
    os.environ["WORLDPLAY_TEST_CRASH_AT"] = "5"  # epoch 2: enc trains steps 5..6 after its collection
    try:
        killed = run_train(fake_loop, run_dir)
    finally:
        del os.environ["WORLDPLAY_TEST_CRASH_AT"]
    assert killed.returncode == 137
    root = run_dir / "data" / "atari_Breakout"
    assert json.loads((run_dir / "checkpoints" / "loop.json").read_text())["epoch"] == 1
    assert read_record(root)["epoch"] == 2  # epoch 2's collection is on disk
    killed_at = torch.load(run_dir / "checkpoints" / "epoch_0002" / "enc" / "last.ckpt", weights_only=True)
    assert killed_at["global_step"] == 5
    resumed = run_train(fake_loop, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    rec, episodes = check_manifest(root)
    assert rec["env_steps"] == 60 and rec["epoch"] == 2  # 40 (first epoch) + 20; epoch 3 collects none
    assert json.loads((run_dir / "checkpoints" / "loop.json").read_text()) == {
        "epoch": 3,
        "collect_epochs": 2,
    }
    rows = loop_rows(run_dir)
    assert [(int(float(r["step"])), float(r["loop/env_steps"])) for r in rows] == [(1, 40), (2, 60), (3, 60)]
    for stage in ("enc", "pred"):
        ckpt = torch.load(run_dir / "checkpoints" / stage / "last.ckpt", weights_only=True)
        assert ckpt["global_step"] == 4 + 2 * 2  # first + per_epoch * (epochs - 1)
        assert os.readlink(run_dir / "checkpoints" / stage) == f"epoch_0003/{stage}"
    assert not (run_dir / "checkpoints" / "epoch_0001").exists()  # keep_every=0: the last epoch only
    assert not (run_dir / "checkpoints" / "epoch_0002").exists()
    pred = torch.load(run_dir / "checkpoints" / "epoch_0003" / "pred" / "last.ckpt", weights_only=True)
    assert pred["hyper_parameters"]["enc_ckpt"] == str(
        run_dir / "checkpoints" / "epoch_0003" / "enc" / "last.ckpt"
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["loop/env_steps"] == 60 and metrics["loop/epochs"] == 3 and "test/loss" in metrics

    # step for step what an uninterrupted collection of the same schedule holds (data.policy collects)
    data = loop_data(tmp_path / "whole")
    whole = collect(data, data.root, progress=False)
    append_steps(whole, data, RandomActor("random", 4), 1, 40)
    append_steps(whole, data, RandomActor("random", 4), 2, 20)
    assert episodes == dataset(whole)


@pytest.mark.parametrize(
    "override, message",
    [
        ("loop.steps_per_epoch=30", "must be a multiple of steps_per_epoch 30"),
        ("~loop.stage_steps.pred", "loop.stage_steps has no entry for stage(s) pred"),
        ("loop.policy_stage=dec", "loop.policy_stage='dec' is not a stage (enc, pred)"),
        ("stage=enc", "a training loop (loop: in the config) runs every stage; drop stage="),
    ],
)
def test_loop_config_errors_are_one_line(fake_loop, override, message):
    cfg = compose_train([*fake_loop, override])
    with pytest.raises(StageError, match=re.escape(message)):
        check_schedule(cfg)


def test_atari100k_is_diamonds_schedule():
    cfg = compose_train(["experiment=diamond_atari100k", "data.game=Breakout"])
    assert list(cfg.model.keys()) == ["world_model", "agent"]
    lp = cfg.loop
    assert (lp.env_steps, lp.steps_per_epoch, lp.final_epochs, lp.epsilon) == (100000, 100, 50, 0.01)
    assert OmegaConf.to_container(lp.first_epoch) == {"min": 5000, "max": 10000, "threshold_rew": 10}
    assert OmegaConf.to_container(lp.stage_steps) == {
        "world_model": {"first": 10000, "per_epoch": 400},
        "agent": {"first": 5000, "per_epoch": 400},
    }
    assert lp.policy_stage == "agent" and cfg.data.num_envs == 1
    for name in ("diamond_atari100k_tiny", "diamond_krull_atari100k_tiny"):
        tiny = compose_train([f"experiment={name}"])
        check_schedule(tiny)
        assert (tiny.loop.env_steps - tiny.loop.first_epoch.min) % tiny.loop.steps_per_epoch == 0


def test_krull_loop_validates_the_agent_at_each_epoch_end():
    """The schedule puts the agent's validation (real episodes beside the imagined return) on every
    epoch's last step: val_check_interval divides the first epoch's steps and equals each later epoch's."""
    cfg = compose_train(["experiment=diamond_krull_atari100k_tiny"])
    steps = cfg.loop.stage_steps.agent
    interval = cfg.stage_overrides.agent.trainer.val_check_interval
    assert steps.first % interval == 0 and steps.per_epoch == interval
    assert cfg.model.agent.val_episodes > 0 and cfg.data.game == "Krull"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["diamond_atari100k", "diamond_atari100k_tiny"])
def test_atari100k_fast_dev_run(name, tmp_path):
    """Two epochs (the second collected by the agent the first trained), one batch per stage."""
    small = [
        "loop.steps_per_epoch=50",
        "loop.held_out={val: 1, test: 1}",
        "data.max_steps=60",
        "data.batch_size=2",
        "data.eval_clips=2",
        "++stage_overrides.agent.data.batch_size=2",
        "model.agent.eval_episodes=0",
    ]
    out = run_train([f"experiment={name}", "trainer.fast_dev_run=true", *small], tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = read_record(tmp_path / "data" / ("atari_Breakout" + ("_tiny" if "tiny" in name else "")))
    assert rec["epoch"] == 2 and rec["env_steps"] == 100
    manifest = json.loads(
        (tmp_path / "data" / ("atari_Breakout" + ("_tiny" if "tiny" in name else "")) / MANIFEST).read_text()
    )
    assert {s["file"]: s for s in manifest["shards"]}  # held-out shards and appended ones
    for stage in ("world_model", "agent"):
        assert (tmp_path / "checkpoints" / "epoch_0002" / stage / "last.ckpt").is_file()
    assert [int(float(r["step"])) for r in loop_rows(tmp_path)] == [1, 2]
