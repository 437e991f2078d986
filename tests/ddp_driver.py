"""Runs `actionbert train` in this process, recording every optimizer step's gradients; optionally with one
deliberate DDP fault. Started by tests/test_distributed.py, directly (one process) or under torchrun.

Environment:
    DDP_TEST_GRADS: folder for `rank{r}_step{k}.pt` (a list of float64 gradients in the optimizer's order).
    DDP_TEST_FAULT: "" (none), "sum" (gradients summed over ranks instead of averaged), "same_shard" (every rank
        reads rank 0's shard) or "drop" (rank 1's batch contributes nothing).
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

import actionbert.train.loaders
import actionbert.train.steps
from actionbert.cli import main

RANK = int(os.environ.get("RANK", "0"))
GRADS = Path(os.environ["DDP_TEST_GRADS"])
FAULT = os.environ.get("DDP_TEST_FAULT", "")


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that saves the gradients it is about to apply (after DDP's all-reduce)."""

    steps = 0

    def step(self, closure=None):
        grads = [p.grad.detach().to(torch.float64, copy=True) for g in self.param_groups for p in g["params"]]
        torch.save(grads, GRADS / f"rank{RANK}_step{RecordingAdamW.steps}.pt")
        RecordingAdamW.steps += 1
        return super().step(closure)


def _sum_hook(state, bucket):
    """A DDP communication hook that sums gradients over ranks and forgets to divide by the world size."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def _inject(fault: str) -> None:
    ddp = torch.nn.parallel.DistributedDataParallel
    if fault == "sum":
        init = ddp.__init__

        def summing_init(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.register_comm_hook(None, _sum_hook)

        ddp.__init__ = summing_init
    elif fault == "same_shard":
        sampler = actionbert.train.loaders.DistributedSampler
        actionbert.train.loaders.DistributedSampler = lambda *a, **kw: sampler(*a, **{**kw, "rank": 0})
    elif fault == "drop" and RANK == 1:
        actionbert.train.steps.F = types.SimpleNamespace(cross_entropy=lambda *a, **kw: 0 * F.cross_entropy(*a, **kw))
    elif fault not in ("", "drop"):
        raise SystemExit(f"unknown DDP_TEST_FAULT {fault!r}")


if __name__ == "__main__":
    GRADS.mkdir(parents=True, exist_ok=True)
    torch.optim.AdamW = RecordingAdamW  # actionbert.train looks AdamW up at call time
    _inject(FAULT)
    sys.exit(main(sys.argv[1:]))
