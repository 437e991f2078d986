"""Issue 11 (18): a stalled DDP process stops the run after train.dist_timeout_s with one clear error line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actionbert.config import ConfigError, TrainConfig, load_config
from actionbert.data import make_synthetic_dataset, prepare_dataset
from actionbert.preprocessing import Resize

# rank 1 stops answering once training starts (as under SIGSTOP); rank 0 runs the real CLI
WORKER = """
import sys, time
import actionbert.train
if sys.argv[1] == "1":
    actionbert.train._train_epoch = lambda *a, **k: time.sleep(120)
from actionbert.cli import main
sys.exit(main(["train", sys.argv[2], "--quiet", "--set", "train.dist_timeout_s=3"]))
"""


def test_the_collective_timeout_is_a_config_value():
    assert TrainConfig().dist_timeout_s == 600
    assert load_config(None, ["train.dist_timeout_s=30"]).train.dist_timeout_s == 30
    with pytest.raises(ConfigError, match="dist_timeout_s must be > 0"):
        load_config(None, ["train.dist_timeout_s=0"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_stalled_rank_ends_the_run_after_the_timeout_with_one_error_line(tmp_path):
    raw = make_synthetic_dataset(tmp_path / "videos", num_classes=2, videos_per_class=2, num_frames=20,
                                 size=(48, 64), clip_len=16, seed=2)
    prepare_dataset(raw, tmp_path / "prepared", val_fraction=0.5, seed=0, cache=True, cache_resize=Resize(36, 48))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: {{backbone: r2plus1d_tiny, head: tgap, clip_len: 16, input_size: 32}}
data: {{root: {tmp_path / 'prepared'}, resize: [36, 48], num_workers: 0}}
train: {{out: {tmp_path / 'run'}, epochs: 1, batch_size: 1}}
""")
    port = str(_free_port())
    procs = []
    for rank in ("0", "1"):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, rank, str(cfg)], env=env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    t0 = time.monotonic()
    try:
        out, err = procs[0].communicate(timeout=180)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert time.monotonic() - t0 < 100  # far from gloo's default 30 minutes
    lines = err.strip().splitlines()
    assert procs[0].returncode == 2, out[-2000:] + err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("error: rank 0 of 2: another process of this run stopped answering")
    assert "train.dist_timeout_s = 3 s" in lines[0]
    assert not Path(tmp_path / "run" / "last.pt").exists()
