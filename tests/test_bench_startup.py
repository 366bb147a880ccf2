"""python -m common.bench startup: well-formed rows from fresh processes (no timing is asserted)."""

from __future__ import annotations

import json

import torch

from common import bench
from tests.test_loader import write_checkpoint
from tests.tiny_families import diamond


def test_startup_rows_from_fresh_processes(tmp_path, capsys):
    torch.manual_seed(0)
    path = write_checkpoint(diamond(), tmp_path / "d.ckpt")
    out = tmp_path / "rows.json"
    assert bench.main(["startup", "--checkpoint", str(path), "--rounds", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["checkpoint"] == str(path) and row["rounds"] == 1
    assert row["load_s"] > 0 and row["import_s"] > 0 and row["peak_rss_mb"] > 0 and row["loadavg_1m"] >= 0


def test_startup_errors_are_one_line(tmp_path, capsys):
    assert bench.main(["startup", "--checkpoint", str(tmp_path / "no.ckpt")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: checkpoint not found: {tmp_path / 'no.ckpt'} (--make-oasis-500m writes one)"
    )
