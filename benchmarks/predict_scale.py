"""Prediction at scale (issue 13): `actionbert predict --out` over many videos of mixed real codecs, with decoding
workers and torchrun processes, against the model alone on the same clips.

Usage: `python benchmarks/predict_scale.py [--videos 40] [--quick] [--eager] [--models tiny,r2plus1d_18]
[--repeats R] [--work DIR]`.
`--quick` divides the durations by 10 (0.4-6 s) and makes 12 videos: a check that the benchmark works, not a
measurement.

It writes `--videos` videos cycling through H.264 (MP4), MPEG-4 Part 2 (AVI) and MJPEG (AVI), at 320 x 240 and
640 x 360, 4-60 s at 25 fps (a textured scene panning, moving blobs, noise), then for each model
- tiny: r2plus1d_local_tiny + BERT, 16-frame clips, non-overlapping windows (decode-bound: ~90 clips/s on one
  core here, about 1.5x the decoder),
- r2plus1d_18: R(2+1)D-18 + BERT, 16-frame clips, one window every 128 frames (model-bound; see MODELS),
both at 112 x 112 from frames resized to 128 x 171, runs in fresh processes:
- `sequential` (tiny only): today's path (no --out: one video after another in the main process),
- `workers W` for W in 0, 1, 2: `predict --out R.jsonl --workers W`,
- `torchrun K` for K in 1, 2: `torchrun --nproc_per_node K -m actionbert predict --out ... --workers 0`,
and prints videos/s and clips/s (timed around the prediction itself: model loading, Python start-up and the
model's warm-up/compilation left out; the last is printed), the largest RSS of each process (each rank's main
process, and in brackets its largest child process: a decoding worker, or a helper process that torch starts),
and the ratio of the end-to-end clip rate to the model alone on clips of the same shape and batch (zero clips,
fixed batch, after a warm-up). Precision: bf16 where `runtime.bf16_is_slow` says the device runs it natively, else fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CODECS = (("libx264", "mp4", "yuv420p"), ("mpeg4", "avi", "yuv420p"), ("mjpeg", "avi", "yuvj420p"))
SIZES = ((240, 320), (360, 640))
FPS = 25
BATCH = 8
# name -> (backbone, --hop, whether to run today's sequential path too). The model-bound case scores one window
# every 128 frames (5.1 s) so that it fits this 2-core machine (R(2+1)D-18 runs ~1.2 clips/s here); the decoder
# still decodes every frame, 8x more decoding per scored clip than non-overlapping windows: harder to hide.
MODELS = {"tiny": ("r2plus1d_local_tiny", None, True), "r2plus1d_18": ("r2plus1d_18", 128, False)}


def _frames(n: int, height: int, width: int, seed: int):
    """uint8 frames (H, W, 3) one at a time: a panning texture, two moving blobs, a little noise."""
    rng = np.random.default_rng(seed)
    tile = rng.integers(30, 220, (height // 8 + 1, width // 8 + 40, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    yy, xx = np.mgrid[0:height, 0:width]
    for t in range(n):
        img = tile[:height, (t // 2) % 300:(t // 2) % 300 + width].copy()
        for k in range(2):
            cy, cx = (height / 2 + height / 3 * np.sin(t / (20 + 7 * k))), (t * (3 + k)) % width
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 400] = (200, 60 + 100 * k, 40)
        img = np.clip(img.astype(np.int16) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
        yield img


def make_videos(folder: Path, count: int, scale: float) -> list[str]:
    """`count` videos cycling codecs and sizes, durations spread over 4-60 s (times `scale`)."""
    import av

    paths = []
    for i in range(count):
        codec, ext, pix = CODECS[i % len(CODECS)]
        height, width = SIZES[(i // len(CODECS)) % len(SIZES)]
        seconds = (4 + 56 * ((i * 7) % count) / max(count - 1, 1)) * scale
        path = folder / f"v{i:03d}_{codec}_{width}x{height}.{ext}"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream(codec, rate=Fraction(FPS))
            stream.height, stream.width, stream.pix_fmt = height, width, pix
            if codec == "libx264":
                stream.options = {"preset": "veryfast", "threads": "1"}
            elif codec == "mpeg4":
                stream.bit_rate, stream.gop_size = 2_000_000, 12
            for img in _frames(max(int(seconds * FPS), 1), height, width, seed=i):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            container.mux(stream.encode())
        paths.append(str(path))
    return paths


def make_model(folder: Path, backbone: str) -> Path:
    import torch

    from actionbert.checkpoint import inference_config, save_pretrained
    from actionbert.models import build_model

    torch.manual_seed(0)
    model = build_model(backbone=backbone, head="bert", num_classes=10, clip_len=16, input_size=112).eval()
    info = inference_config(model, classes=[f"c{i}" for i in range(10)], resize=(128, 171), norm="torchvision")
    return save_pretrained(model, folder / backbone, info=info)


# ------------------------------------------------------------------------------------------------ child side
def child(stats_dir: str, argv: list[str]) -> int:
    """Run `actionbert predict` here, timing the prediction itself; write this process's figures as JSON.

    Start-up is timed apart and left out of `seconds`: the zero-batch warm-up of `--out` runs (one eager call and,
    where it pays, the compilation of the batch shape) and, for shapes first met later, the first compiled call
    of each shape (`InferenceReport.compiled_shapes`: compilation plus one run)."""
    import actionbert.inference as inference_module
    import actionbert.predict as predict_module
    import actionbert.predict_batch as batch_module
    from actionbert.cli import main

    timing = {"startup": 0.0}
    prepared, warm_shapes = [], set()

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            timing["seconds"] = time.perf_counter() - t0
            return result
        return wrapper

    def capture(*args, **kwargs):
        prepared.append(prepare(*args, **kwargs))
        return prepared[-1]

    def warm_up(predictor):
        t0 = time.perf_counter()
        warm(predictor)
        timing["startup"] += time.perf_counter() - t0
        warm_shapes.update(*(p.report.compiled_shapes for p in prepared))

    prepare, warm = inference_module.prepare_for_inference, batch_module._warm_up
    inference_module.prepare_for_inference, batch_module._warm_up = capture, warm_up
    batch_module.predict_to_file = timed(batch_module.predict_to_file)
    predict_module.predict_videos = timed(predict_module.predict_videos)
    code = main(argv)
    later = [t for p in prepared for shape, t in p.report.compiled_shapes.items() if shape not in warm_shapes]
    startup = timing["startup"] + sum(later)
    rank = os.environ.get("RANK", "0")
    figures = {"rank": rank, "seconds": timing["seconds"] - startup if "seconds" in timing else None,
               "startup": startup, "exit": code, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "workers_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    Path(stats_dir, f"rank{rank}.json").write_text(json.dumps(figures))
    return 0


# ----------------------------------------------------------------------------------------------- parent side
def run_case(model: Path, listing: Path, work: Path, *, workers: int | None, procs: int, extra: list[str]) -> dict:
    """One predict run in fresh processes; returns its figures (seconds = slowest rank)."""
    stats = Path(tempfile.mkdtemp(dir=work))
    out = work / "results.jsonl"
    argv = ["predict", str(model), "--list", str(listing), "--batch-size", str(BATCH), *extra]
    argv += ["--out", str(out), "--overwrite", "--workers", str(workers)] if workers is not None else []
    launcher = [sys.executable] if procs == 0 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                   "--nproc_per_node", str(procs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*launcher, __file__, "--child", str(stats), *argv], env=env, capture_output=True,
                          text=True)
    ranks = [json.loads(p.read_text()) for p in sorted(stats.glob("rank*.json"))]
    if not ranks or any(r["seconds"] is None for r in ranks):
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    clips = (sum(len(json.loads(line)["segments"]) for line in out.read_text().splitlines()[1:])
             if workers is not None else 0)  # sequential: printed, not counted (the same windows as the others)
    return {"seconds": max(r["seconds"] for r in ranks), "ranks": ranks, "clips": clips}


def model_alone(model: Path, clips: int, precision: str, *, eager: bool, budget_s: float = 90.0) -> float:
    """Clips/s of the model alone, prepared as predict prepares it: fixed batches of zero clips of the run's
    shape, after a warm-up of two calls (eager, then compiled where it pays); as many batches as the run scored,
    or as fit in `budget_s` seconds (at least 4)."""
    import torch

    from actionbert.checkpoint import load_model
    from actionbert.predict import Predictor
    from actionbert.runtime import select_device

    net, info = load_model(model)
    predictor = Predictor(net, info, device=select_device("auto"), precision=precision, batch_size=BATCH,
                          fast=not eager)
    batch = [torch.zeros(3, 16, 112, 112)] * BATCH
    for _ in range(2):
        predictor._run(batch)
    calls, t0 = 0, time.perf_counter()
    while calls < max(clips // BATCH, 4) and (calls < 4 or time.perf_counter() - t0 < budget_s):
        predictor._run(batch)
        calls += 1
    return calls * BATCH / (time.perf_counter() - t0)


def _rss(ranks: list[dict]) -> str:
    return " / ".join(f"{r['rss_mb']:.0f}" + (f" (+{r['workers_rss_mb']:.0f})" if r["workers_rss_mb"] else "")
                      for r in ranks)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int)
    ap.add_argument("--quick", action="store_true", help="durations / 10 and 12 videos: checks that it works")
    ap.add_argument("--eager", action="store_true", help="run the model as trained (no fold/compile)")
    ap.add_argument("--models", default="tiny,r2plus1d_18")
    ap.add_argument("--repeats", type=int, default=1, help="runs per case, round-robin; the median is printed")
    ap.add_argument("--work", help="folder for the videos and runs, kept (its videos are reused when complete)")
    args = ap.parse_args()
    import torch

    from actionbert.runtime import bf16_is_slow, select_device

    count = args.videos or (12 if args.quick else 40)
    precision = "fp32" if bf16_is_slow(select_device("auto")) else "bf16"
    extra = ["--precision", precision] + (["--eager"] if args.eager else [])
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="predict_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder = work / f"videos_{count}{'_quick' if args.quick else ''}"
    listing = folder / "videos.txt"  # written last: the set is complete
    if not listing.exists():
        folder.mkdir(exist_ok=True)
        videos = make_videos(folder, count, 0.1 if args.quick else 1.0)
        listing.write_text("\n".join(videos) + "\n")
    print(f"{count} videos in {folder} ({time.perf_counter() - t0:.0f} s to write); device {select_device('auto')}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {precision}, batch {BATCH}"
          f"{', eager' if args.eager else ''}")
    cases = [("workers 0", 0, 0), ("workers 1", 1, 0), ("workers 2", 2, 0), ("torchrun 1", 0, 1),
             ("torchrun 2", 0, 2)]
    for name in args.models.split(","):
        backbone, hop, sequential = MODELS[name]
        model = make_model(work, backbone)
        hop_args = ["--hop", str(hop)] if hop else []
        print(f"\n{name} ({backbone} + BERT), hop {hop or 'one clip span (16 frames)'}\n"
              "| run | videos/s | clips/s | e2e / model alone | start-up s (left out) "
              "| max RSS MB per process (+largest child) |\n|---|---:|---:|---:|---:|---|")
        todo = ([("sequential (today)", None, 0)] if sequential else []) + cases
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in todo}
        for _ in range(args.repeats):  # round-robin: a slow spell of the machine touches every case alike
            for label, workers, procs in todo:
                runs[label].append(run_case(model, listing, work, workers=workers, procs=procs,
                                            extra=extra + hop_args))
        rows = [(label, sorted(rs, key=lambda r: r["seconds"])[(len(rs) - 1) // 2]) for label, rs in runs.items()]
        clips = max(r["clips"] for _, r in rows)
        alone = model_alone(model, clips, precision, eager=args.eager)
        for label, r in rows:
            rate, startup = clips / r["seconds"], max(x["startup"] for x in r["ranks"])
            print(f"| {label} | {count / r['seconds']:.2f} | {rate:.1f} | {rate / alone:.2f} | {startup:.1f} "
                  f"| {_rss(r['ranks'])} |", flush=True)
        print(f"| model alone | | {alone:.1f} | 1.00 | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
