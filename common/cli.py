"""What worldplay's command-line entry points share: every failure reported as one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def run_reporting_errors(fn: Callable[[Any], Any], cfg: Any) -> None:
    """fn(cfg); Ctrl-C exits 130, any other failure prints `error: <first line of its message>` on stderr
    and exits 1 (play.py, common.evaluate_agent)."""
    try:
        fn(cfg)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - every failure is reported in one line
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
