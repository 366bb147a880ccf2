"""The benchmark harness produces well-formed rows (on tiny fakes; nothing here is a timing assertion)."""

import json
import math
import sys
import types

import pytest
import torch
from omegaconf import OmegaConf

import common.data
from common import bench
from tests.test_play_fakes import FakeWorldModel


class CachedFake(FakeWorldModel):
    use_cache = True

    def __init__(self):
        super().__init__()
        self.stepped_with: list[bool] = []  # use_cache at every step
        self.threads: list[int] = []  # torch threads at every step

    def step(self, actions):
        self.stepped_with.append(self.use_cache)
        self.threads.append(torch.get_num_threads())
        return super().step(actions)


def check_play_row(row, family, experiment):
    assert tuple(row) == bench.PLAY_KEYS
    assert row["family"] == family and row["experiment"] == experiment and isinstance(row["cached"], bool)
    assert row["ms_per_frame"] > 0 and math.isclose(row["fps"], 1000.0 / row["ms_per_frame"])
    assert row["threads"] >= 1 and row["loadavg_1m"] >= 0


def test_play_bench_default_threads_are_play_py_s():
    from omegaconf import OmegaConf

    from common.config import CONF_DIR

    assert OmegaConf.load(CONF_DIR / "play.yaml").threads == bench.PLAY_THREADS
    assert bench.parse_args(["play"]).threads == [bench.PLAY_THREADS]


def test_play_rows_take_turns_over_thread_counts():
    fake, before = CachedFake(), torch.get_num_threads()
    rows = bench.play_rows("fake", "fake_tiny", fake, frames=1, warmup=0, context=2, rounds=2, threads=[1, 2])
    assert [(r["threads"], r["cached"]) for r in rows] == [(1, True), (1, False), (2, True), (2, False)]
    assert fake.threads == [1, 1, 2, 2] * 2 and fake.stepped_with == [True, False] * 4  # turns, each round
    assert torch.get_num_threads() == before  # restored
    for r in rows:
        check_play_row(r, "fake", "fake_tiny")
    assert bench.parse_args(["play", "--threads", "1,2"]).threads == [1, 2]
    with pytest.raises(SystemExit):
        bench.parse_args(["play", "--threads", "two"])


def test_play_rows_cached_and_uncached():
    fake = CachedFake()
    rows = bench.play_rows("fake", "fake_tiny", fake, frames=2, warmup=1, context=6, rounds=2)
    assert [r["cached"] for r in rows] == [True, False]
    assert fake.stepped_with == [True] * 3 + [False] * 3 + [True] * 3 + [False] * 3  # turns: warm-up + 2
    for r in rows:
        check_play_row(r, "fake", "fake_tiny")
    rows = bench.play_rows("fake", "fake_tiny", FakeWorldModel(), frames=2, warmup=0, context=2)
    assert len(rows) == 1 and rows[0]["cached"] is False
    json.dumps(rows)


def fake_family_cfg():
    return OmegaConf.create(
        {
            "model": {
                "enc": {"_target_": "tests.fake_family.FakeEnc", "code": 4},
                "pred": {"_target_": "tests.fake_family.FakePred", "enc_ckpt": None},
            },
            "data": {"batch_size": 2, "clip_length": 3, "frame_size": 64, "num_actions": 4},
            "trainer": {"gradient_clip_val": 1.0},
            "stage_overrides": {"pred": {"data": {"batch_size": 3}, "trainer": {"precision": "bf16-mixed"}}},
        }
    )


def test_build_modules_hands_stages_over(tmp_path):
    modules = bench.build_modules(fake_family_cfg(), tmp_path)
    assert list(modules) == ["enc", "pred"]
    assert (tmp_path / "checkpoints" / "enc" / "last.ckpt").is_file()
    assert torch.equal(
        modules["pred"].enc.enc.weight, modules["enc"].enc.weight
    )  # the handoff carried weights


def test_train_rows_on_fake_family(tmp_path):
    peak = bench.matmul_peak(n=64, repeats=2)
    rows = bench.train_rows("fake_tiny", fake_family_cfg(), tmp_path, steps=2, warmup=1, peak=peak)
    assert [r["stage"] for r in rows] == ["enc", "pred"]
    assert [r["batch_size"] for r in rows] == [2, 3]  # stage_overrides applied per stage
    assert [r["precision"] for r in rows] == ["32-true", "bf16-mixed"]  # timed in the stage's precision
    for r in rows:
        assert r["family"] == "fake" and r["steps_per_s"] > 0 and r["flops_per_step"] > 0
        assert math.isclose(r["samples_per_s"], r["steps_per_s"] * r["batch_size"])
        assert math.isclose(r["fraction_of_peak"], r["flops_per_s"] / peak)
    json.dumps(rows)


def test_synthetic_batch_format():
    b = bench.synthetic_batch(2, 5, 64, 7)
    assert b["frames"].dtype == torch.uint8 and b["frames"].shape == (2, 5, 64, 64, 3)
    assert b["actions"].dtype == torch.long and int(b["actions"].max()) < 7
    assert b["rewards"].dtype == torch.float32 and b["terminals"].dtype == torch.bool


def test_cli_errors_json_and_data_delegation(tmp_path, monkeypatch, capsys):
    assert bench.main(["play", "--experiments", "no_such_experiment"]) == 1
    assert "unknown experiment 'no_such_experiment'" in capsys.readouterr().err
    out = bench.write_json(tmp_path / "sub" / "rows.json", [{"a": 1}])
    assert json.loads(out.read_text()) == [{"a": 1}]
    with pytest.raises(ValueError, match="cannot write"):
        bench.write_json("/proc/worldplay/rows.json", [])
    seen = {}
    fake = types.SimpleNamespace(run=lambda args: seen.setdefault("args", args) and 0)
    monkeypatch.setitem(sys.modules, "common.data.bench", fake)
    monkeypatch.setattr(common.data, "bench", fake, raising=False)
    assert bench.main(["data", "--out", str(tmp_path / "d.json")]) == 0
    assert seen["args"].command == "data" and "--out" in seen["args"].rest
    bench.print_table("rows", bench.play_rows("fake", "x", FakeWorldModel(), frames=1, warmup=0, context=4))
    assert "ms_per_frame" in capsys.readouterr().out


def test_overrides_apply_where_the_key_exists():
    cfg = bench.compose_experiment(
        "oasis_crafter_tiny", ["model.dit.ddim_steps=3", "model.dynamics.maskgit_steps=8"]
    )
    assert cfg.model.dit.ddim_steps == 3 and "dynamics" not in cfg.model
    with pytest.raises(ValueError, match="expected key=value"):
        bench.compose_experiment("oasis_crafter_tiny", ["model.dit.ddim_steps"])


def test_play_bench_times_a_checkpoint_and_the_network_its_experiment_trains(tmp_path):
    """`--checkpoint PATH` times a saved model (open-oasis' sizes: a converted file); experiment rows build
    the experiment's own network (no benchmark keeps a copy of network sizes: oasis.bench is gone)."""
    import importlib.util

    assert importlib.util.find_spec("oasis.bench") is None
    cfg = bench.compose_experiment("oasis_crafter_tiny", ["model.dit.ddim_steps=1"])
    modules = bench.build_modules(cfg, tmp_path)
    assert modules["dit"].dit.max_frames == cfg.model.dit.max_frames == 16
    path = tmp_path / "checkpoints" / "dit" / "last.ckpt"
    out = tmp_path / "rows.json"
    argv = ["play", "--checkpoint", str(path), "--frames", "1", "--rounds", "1", "--warmup", "0"]
    assert bench.main(argv + ["--context", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["experiment"], r["cached"]) for r in rows] == [(str(path), True), (str(path), False)]
    for row in rows:
        check_play_row(row, "oasis", str(path))
