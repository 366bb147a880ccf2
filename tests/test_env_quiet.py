"""Env adapters print nothing of their own: a one-line error stays the only line on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_making_a_procgen_env_writes_nothing_to_stderr():
    """procgen imports gym, whose import prints a 4-line notice on stderr before any error of ours."""
    code = "from common.data.envs import make_env; make_env('procgen', 'coinrun').close()"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""
