"""DDP: 2 CPU processes on gloo (torchrun) compute the gradients of one process with the same global batch.

Why float64 and gradients (issue: this test once passed on one CPU kind and failed on another). In float32 the
per-rank partial sums make the all-reduced gradient differ from one process's in its last bits, and the order of
summation (oneDNN's kernels and blockings differ between CPUs) decides those bits. AdamW then turns a gradient that
is zero in exact arithmetic (the attention key bias: softmax ignores a per-query constant) into a full-size step
whose sign is that rounding noise, so comparing weights after AdamW steps judges the CPU, not DDP. AdamW is also
blind to one classic fault: it divides by the gradient's own scale, so gradients summed instead of averaged move
the weights almost exactly as averaged ones do.

So the training runs in float64 (`train.precision: fp64`, the same code path) and the test compares what DDP is
responsible for: the gradient each optimizer step applies (recorded by tests/ddp_driver.py), then the losses and
the weights. Bound: float64 rounds at u = 2**-53 = 1.1e-16; the longest reduction in this model is a layer-1 weight
gradient over B*T*H*W = 4*16*16*16 = 16,384 terms, whose worst-case error is n*u = 1.8e-12 of the sum of the
terms' magnitudes; backpropagation chains about ten such layers (2e-11). We allow 1e-9 of each tensor's largest
gradient (floored at 1e-6 of the model's largest, for tensors that are zero in exact arithmetic). The faults DDP
could have (sum instead of mean, a rank's batch dropped, ranks on the same shard) change gradients by O(1), nine
orders of magnitude above that bound; `test_the_comparison_catches_a_broken_ddp` shows that it catches each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actionbert.checkpoint import load_checkpoint
from actionbert.data import make_synthetic_dataset, prepare_dataset
from actionbert.preprocessing import Resize

DRIVER = Path(__file__).with_name("ddp_driver.py")
REL_TOL = 1e-9  # of a tensor's largest gradient; the float64 derivation is in the module docstring
FLOOR = 1e-6  # of the model's largest gradient: the scale for tensors whose gradient is zero in exact arithmetic


def _config(path: Path, prepared: Path, out: Path, batch: int, epochs: int) -> Path:
    path.write_text(f"""
model: {{backbone: r2plus1d_tiny, head: bert, clip_len: 16, input_size: 32}}
data: {{root: {prepared}, resize: [36, 48], num_workers: 0}}
train: {{out: {out}, epochs: {epochs}, batch_size: {batch}, lr: 1.0e-3, seed: 3, precision: fp64, device: cpu,
         deterministic_layers: true, freeze_bn: true}}
""")
    return path


def _train(root: Path, name: str, *, procs: int, epochs: int, fault: str = "") -> Path:
    """Train with the recording driver (1 process x batch 4, or 2 processes x batch 2); returns the run folder."""
    prepared, out = root / "prepared", root / name
    config = _config(root / f"{name}.yaml", prepared, out, batch=4 // procs, epochs=epochs)
    launcher = ([sys.executable] if procs == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DDP_TEST_GRADS": str(out / "grads"), "DDP_TEST_FAULT": fault}
    proc = subprocess.run([*launcher, str(DRIVER), "train", str(config), "--quiet"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _grads(run: Path, rank: int, step: int) -> list[torch.Tensor]:
    return torch.load(run / "grads" / f"rank{rank}_step{step}.pt", weights_only=True)


def _mismatches(got: list[torch.Tensor], want: list[torch.Tensor]) -> list[str]:
    """The tensors of `got` that differ from `want` by more than the float64 bound, with their error."""
    assert len(got) == len(want)
    top = max(w.abs().max().item() for w in want)
    bad = []
    for i, (g, w) in enumerate(zip(got, want)):
        scale = max(w.abs().max().item(), FLOOR * top)
        err = (g - w).abs().max().item()
        if err > REL_TOL * scale:
            bad.append(f"tensor {i} {tuple(w.shape)}: max error {err:.3g} = {err / scale:.3g} of its scale")
    return bad


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    raw = make_synthetic_dataset(root / "videos", num_classes=2, videos_per_class=6, num_frames=20,
                                 size=(48, 64), clip_len=16, seed=2)
    prepare_dataset(raw, root / "prepared", val_fraction=1 / 3, seed=0, cache=True, cache_resize=Resize(36, 48))
    # 8 training clips: 2 steps per epoch of global batch 4 (2 processes x 2, or 1 process x 4)
    _train(root, "single", procs=1, epochs=2)
    return root


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(runs):
    single, ddp = runs / "single", _train(runs, "ddp", procs=2, epochs=2)
    for step in range(4):  # 2 epochs x 2 steps
        want = _grads(single, 0, step)
        for rank in (0, 1):
            assert not _mismatches(_grads(ddp, rank, step), want), f"step {step}, rank {rank}"
    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert a["epoch"] == b["epoch"] == 1 and a["model_state"].keys() == b["model_state"].keys()
    assert a["model_state"]["fc.weight"].dtype == torch.float64  # the run really was float64
    for k, va in a["model_state"].items():
        # Adam's eps (1e-8) caps its amplification of float64 noise: ~1e-10 of a step of lr = 1e-3
        torch.testing.assert_close(b["model_state"][k], va, rtol=0, atol=1e-9, msg=lambda m: f"{k}: {m}")
    for ra, rb in zip(a["history"], b["history"]):  # metrics are reduced across processes
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-12)
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-12)
    assert a["history"][0]["train_loss"] != a["history"][1]["train_loss"]  # the weights did move


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["sum", "same_shard", "drop"])
def test_the_comparison_catches_a_broken_ddp(runs, fault):
    """Each deliberate fault changes the first step's gradient far beyond the bound, in most tensors."""
    broken = _train(runs, f"broken_{fault}", procs=2, epochs=1, fault=fault)
    want = _grads(runs / "single", 0, 0)
    bad = _mismatches(_grads(broken, 0, 0), want)
    assert len(bad) > len(want) // 2, bad
