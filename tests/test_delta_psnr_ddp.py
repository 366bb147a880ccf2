"""The ΔtPSNR bootstrap under DDP: per-clip errors are gathered from every rank (two gloo processes)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from common.delta_psnr import bootstrap_delta_psnr
from common.set_psnr_logging import SetPSNRLogging


class Meter(SetPSNRLogging):
    """The logging mixin alone, with a stand-in trainer of two processes that sums through gloo."""

    def __init__(self):
        import torch.distributed as dist

        def reduce(t, reduce_op="sum"):
            t = t.clone()
            dist.all_reduce(t)
            return t

        self.logged, self.device = {}, torch.device("cpu")
        strategy = type("S", (), {"reduce": staticmethod(reduce)})()
        self.trainer = type("T", (), {"world_size": 2, "strategy": strategy})()

    def log(self, name, value, **_):
        self.logged[name] = value


def _ddp_rank(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        m = Meter()
        m.on_test_epoch_start()
        inferred, random = DDP_ERRORS[rank]
        m.add_delta_psnr("test/delta_psnr_t4", (inferred, random), seeds=torch.tensor([rank] * len(inferred)))
        m.on_test_epoch_end()
        record = m.eval_records["test/delta_psnr_t4"]
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"logged": m.logged, "seeds": record["seeds"]}, f)
    finally:
        dist.destroy_process_group()


DDP_ERRORS = [
    (torch.tensor([0.01, 0.02, 0.03]), torch.tensor([0.05, 0.02, 0.04])),
    (torch.tensor([0.02, 0.01]), torch.tensor([0.03, 0.06])),
]


def test_ddp_ranks_bootstrap_over_all_clips(tmp_path):
    """Two gloo processes with 3 and 2 clips log the interval of all 5 clips, the same on both ranks."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.spawn(_ddp_rank, args=(f"file://{tmp_path / 'store'}", out), nprocs=2, join=True)
    ranks = [json.loads(open(f"{out}.{r}").read()) for r in (0, 1)]
    inferred = torch.cat([e[0] for e in DDP_ERRORS])
    random = torch.cat([e[1] for e in DDP_ERRORS])
    low, high = bootstrap_delta_psnr(inferred, random)
    for r in ranks:
        assert r["seeds"] == [0, 0, 0, 1, 1]
        assert r["logged"]["test/delta_psnr_t4_low"] == pytest.approx(low)
        assert r["logged"]["test/delta_psnr_t4_high"] == pytest.approx(high)
        assert r["logged"]["test/delta_psnr_t4"] == pytest.approx(
            10 * math.log10(random.mean() / inferred.mean()), abs=1e-5
        )
