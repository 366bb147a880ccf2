import os
import subprocess
import sys

import pytest

from common.allocator import SETTINGS

SCRIPT = (
    "from common.allocator import reexec_with_malloc_settings as r; r(); import os; "
    "print(os.environ.get('MALLOC_TRIM_THRESHOLD_'), os.environ.get('MALLOC_MMAP_THRESHOLD_'))"
)


def run(**extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != "WORLDPLAY_MALLOC"}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_reexec_sets_malloc_thresholds_once_and_keeps_user_values():
    assert run() == "1073741824 1073741824"
    assert run(MALLOC_TRIM_THRESHOLD_="5") == "5 1073741824"
    assert run(WORLDPLAY_MALLOC="default") == "None None"
