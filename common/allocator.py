"""glibc malloc settings for training on CPU, applied by re-executing the entry point once.

With glibc's defaults, large tensors are mmapped and freed memory is trimmed back to the kernel after
every step, so each training step pays page faults again; raising MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ keeps freed memory in the heap. glibc reads them only at process start, hence
the re-exec. Values already in the environment are kept; WORLDPLAY_MALLOC=default disables this.
"""

from __future__ import annotations

import os
import sys

SETTINGS = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def reexec_with_malloc_settings() -> None:
    """Re-execute this Python process with SETTINGS in the environment unless they are set (Linux only)."""
    if not sys.platform.startswith("linux") or os.environ.get("WORLDPLAY_MALLOC") == "default":
        return
    missing = {k: v for k, v in SETTINGS.items() if k not in os.environ}
    if not missing or os.environ.get("WORLDPLAY_MALLOC") == "set":
        return
    env = {**os.environ, **missing, "WORLDPLAY_MALLOC": "set"}
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
