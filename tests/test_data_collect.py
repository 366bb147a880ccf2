"""Collection: shards per source, determinism, resume after Ctrl-C or a kill, config mismatch errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common.data import collect as collect_mod
from common.data.collect import collect
from common.data.envs import make_env
from common.data.shards import FORMAT_VERSION, MANIFEST, ShardDataset, check_shard
from tests.conftest import ROOT


def _data_cfg(source: str, **over):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("collect", overrides=[f"data={source}"])
    cfg.data.progress = False
    for k, v in {"episodes": 6, "max_steps": 30, "num_envs": 2, **over}.items():
        cfg.data[k] = v
    return cfg.data


def _seeds(root) -> list[int]:
    manifest = json.loads((root / MANIFEST).read_text())
    return sorted(s for shard in manifest["shards"] for s in shard["episode_seeds"])


@pytest.mark.parametrize("source", ["procgen", "atari", "crafter"])
def test_collect_writes_design_shards(tmp_path, source):
    data = _data_cfg(source, episodes=3, max_steps=20)
    root = collect(data, tmp_path, progress=False)
    manifest = json.loads((root / MANIFEST).read_text())
    assert (
        manifest["format_version"] == FORMAT_VERSION
        and manifest["num_actions"] == make_env(source, data.game).num_actions
    )
    assert len(manifest["action_meanings"]) == manifest["num_actions"]
    for shard in manifest["shards"]:
        attrs = check_shard(root / shard["file"])
        assert {"env_id", "num_actions", "action_meanings", "fps", "policy"} <= set(attrs)
        assert set(shard["episode_splits"]) <= {"train", "val", "test"}
    ds = ShardDataset(root)
    assert sorted(r.seed for r in ds.episodes()) == [0, 1, 2]
    for ref in ds.episodes():
        ep = ds.read(ref)
        assert ep["frames"].shape == (ref.length, 64, 64, 3) and 1 <= ref.length <= 20
        assert (ep["actions"] >= 0).all() and (ep["actions"] < manifest["num_actions"]).all()
        assert not ep["terminals"][:-1].any(), "only the last transition of an episode may end it"


def test_resume_after_ctrl_c_collects_each_seed_once(tmp_path, monkeypatch):
    data = _data_cfg("procgen", episodes=6, max_steps=30, shard_frames=40)
    reference = collect(data, tmp_path / "ref", progress=False)

    steps = {"n": 0}
    original = collect_mod._Rollout.step

    def interrupted(self):
        steps["n"] += 1
        if steps["n"] > 100:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(collect_mod._Rollout, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect(data, tmp_path / "run", progress=False)
    partial = _seeds(tmp_path / "run" / data.name)
    assert 0 < len(partial) < 6 and len(set(partial)) == len(partial)
    monkeypatch.setattr(collect_mod._Rollout, "step", original)
    root = collect(data, tmp_path / "run", progress=False)
    assert _seeds(root) == list(range(6))
    a, b = ShardDataset(reference), ShardDataset(root)
    by_seed = {r.seed: r for r in b.episodes()}
    for ref in a.episodes():  # deterministic: the resumed dataset holds the very same episodes
        np.testing.assert_array_equal(a.read(ref)["frames"], b.read(by_seed[ref.seed])["frames"])


def test_killed_collection_resumes_exactly(tmp_path):
    args = [
        sys.executable, "-m", "common.data.collect", "data=procgen", f"paths.data_dir={tmp_path}",
        "data.episodes=40", "data.max_steps=40", "data.shard_frames=100", "data.num_envs=1", "data.progress=false",
    ]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "procgen_coinrun"
    deadline = time.time() + 60
    while time.time() < deadline and not list(root.glob("shard-000001.h5")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(_seeds(root)) < 40, "the kill should land mid-collection"
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    assert _seeds(root) == list(range(40))
    assert not list(root.glob("*.tmp"))


def test_config_mismatch_is_refused(tmp_path):
    collect(_data_cfg("procgen", episodes=2, max_steps=10), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"data.max_steps=10"):
        collect(_data_cfg("procgen", episodes=2, max_steps=20), tmp_path, progress=False)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown procgen game 'coinrunn'"):
        make_env("procgen", "coinrunn")
    with pytest.raises(ValueError, match="unknown Atari game 'Breakoutt'"):
        make_env("atari", "Breakoutt")
    with pytest.raises(ValueError, match="unknown data source 'minecraft'"):
        make_env("minecraft")


def test_env_action_out_of_range():
    env = make_env("procgen", "coinrun")
    env.reset(0)
    with pytest.raises(ValueError, match="action 15 out of range"):
        env.step(15)
