"""What README says about playing holds: the checkpoint play.py takes per family, and h5dump's silent
empty frame data without HDF5_PLUGIN_PATH (run against a real shard where h5dump is installed)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from common.bench import compose_experiment
from common.world_model import load_world_model

README = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())


@pytest.mark.parametrize(
    "family,name,experiment",
    [("genie", "Genie", "genie_coinrun_tiny"), ("diamond", "DIAMOND", "diamond_breakout_tiny"),
     ("oasis", "Oasis", "oasis_crafter_tiny")],
)  # fmt: skip
def test_readme_names_the_stage_play_takes(family, name, experiment, tmp_path):
    match = re.search(rf"`play.py` takes the checkpoint .*? {name} `checkpoints/(\w+)/last.ckpt`", README)
    assert match, f"README does not say which checkpoint play.py takes for {name}"
    stages = list(compose_experiment(experiment).model)
    assert match.group(1) == stages[-1]  # the family's last stage
    for earlier in stages[:-1]:  # and an earlier stage's checkpoint is refused in one line
        path = tmp_path / f"{earlier}.ckpt"
        torch.save({"worldplay": {"family": family, "stage": earlier}, "state_dict": {}}, path)
        with pytest.raises(
            ValueError, match=f"checkpoint of {family}/{earlier}, expected {family}/{stages[-1]}"
        ):
            load_world_model(path)


@pytest.mark.skipif(
    shutil.which("h5dump") is None, reason="h5dump not installed (apt-get install hdf5-tools)"
)
def test_h5dump_without_plugin_path_prints_empty_frames_and_exits_0(tmp_path):
    import hdf5plugin

    from common.data.shards import Episode, write_shard

    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3) + 1
    episode = Episode(0, frames, np.zeros(2, np.int64), np.zeros(2, np.float32), np.zeros(2, bool))
    write_shard(tmp_path / "shard-000000.h5", [episode], {"env_id": "test"})
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    select = ["h5dump", "-d", "frames", "-s", "0,0,0,0", "-c", "1,1,2,3", "shard-000000.h5"]
    dump = lambda args, env: subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    bare = dump(select, env)
    data = bare.stdout.split("DATA {")[1].split("}")[0]
    assert bare.returncode == 0 and data.strip() == "" and bare.stderr == ""
    assert "prints an empty `DATA` block with exit code 0" in README
    whole = dump(["h5dump", "-d", "frames", "shard-000000.h5"], env)
    assert whole.returncode == 1 and "unable to print data" in whole.stderr
    plugged = dump(select, env | {"HDF5_PLUGIN_PATH": hdf5plugin.PLUGINS_PATH})
    assert plugged.returncode == 0 and "1, 2, 3" in plugged.stdout
