"""Runs read from W&B's offline logs (`wandb/offline-run-*/run-*.wandb`, or an export of such folders),
so the report can be built from what W&B holds as well as from run directories.

Each `.wandb` transaction log is read with W&B's own reader, `wandb leet inspect --json` (one JSON record
per line: the run's config, history rows, summary updates). worldplay writes one W&B run per (job, stage)
(common/wandb_logger.py); the pieces of one run id (a resumed stage) are joined in the order they were
written, and the stages of one job are joined into one Run:

- a job is the folder holding the `wandb/` folder (a run directory), split further by the experiment
  `name`, `seed` and `data.name` in the W&B config (an export of many jobs in one `wandb/` folder);
- config: the job's config (W&B's per-stage config without `stage`, `git_commit`, Lightning's `hparams`),
  its `model` the union of the stages' modules in the order the stages started;
- curves: each stage's history rows against `trainer/global_step`;
- final metrics: the `test/`, `time/`, `params/` and `play/` values of each stage's summary, which
  common/stages.py writes with the same names and values as metrics.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.report_runs import Run, is_number

FINAL_PREFIXES = ("test/", "time/", "params/", "play/")
STEP_KEY = "trainer/global_step"


@dataclass
class StageLog:
    """What W&B holds for one run id (one stage of one job), its pieces joined."""

    run_id: str
    stage: str
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    start: str = ""
    job_dir: Path = Path(".")


def find_logs(paths: list[Path]) -> list[Path]:
    """Every `.wandb` file at or below `paths`, once (W&B's `latest-run` link skipped)."""
    seen, logs = set(), []
    for root in paths:
        files = [root] if root.is_file() and root.suffix == ".wandb" else sorted(root.rglob("*.wandb"))
        for f in files:
            if "latest-run" in f.parts or f.resolve() in seen:
                continue
            seen.add(f.resolve())
            logs.append(f)
    return logs


def read_records(log: Path) -> list[dict[str, Any]]:
    """The records of one `.wandb` file as W&B's CLI decodes them. RuntimeError (one line) when it cannot."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{log}: `wandb leet inspect` cannot read it ({last}); needs wandb >= 0.31")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _job_dir(log: Path) -> Path:
    """The folder holding the `wandb/` folder the log sits in (the run directory), else the log's folder."""
    for parent in log.parents:
        if parent.name == "wandb":
            return parent.parent
    return log.parent


def stage_logs(logs: list[Path], messages: list[str]) -> list[StageLog]:
    """One StageLog per run id, its pieces (`.wandb` files) joined oldest first."""
    by_id: dict[str, StageLog] = {}
    pieces = []
    for log in logs:
        try:
            records = read_records(log)
        except (OSError, RuntimeError) as e:
            messages.append(str(e) if isinstance(e, RuntimeError) else f"{log}: unreadable ({e})")
            continue
        run = next((r["run"] for r in records if r.get("type") == "run"), None)
        if run is None:
            messages.append(f"{log}: no run record (not a W&B run log, or written by an older W&B); skipped")
            continue
        pieces.append((run.get("start_time", ""), log, run, records))
    for start, log, run, records in sorted(pieces, key=lambda p: (p[0], str(p[1]))):
        rid = run.get("run_id") or log.stem.removeprefix("run-")
        stage = by_id.setdefault(
            rid, StageLog(rid, run.get("job_type") or "", start=start, job_dir=_job_dir(log))
        )
        _merge(stage.config, (run.get("config") or {}).get("update") or {})
        for r in records:
            kind = r.get("type")
            if kind == "config":
                _merge(stage.config, r["config"].get("update") or {})
            elif kind == "history":
                stage.history.append(r["history"]["item"])
            elif kind == "summary":
                stage.summary.update(r["summary"].get("update") or {})
        stage.stage = stage.stage or str(stage.config.get("stage") or "")
    return list(by_id.values())


def _job_key(s: StageLog) -> tuple[str, str, str, str]:
    c = s.config
    return (str(s.job_dir), str(c.get("name")), str(c.get("seed")), str((c.get("data") or {}).get("name")))


def load_wandb_runs(paths: list[Path], messages: list[str]) -> list[Run]:
    """Runs (common/report_runs.Run, source "wandb") from the W&B logs below `paths`; see the module docstring."""
    logs = find_logs(paths)
    if not logs:
        messages.append(f"{', '.join(map(str, paths))}: no W&B log (*.wandb) found")
        return []
    jobs: dict[tuple, list[StageLog]] = {}
    for s in sorted(stage_logs(logs, messages), key=lambda s: s.start):
        jobs.setdefault(_job_key(s), []).append(s)
    runs = []
    for key, stages in jobs.items():
        names = [s.stage for s in stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            messages.append(
                f"{key[0]}: W&B runs of {key[1]} seed {key[2]} hold stage {', '.join(dupes)} more than once "
                f"(different run ids); the latest is reported"
            )
            stages = list({s.stage: s for s in stages}.values())
        runs.append(_run(stages))
    return runs


def _media(row: dict[str, Any]) -> set[str]:
    """Keys of W&B media in a flattened row (`test/video._type`, `.size`, ...): not metrics."""
    return {k.rsplit(".", 1)[0] for k in row if k.endswith("._type")}


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    media = _media(row)
    return {
        k: float(v)
        for k, v in row.items()
        if not k.startswith("_") and k.rsplit(".", 1)[0] not in media and is_number(v)
    }


def _run(stages: list[StageLog]) -> Run:
    config = {
        k: v for k, v in stages[0].config.items() if k not in ("stage", "git_commit", "hparams", "_wandb")
    }
    config["model"] = {}
    for s in stages:
        config["model"].update((s.config.get("model") or {}) or {s.stage: {}})
    run = Run(path=stages[0].job_dir, config=config, final_source="W&B summary", source="wandb")
    for s in stages:
        for row in s.history:
            if STEP_KEY not in row:
                continue
            step = int(row[STEP_KEY])
            for key, value in _metrics(row).items():
                if key not in (STEP_KEY, "epoch"):
                    run.curves.setdefault((s.stage, key), []).append((step, value))
        for key, value in _metrics(s.summary).items():
            if key.startswith(FINAL_PREFIXES):
                run.final[key] = value
                run.stage_of[key] = s.stage
    for key in run.final:
        if key.startswith(("time/train_", "play/")):
            run.stage_of[key] = ""
    return run
