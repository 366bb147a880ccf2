"""Play's start-up: `python -m common.bench startup --checkpoint PATH [--trees DIR,DIR] [--rounds 3]`.

Each round starts a fresh Python process per source tree that imports play and loads the checkpoint as
`python play.py checkpoint=PATH` does before its first frame (`common.play.app.load(PATH, "cpu")`, at
play's torch thread count), and reports the seconds its imports took, the seconds the load took and the
process's peak resident memory. `--trees` runs the same in other checkouts of worldplay (e.g. an older
commit unpacked with `git archive`), taking turns round by round so that a machine whose load drifts
affects all alike; the first round is a warm-up (it fills the page cache) and is not counted.
`--make-oasis-500m` first writes PATH, if missing, as a random-weight checkpoint at open-oasis' released
sizes (DiT-S/2 and the ViT-L/20 VAE for 360x640 frames, 25-d actions), laid out as `python -m
oasis.convert` writes one.

Rows (JSON with --out): {"tree", "checkpoint", "rounds", "import_s", "load_s" (medians), "peak_rss_mb"
(the largest), "loadavg_1m" (mean over its turns)}. Timings share the machine: report the load with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common.bench import PLAY_THREADS, print_table, write_json

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
from common.play.app import load
t1 = time.perf_counter()
load(sys.argv[1], "cpu")
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "peak_rss_mb": rss}))
"""


def time_startup(checkpoint: str | Path, tree: str | Path, threads: int = PLAY_THREADS) -> dict:
    """One fresh process in `tree`: {"import_s", "load_s", "peak_rss_mb"}; RuntimeError with its stderr's
    last line when it fails."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(checkpoint), str(threads)], cwd=tree, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"start-up in {tree} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_startup(checkpoint: str, trees: list[str], rounds: int, threads: int = PLAY_THREADS, log=print):
    """One row per tree, the trees taking turns over `rounds` counted rounds after a warm-up round."""
    runs: dict[str, list[dict]] = {t: [] for t in trees}
    loads: dict[str, list[float]] = {t: [] for t in trees}
    for r in range(rounds + 1):
        for tree in trees:
            load_before = os.getloadavg()[0]
            run = time_startup(checkpoint, tree, threads)
            log(f"  round {r}{' (warm-up)' if r == 0 else ''} {tree}: load {run['load_s']:.1f} s, imports "
                f"{run['import_s']:.1f} s, peak {run['peak_rss_mb']:.0f} MB (load average {load_before:.1f})")  # fmt: skip
            if r:
                runs[tree].append(run)
                loads[tree].append((load_before + os.getloadavg()[0]) / 2)
    return [
        {"tree": tree, "checkpoint": str(checkpoint), "rounds": rounds,
         "import_s": statistics.median(r["import_s"] for r in runs[tree]),
         "load_s": statistics.median(r["load_s"] for r in runs[tree]),
         "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[tree]),
         "loadavg_1m": statistics.fmean(loads[tree])}
        for tree in trees
    ]  # fmt: skip


def make_oasis_500m(path: str | Path) -> Path:
    """A random-weight checkpoint at open-oasis' released sizes, as `python -m oasis.convert` writes it."""
    import lightning as L
    import torch

    from oasis.convert import RELEASED_VAE, RELEASED_VAE_UNSTORED
    from oasis.module import OasisDiTModule
    from oasis.vae import OASIS_SCALING_FACTOR

    torch.manual_seed(0)
    vae = dict(RELEASED_VAE, **RELEASED_VAE_UNSTORED, mlp_ratio=4.0, use_variational=True)
    module = OasisDiTModule(
        num_actions=25, vae_hparams=vae, scaling_factor=OASIS_SCALING_FACTOR, patch_size=2, hidden_size=1024,
        depth=16, num_heads=16, mlp_ratio=4.0, max_frames=32, context_frames=1, warmup_steps=1,
    )  # fmt: skip
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__, "epoch": 0, "global_step": 0}  # fmt: skip
    module.on_save_checkpoint(ckpt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.bench startup", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the checkpoint play loads")
    p.add_argument("--trees", default=None, help="comma-separated worldplay checkouts (default: this one)")
    p.add_argument("--rounds", type=int, default=3, help="counted rounds, after one warm-up round")
    p.add_argument("--threads", type=int, default=PLAY_THREADS, help="torch threads (play.py's default)")
    p.add_argument("--make-oasis-500m", action="store_true", help="write --checkpoint first if missing")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    here = str(Path(__file__).resolve().parents[1])
    trees = args.trees.split(",") if args.trees else [here]
    try:
        if args.make_oasis_500m and not Path(args.checkpoint).is_file():
            print(f"wrote {make_oasis_500m(args.checkpoint)}")
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint not found: {args.checkpoint} (--make-oasis-500m writes one)")
        for tree in trees:
            if not (Path(tree) / "common" / "play" / "app.py").is_file():
                raise FileNotFoundError(
                    f"--trees: {tree} is not a worldplay checkout (no common/play/app.py)"
                )
        rows = bench_startup(args.checkpoint, trees, args.rounds, args.threads)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_table(f"bench startup ({args.threads} thread(s); {os.cpu_count()} CPUs)", rows)
    if args.out:
        print(f"wrote {write_json(args.out, rows)}")
    return 0
