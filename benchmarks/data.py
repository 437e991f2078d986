"""Clip read speed: straight from the video, from the `prepare --cache` cache, and from JPEG frame folders.

Usage: `python benchmarks/data.py [--videos 4] [--frames 300] [--clips 60]` (about a minute on 2 cores).

It writes the same 320 x 240 videos in two codecs (H.264 in MP4 with a keyframe every 250 frames, as cameras
and encoders do; MPEG-4 Part 2 in AVI with a keyframe every 12 frames, as UCF101 is stored), then times reads
of random 32-frame training clips (uniform start, consecutive frames), each delivering uint8 frames at training
resolution:

- (a) video: `decode.read_frames` with the decoded frame count from `prepare`, one seek to the nearest
  keyframe when that saves work, sequential decoding, RGB conversion and resize to the record's 170 x 128 of
  the 32 kept frames in one swscale step;
- (b) cache: `cache.read_cached` from the memory-mapped `.npy` file `prepare --cache` writes (frames stored as
  the record asks, 170 x 128; its disk cost per frame is printed);
- (c) JPEG folders as the reference stores them (`img_00001.jpg`, ..., full 320 x 240 frames, quality 95):
  32 files opened with PIL, converted to RGB and resized to 170 x 128 as the reference does before cropping;
  (c') the same with OpenCV's `imread` + `resize`, the reference loader's own calls.

Everything runs in one thread (torch, OpenCV, FFmpeg decoder and scaler), and speed is clips per CPU-second of
this process: clips per second per core, independent of what else the machine runs. Targets from the issues:
(b) >= 10x (c), (a) >= (c) (issue 3); (b) >= 10x (a) (issue 12).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIP_LEN = 32


def _scene(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (n, H, W, 3): a smooth textured background panning slowly, moving blobs, sensor-like noise."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 220, (height // 16 + 2, width // 16 + 4, 3)).astype(np.float32)
    big = cv2.resize(coarse, ((width // 16 + 4) * 16, (height // 16 + 2) * 16), interpolation=cv2.INTER_CUBIC)
    big += rng.normal(0, 18, big.shape[:2] + (1,)).astype(np.float32)  # fine texture (foliage, fabric)
    yy, xx = np.mgrid[0:height, 0:width]
    blobs = [(rng.uniform(0, height), rng.uniform(0, width), rng.uniform(-2, 2), rng.uniform(-3, 3),
              rng.uniform(10, 30), rng.uniform(0, 255, 3)) for _ in range(4)]
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        shift = int(t * 0.5) % 32  # slow camera pan
        img = big[:height, shift:shift + width].copy()
        for y0, x0, vy, vx, r, colour in blobs:
            cy, cx = (y0 + vy * t) % height, (x0 + vx * t) % width
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
        img += rng.normal(0, 4, img.shape).astype(np.float32)
        frames[t] = np.clip(img, 0, 255)
    return frames


def _write(path: Path, frames: np.ndarray, codec: str) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.gop_size = 250
            stream.options = {"preset": "veryfast", "crf": "23", "keyint_min": "250", "sc_threshold": "0"}
        else:
            stream.gop_size = 12
            stream.bit_rate = 700_000
            stream.options = {"bf": "2"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _timed(fn, clips: list) -> tuple[float, float]:
    """(clips per CPU-second, clips per wall-second) of `fn` over `clips`."""
    fn(clips[0])  # warm-up (imports, first file open)
    cpu, wall = time.process_time(), time.perf_counter()
    for clip in clips:
        fn(clip)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return len(clips) / max(cpu, 1e-9), len(clips) / max(wall, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="videos per codec")
    parser.add_argument("--frames", type=int, default=300, help="frames per video")
    parser.add_argument("--clips", type=int, default=60, help="timed clips per method and codec")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="write the test data here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)

    import cv2
    import torch
    from PIL import Image

    from actionbert.data.cache import DEFAULT_CACHE_RESIZE, cache_file, cache_video, read_cached
    from actionbert.data.decode import read_frames

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="actionbert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    codecs = {"h264 mp4, GOP 250": ("libx264", ".mp4"), "mpeg4 avi, GOP 12": ("mpeg4", ".avi")}
    rng = random.Random(args.seed)
    results = []
    try:
        print(f"writing {args.videos} x {args.frames}-frame 320x240 videos per codec, caches and JPEG folders "
              f"in {work} ...", flush=True)
        scenes = [_scene(args.frames, 240, 320, seed=args.seed * 100 + k) for k in range(args.videos)]
        for label, (codec, ext) in codecs.items():
            videos = []
            for k, frames in enumerate(scenes):
                path = work / f"{codec}_{k}{ext}"
                _write(path, frames, codec)
                cache = cache_file(work / "cache", path.name)
                info, _ = cache_video(path, cache)
                jpeg_dir = work / "jpeg" / path.stem
                jpeg_dir.mkdir(parents=True, exist_ok=True)
                for i, frame in enumerate(read_frames(path, range(info.num_frames)).numpy(), start=1):
                    Image.fromarray(frame).save(jpeg_dir / f"img_{i:05d}.jpg", quality=95)
                videos.append((path, info, cache, jpeg_dir))
            size = DEFAULT_CACHE_RESIZE(240, 320)  # what the cache stores: the default record's resize
            cached_frames = sum(v[1].num_frames for v in videos)
            npy_bytes = sum(v[2].stat().st_size for v in videos)
            clips = []
            for _ in range(args.clips):
                path, info, cache, jpeg_dir = rng.choice(videos)
                start = rng.randint(0, info.num_frames - CLIP_LEN)
                clips.append((path, info, cache, jpeg_dir, list(range(start, start + CLIP_LEN))))

            def from_video(c):
                return read_frames(c[0], c[4], size=size, num_frames=c[1].num_frames)

            def from_cache(c):
                return read_cached(c[2], c[4])

            def from_jpeg_pil(c):
                out = []
                for i in c[4]:
                    with Image.open(c[3] / f"img_{i + 1:05d}.jpg") as img:
                        out.append(np.asarray(img.convert("RGB").resize(size[::-1], Image.BILINEAR)))
                return np.stack(out)

            def from_jpeg_cv2(c):
                return np.stack([cv2.cvtColor(cv2.resize(cv2.imread(str(c[3] / f"img_{i + 1:05d}.jpg")), size[::-1],
                                                         interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
                                 for i in c[4]])

            assert from_video(clips[0]).shape == from_cache(clips[0]).shape == (CLIP_LEN, *size, 3)
            kbps = sum(v[0].stat().st_size for v in videos) * 8 / (len(videos) * args.frames / 25) / 1000
            row = {"codec": label, "kbit/s": kbps, "bytes/frame": npy_bytes / cached_frames, "size": size}
            for name, fn, n in (("(a) video", from_video, args.clips), ("(b) cache", from_cache, 10 * args.clips),
                                ("(c) jpeg PIL", from_jpeg_pil, args.clips),
                                ("(c') jpeg cv2", from_jpeg_cv2, args.clips)):
                batch = (clips * (n // len(clips) + 1))[:n]
                row[name] = _timed(fn, batch)
            results.append(row)
            print(f"  {label}: done", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    names = ["(a) video", "(b) cache", "(c) jpeg PIL", "(c') jpeg cv2"]
    print("\n32-frame training clip reads, clips per second per core (CPU time; wall-clock in brackets)")
    header = (f"{'codec':<20} {'kbit/s':>7} " + " ".join(f"{n:>20}" for n in names)
              + f" {'b/c':>6} {'a/c':>6} {'b/a':>6}")
    print(header)
    print("-" * len(header))
    for row in results:
        cells = " ".join(f"{row[n][0]:>10.1f} [{row[n][1]:>7.1f}]" for n in names)
        ratio_b = row["(b) cache"][0] / row["(c) jpeg PIL"][0]
        ratio_a = row["(a) video"][0] / row["(c) jpeg PIL"][0]
        ratio_ba = row["(b) cache"][0] / row["(a) video"][0]
        print(f"{row['codec']:<20} {row['kbit/s']:>7.0f} {cells} {ratio_b:>6.1f} {ratio_a:>6.2f} {ratio_ba:>6.1f}")
    print("\ntargets: b/c >= 10, a/c >= 1 (c = PIL JPEG folders), b/a >= 10")
    for row in results:
        h, w = row["size"]
        print(f"cache disk cost ({row['codec']}): {row['bytes/frame']:,.0f} bytes per {w}x{h} frame "
              f"({row['bytes/frame'] / 1024:.2f} KiB, .npy header included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
