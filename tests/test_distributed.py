"""DDP: 2 CPU processes on gloo (torchrun) end with the weights of one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actionbert.checkpoint import load_checkpoint
from actionbert.data import make_synthetic_dataset, prepare_dataset


def _config(path: Path, prepared: Path, out: Path, batch: int) -> Path:
    path.write_text(f"""
model: {{backbone: r2plus1d_tiny, head: bert, clip_len: 16, input_size: 32}}
data: {{root: {prepared}, resize: [36, 48], num_workers: 0}}
train: {{out: {out}, epochs: 2, batch_size: {batch}, lr: 1.0e-3, seed: 3,
         deterministic_layers: true, freeze_bn: true}}
""")
    return path


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    raw = make_synthetic_dataset(tmp_path / "videos", num_classes=2, videos_per_class=6, num_frames=20,
                                 size=(48, 64), clip_len=16, seed=2)
    prepare_dataset(raw, tmp_path / "prepared", val_fraction=1 / 3, seed=0, cache=True, cache_short_side=36)
    # 8 training clips: 2 steps per epoch of global batch 4 (2 processes x 2, or 1 process x 4)
    single = _config(tmp_path / "single.yaml", tmp_path / "prepared", tmp_path / "single", batch=4)
    ddp = _config(tmp_path / "ddp.yaml", tmp_path / "prepared", tmp_path / "ddp", batch=2)
    _run([sys.executable, "-m", "actionbert", "train", str(single), "--quiet"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "actionbert", "train", str(ddp), "--quiet"], tmp_path)
    a = load_checkpoint(tmp_path / "single" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert a["epoch"] == b["epoch"] == 1
    assert a["model_state"].keys() == b["model_state"].keys()
    for k, va in a["model_state"].items():
        if k.endswith("attn.k.bias"):
            # softmax ignores a per-query constant, so this gradient is exactly 0 in exact arithmetic; Adam
            # normalises the ~1e-9 rounding noise into full-size steps whose sign depends on summation order
            continue
        torch.testing.assert_close(b["model_state"][k], va, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # metrics are reduced across processes: the same losses as the single process
    ha, hb = a["history"], b["history"]
    for ra, rb in zip(ha, hb):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-4)
    assert ha[0]["train_loss"] != ha[1]["train_loss"]  # the weights did move
