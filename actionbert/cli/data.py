"""`actionbert clips` and `prepare`: from long videos to clips, and from clips to a prepared dataset."""

from __future__ import annotations

import argparse
import sys

from actionbert.preprocessing import Preprocessing

_RESIZE = Preprocessing().resize  # the default record's (the cache's default, `cache.DEFAULT_CACHE_RESIZE`)


# ---------------------------------------------------------------------------------------------- clips
def _args_clips(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="long videos to cut (for --method csv: optional, "
                                                              "videos the cut list names by file name)")
    p.add_argument("--out", required=True, help="output folder for the clips and clips.csv")
    p.add_argument("--method", choices=["scenes", "fixed", "csv"], default="scenes",
                   help="scene changes (PySceneDetect content detector), fixed windows, or a cut list")
    p.add_argument("--threshold", type=float, default=27.0, help="scenes: detector threshold (lower cuts more)")
    p.add_argument("--min-scene-len", type=int, default=15, help="scenes: fewest frames between two cuts")
    p.add_argument("--length", type=float, default=2.0, help="fixed: window length in seconds")
    p.add_argument("--stride", type=float, help="fixed: seconds between window starts (default: --length)")
    p.add_argument("--keep-last", action="store_true", help="fixed: also keep the last, shorter window")
    p.add_argument("--csv", dest="csv_file", help="csv: cut list with rows video,start,end[,label] "
                                                  "(seconds or HH:MM:SS.fff)")
    p.add_argument("--min-duration", type=float, default=0.0, help="drop clips shorter than this (seconds)")
    p.add_argument("--reencode", action="store_true", help="always re-encode (no stream copy)")
    p.add_argument("--overwrite", action="store_true",
                   help="a video already cut into --out: delete its earlier clips and cut it again (default: "
                        "refused); clips of other videos in --out are always kept")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_clips(args: argparse.Namespace) -> int:
    from actionbert.data.clips import ClipSpecError, cut_clips

    if args.method != "csv" and not args.videos:
        print("error: give at least one VIDEO to cut", file=sys.stderr)
        return 2
    progress, close = _data_progress(args.quiet)
    try:
        report = cut_clips(args.videos, args.out, method=args.method, threshold=args.threshold,
                           min_scene_len=args.min_scene_len, min_duration=args.min_duration, length=args.length,
                           stride=args.stride, keep_last=args.keep_last, csv_file=args.csv_file,
                           copy=not args.reencode, overwrite=args.overwrite, progress=progress)
    except ClipSpecError as e:
        close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    close()
    copied = sum(c.mode == "copy" for c in report.clips)
    print(f"{len(report.clips)} clip(s) written to {args.out} ({copied} stream-copied, "
          f"{len(report.clips) - copied} re-encoded); list in {report.csv_path}")
    for path, reason in report.problems:
        print(f"warning: {path}: {reason}", file=sys.stderr)
    return 0 if report.clips or not report.problems else 1


# -------------------------------------------------------------------------------------------- prepare
def _args_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset folder (folder per class, UCF101, HMDB51) or list / CSV file")
    p.add_argument("--out", required=True, help="output folder (classes.txt, train/val.csv, problems.csv)")
    p.add_argument("--layout", default="auto",
                   choices=["auto", "folder", "list", "frame_list", "ucf101", "hmdb51", "kinetics"],
                   help="input layout (default: detected)")
    p.add_argument("--root", help="folder that relative paths in list files start from (default: the list's)")
    p.add_argument("--classes", help="class list file (one name per line, or classInd-style 'index name')")
    p.add_argument("--train-list", help="your own split: list of the training videos")
    p.add_argument("--val-list", help="your own split: list of the validation videos")
    p.add_argument("--test-list", help="your own split: list of the test videos")
    p.add_argument("--split", type=int, default=1, help="UCF101 / HMDB51 official split number (1-3)")
    p.add_argument("--annotations", help="UCF101 / HMDB51: folder with the split files (default: DATA)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class for validation")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    p.add_argument("--group-by", choices=["auto", "none"], default="auto",
                   help="auto: clips listed in a clips.csv of `actionbert clips` stay in one split with the other "
                        "clips of their source video; none: split video by video (default: auto)")
    p.add_argument("--min-frames", type=int, default=2, help="fewest decodable frames a usable video needs")
    p.add_argument("--clip-len", type=int, default=32,
                   help="frames of a training clip: shorter videos are kept with the caveat 'short: N frames "
                        "looped to fill a 32-frame clip' (default 32; 0: no such caveat)")
    p.add_argument("--cache", action="store_true", help="also store decoded frames, resized by --resize, for "
                                                        "fast training")
    p.add_argument("--resize", default=None, metavar="HxW|S",
                   help=f"frame size of the cache: the model's data.resize, HEIGHTxWIDTH (default {_RESIZE.height}x"
                        f"{_RESIZE.width}), or one "
                        "number S for short side S with the aspect kept (data.keep_aspect); a cache made for "
                        "another size is not used by train/eval (they decode and say so)")
    p.add_argument("--frames", action="store_true", help="also write img_%%05d.jpg frame folders (reference "
                                                         "format)")
    p.add_argument("--short-side", type=int, default=128, help="short side of exported JPEG frames (--frames), px")
    p.add_argument("--workers", type=int, default=2, help="videos probed in parallel")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_prepare(args: argparse.Namespace) -> int:
    from actionbert.data.cache import DEFAULT_CACHE_RESIZE
    from actionbert.data.prepare import prepare_dataset
    from actionbert.preprocessing import Resize

    split_files = {k: v for k, v in (("train", args.train_list), ("val", args.val_list),
                                     ("test", args.test_list)) if v}
    progress, close = _data_progress(args.quiet)
    try:
        report = prepare_dataset(args.data, args.out, layout=args.layout, root=args.root, classes=args.classes,
                                 split_files=split_files or None, split=args.split, annotations=args.annotations,
                                 val_fraction=args.val_fraction, seed=args.seed, min_frames=args.min_frames,
                                 cache=args.cache, frames=args.frames, cache_short_side=args.short_side,
                                 cache_resize=Resize.from_text(args.resize) if args.resize else DEFAULT_CACHE_RESIZE,
                                 workers=args.workers, group_by=args.group_by, clip_len=args.clip_len or None,
                                 progress=progress)
    except (FileNotFoundError, ValueError) as e:
        close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    close()
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n or s != "test")
    print(f"{len(report.classes)} classes, {counts} videos ({report.layout} layout) -> {args.out}")
    if report.groups < sum(report.counts.values()):
        print(f"split by source video: {report.groups} groups (clips of one source stay in one split)")
    if report.cache_bytes:
        print(f"cache: {report.cache_bytes / 2**20:,.1f} MiB in {args.out}/cache")
    if report.short:
        print(f"{report.short} video(s) shorter than a {args.clip_len}-frame clip: their frames are looped to fill "
              f"one (caveat 'short' in the split CSVs)")
    if report.problems:
        kept = len(report.problems) - report.skipped
        print(f"{report.skipped} file(s) skipped, {kept} kept with a caveat; see {args.out}/problems.csv:")
        for p in report.problems[:10]:
            print(f"  [{p.action}] {p.path}: {p.reason}")
        if len(report.problems) > 10:
            print(f"  ... and {len(report.problems) - 10} more")
    if not report.counts["train"]:
        print("error: no usable training video", file=sys.stderr)
        return 1
    return 0


def _data_progress(quiet: bool):
    """(callback(stage, done, total), close) drawing one tqdm bar per stage of clips / prepare."""
    from tqdm import tqdm

    state: dict = {}

    def close():
        bar = state.pop("bar", None)
        if bar is not None:
            bar.close()

    def update(stage: str, done: int, total: int):
        if quiet:
            return
        if state.get("stage") != stage:
            close()
            state["stage"] = stage
            state["bar"] = tqdm(total=total, desc=stage, leave=False, dynamic_ncols=True)
        bar = state["bar"]
        bar.total = total
        bar.update(done - bar.n)

    return update, close
