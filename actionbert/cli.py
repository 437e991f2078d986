"""The `actionbert` command line.

This is the only module that parses arguments or prints progress; every command calls an importable function
of the library. Each sub-command is a pair of functions, `_args_<name>(parser)` and `_run_<name>(args)`,
listed in the `COMMANDS` dict literal at the bottom.
"""

from __future__ import annotations

import argparse
import sys

from actionbert.precisions import PREDICT_CHOICES, TRAIN_PRECISIONS
from actionbert.errors import EXIT_BUG, EXIT_ERROR, EXIT_SOME_FAILED, ActionbertError


# --------------------------------------------------------------------------------------------- models
def _args_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-classes", type=int, default=51, help="class count used for the parameter counts")
    p.add_argument("--weights", action="store_true", help="list the known pretrained weights (--pretrained NAME)")


def _run_models(args: argparse.Namespace) -> int:
    from actionbert.hub import MIRROR_ENV, cache_dir, weights_table
    from actionbert.models import list_models
    from actionbert.tables import text_table

    if args.weights:
        print(text_table(weights_table()))
        print(f"cache: {cache_dir()} (TORCH_HOME); downloads from ${MIRROR_ENV}/<file> when set")
    else:
        print(text_table(list_models(num_classes=args.num_classes)))
    return 0


# ---------------------------------------------------------------------------------------------- train
def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (model/data/train sections); defaults if omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set model.head=tgap --set train.epochs=10")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue the run in train.out from its last.pt "
                                                             "(without CONFIG: with the run's own config)")
    start.add_argument("--overwrite", action="store_true", help="replace the run in train.out (deletes its "
                                                                "checkpoints, metrics, TensorBoard logs, eval_*)")
    p.add_argument("--out", help="run folder (train.out)")
    p.add_argument("--data", help="prepared dataset folder (data.root)")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, help="train.precision (auto: the device's fast one)")
    p.add_argument("--device", help="train.device: auto, cpu, cuda, cuda:1 ... (under torchrun: auto or cuda; each "
                                    "process uses GPU LOCAL_RANK)")
    p.add_argument("--epochs", type=int, help="train.epochs")
    p.add_argument("--pretrained", help="weights to start from: a file, or a name from `actionbert models "
                                        "--weights` (downloaded once, verified) (train.pretrained)")
    p.add_argument("--pretrained-source", help="format of a --pretrained file: torchvision | ig65m | hara | "
                                               "reference | actionbert (default actionbert; implied by a name)")
    p.add_argument("--sync-bn", action="store_true", help="synchronise BatchNorm across processes (CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cli_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    extra = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value not in (None, False):
            extra.append(f"{key}={'true' if value is True else value}")
    return extra


def _run_train(args: argparse.Namespace) -> int:
    import os

    from actionbert.checkpoint import CheckpointError
    from actionbert.config import load_config
    from actionbert.hub import resolve
    from actionbert.runfolder import saved_config
    from actionbert.train import train
    from actionbert.weights import named_entry

    overrides = args.overrides + _cli_overrides(args, {
        "out": "train.out", "data": "data.root", "precision": "train.precision", "device": "train.device",
        "epochs": "train.epochs", "pretrained": "train.pretrained", "pretrained_source": "train.pretrained_source",
        "sync_bn": "train.sync_bn"})
    if args.resume and not args.config:  # the run's own config, changed only by the options given
        last, base = saved_config(overrides)
        cfg = load_config(None, overrides, base=base, base_name=str(last))
    else:
        cfg = load_config(args.config, overrides)
    main_process = os.environ.get("RANK", "0") == "0"
    hooks = _progress_hooks(quiet=args.quiet or not main_process)
    try:
        if cfg.train.pretrained and not args.resume and main_process:  # a named file: checked, downloaded here
            named_entry(cfg.train.pretrained, backbone=cfg.model.backbone, source=cfg.train.pretrained_source)
            resolve(cfg.train.pretrained, progress=not args.quiet)
        result = train(cfg, resume=args.resume, overwrite=args.overwrite, hooks=hooks)
    except CheckpointError as e:  # weights that cannot be fetched, read or loaded: one line
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if main_process:
        best = (f"best val top-1 {result.best_top1:.2f}% at epoch {result.best_epoch}" if result.best_top1 is not None
                else f"no validation data: best.pt is the last epoch ({result.best_epoch})")
        print(f"{best}; {result.failures} clip(s) failed to decode; run folder {result.run_dir}")
    return 0


def _progress_hooks(*, quiet: bool):
    """TrainHooks drawing a tqdm bar per epoch and printing one line per epoch and per failed video."""
    from tqdm import tqdm

    from actionbert.train import TrainHooks

    state: dict = {}

    def start(epoch, steps):
        if not quiet:
            state["bar"] = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", leave=False, dynamic_ncols=True)

    def step(info):
        bar = state.get("bar")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{info['loss']:.3f}", top1=f"{info['top1']:.1f}",
                            clips_s=f"{info['clips_per_s']:.1f}")

    def end(row):
        bar = state.pop("bar", None)
        if bar is not None:
            bar.close()
        if not quiet:
            val = "no val" if row["val_top1"] is None else \
                f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:5.1f}"
            print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} top-1 {row['train_top1']:5.1f}  "
                  f"{val}  lr {row['lr']:.2e}  "
                  f"{row['clips_per_s']:.1f} clips/s  failures {row['failures']}", flush=True)

    def failure(video_id, reason):
        msg = f"warning: skipped {video_id}: {reason}"
        (tqdm.write(msg) if state.get("bar") is not None else print(msg, file=sys.stderr))

    return TrainHooks(on_epoch_start=start, on_step=step, on_epoch_end=end, on_failure=failure,
                      on_message=lambda text: print(text, flush=True))


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
                   help="frame size of the cache: the model's data.resize, HEIGHTxWIDTH (default 128x170), or one "
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


# ----------------------------------------------------------------------------------------------- eval
def _args_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="training checkpoint (best.pt / last.pt) or actionbert model folder")
    p.add_argument("--data", required=True, help="folder written by `actionbert prepare`")
    p.add_argument("--split", default="val", help="split to evaluate (val, test, train)")
    p.add_argument("--views", default="all",
                   help="'all' (every test window x 10 crops, the paper) or CLIPSxCROPS, e.g. 1x1, 3x10")
    p.add_argument("--temporal-check", action="store_true",
                   help="also evaluate frame-reversed and frame-shuffled clips (order dependence)")
    p.add_argument("--out", help="folder for videos.jsonl (one line per video as it is scored), then report.json, "
                                 "confusion.csv/png, predictions.csv; re-running the same command continues an "
                                 "unfinished evaluation there (default: eval_<split> beside the model)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in --out (replaces a finished or "
                                                            "unfinished evaluation there)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=PREDICT_CHOICES,
                   help="autocast precision (auto: the device's fast one)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, help="loader processes decoding beside the model (default 2; 0: none)")
    p.add_argument("--eager", action="store_true", help="run the model as trained (no BatchNorm folding/compile)")


def _run_eval(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from tqdm import tqdm

    from actionbert.evaluate import EVAL_WORKERS, evaluate

    out = args.out or str(Path(args.model).parent / f"eval_{args.split}")
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun: rank 0 shows progress and the report
    bar = tqdm(total=0, unit="clip", desc="evaluating", leave=False, dynamic_ncols=True, delay=1,
               disable=not main_process)  # shown after 1 s: an error before the first batch prints nothing else

    def on_batch(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    def on_start(skipped, total):
        if skipped:
            print(f"continuing the evaluation in {out}: {skipped} of {total} videos already evaluated, skipped "
                  "(--overwrite starts afresh)")

    report = evaluate(args.model, data=args.data, split=args.split, views=args.views,
                      temporal_check=args.temporal_check, out=out, device=args.device, precision=args.precision,
                      batch_size=args.batch_size, workers=EVAL_WORKERS if args.workers is None else args.workers,
                      fast=not args.eager, resume=not args.overwrite, on_batch=on_batch, on_start=on_start,
                      on_failure=lambda vid, reason: tqdm.write(f"warning: skipped {vid}: {reason}"))
    bar.close()
    if report is None:  # another process of a torchrun evaluation: rank 0 reports
        return 0
    for note in report["notes"]:
        print(f"note: {note}")
    v = report["video"]
    print(f"{report['evaluated_videos']}/{report['num_videos']} videos, views {report['views']}")
    if "clip" in report:
        print(f"clip top-1 {report['clip']['top1']:.2f}%   video top-1 {v['top1']:.2f}%   "
              f"top-{v['top5_k']} {v['top5']:.2f}%   mean class accuracy {v['mean_class_accuracy']:.2f}%")
    tc = report.get("temporal_check")
    if tc:
        print(f"temporal check: original {tc['original']['top1']:.2f}%  reversed {tc['reversed']['top1']:.2f}%  "
              f"shuffled {tc['shuffled']['top1']:.2f}%  order dependence {tc['order_dependence']:+.2f} points")
    if "clip" not in report:
        print("no video could be evaluated")
    if report["failures"]:
        print(f"{len(report['failures'])} video(s) failed to decode (listed in report.json)")
    print(f"report: {out}/report.json, page: {out}/report.html")
    return EXIT_SOME_FAILED if report["failures"] else 0


# -------------------------------------------------------------------------------------------- predict
def _args_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="training checkpoint or actionbert model folder")
    p.add_argument("videos", nargs="*", help="video files (or frame folders)")
    p.add_argument("--list", help="text file of more inputs, one path a line (blank lines and # comments skipped)")
    p.add_argument("--out", help="JSON-lines results, one line per video as it completes (input order at the end); "
                                 "re-running the same command continues it; under torchrun every process takes "
                                 "its share")
    p.add_argument("--overwrite", action="store_true", help="start --out afresh instead of continuing it")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0: decode in the main process); "
                                                          "windows of several videos share a model batch")
    p.add_argument("--topk", type=int, default=5, help="labels listed per video (>= 1)")
    p.add_argument("--hop", type=int, help="frames between sliding windows (>= 1; default: one clip span)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print the timeline as CSV (a failed video: one row with "
                                                        "its error)")
    p.add_argument("--plot", help="folder for one timeline PNG per video (names from the video paths, distinct)")
    p.add_argument("--report", help="folder for an HTML report: index.html and one self-contained page per video")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=PREDICT_CHOICES,
                   help="autocast precision (auto: the device's fast one)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--eager", action="store_true", help="run the model as trained (no BatchNorm folding/compile)")


def _run_predict(args: argparse.Namespace) -> int:
    """Exit status: 0 every video predicted (caveats are warnings), 1 some video failed, 2 usage error."""
    from actionbert.checkpoint import CheckpointError, load_model
    from actionbert.predict import Predictor
    from actionbert.runtime import init_distributed, resolve_precision, select_device

    videos = _predict_inputs(args)
    if isinstance(videos, int):
        return videos
    dist_info = init_distributed("cuda" if args.device in ("auto", "cuda") and _has_cuda() else "cpu")
    if dist_info.enabled and not args.out:
        print("error: under torchrun predict needs --out (every process writes its share there)", file=sys.stderr)
        return 2
    if dist_info.enabled and args.report:
        print("error: --report is written by one process: run predict without torchrun for a report, or make "
              "one from a single process over the results", file=sys.stderr)
        return 2
    try:
        device = select_device(args.device, local_rank=dist_info.local_rank)
        precision, note = resolve_precision(device, args.precision)
        if note and dist_info.is_main:
            print(f"note: {note}", file=sys.stderr)
        model, info = load_model(args.model)
        predictor = Predictor(model, info, device=device, precision=precision, hop=args.hop,
                              batch_size=args.batch_size, fast=not args.eager)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    page = None
    if args.report:
        from actionbert.report import PredictReport, ReportError

        try:
            page = PredictReport(args.report, model=args.model, predictor=predictor)
        except ReportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    show = _with_page(_predict_printer(args, videos), page)
    if args.out:
        status = _predict_to_file(args, predictor, videos, dist_info, show)
    else:
        status = _predict_here(args, predictor, videos, show)
    if page is not None:
        print(f"report: {page.finish()}", file=sys.stderr if args.json or args.csv else sys.stdout)
    return status


def _with_page(show, page):
    """show(p, plot) that also adds each video to the HTML report (once: when it is first shown)."""
    if page is None:
        return show

    def both(p, plot=True):
        if plot:
            page.add(p)
        show(p, plot)

    return both


def _predict_here(args: argparse.Namespace, predictor, videos: list[str], show) -> int:
    """Results printed (and plotted) in input order, decoding in this process or in --workers processes."""
    import json

    from actionbert.predict import predict_videos

    if args.workers:
        from actionbert.predict_batch import predict_many

        done: dict = {}
        predict_many(predictor, list(enumerate(videos)), topk=args.topk, workers=args.workers,
                     on_video=lambda i, p: done.__setitem__(i, p))
        results = [done[i] for i in range(len(videos))]
        for r in results:
            show(r)
    else:
        results = predict_videos(predictor, videos, topk=args.topk, on_done=show)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    return _predict_status(sum(r.error is not None for r in results), len(results))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _predict_status(failed: int, total: int) -> int:
    if failed:
        print(f"error: {failed} of {total} video(s) failed (see the errors above)", file=sys.stderr)
    return 1 if failed else 0


def _predict_inputs(args: argparse.Namespace) -> list[str] | int:
    """The inputs: positional videos, then the lines of --list; exit status 2 on a usage error."""
    for name in ("topk", "hop", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.workers < 0:
        print(f"error: --workers must be >= 0, got {args.workers}", file=sys.stderr)
        return 2
    videos = list(args.videos)
    if args.list:
        try:
            with open(args.list) as f:
                videos += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except OSError as e:
            print(f"error: --list {args.list}: {e.strerror}", file=sys.stderr)
            return 2
    if not videos:
        print("error: no input: give video paths and/or --list FILE", file=sys.stderr)
        return 2
    return videos


#: Columns of `predict --csv`: one row per timeline window; a video that failed has one row with its error.
PREDICT_CSV_COLUMNS = ("video", "start", "end", "label", "score", "warning", "error")


def _predict_printer(args: argparse.Namespace, videos: list[str]):
    """show(prediction): text, CSV rows (header written now) or nothing (--json); its timeline PNG (--plot)."""
    import csv

    writer = None
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(PREDICT_CSV_COLUMNS)
    plot_files = iter(_plot_files(args.plot, videos))  # one per video, in order (show is called so)

    def show(p, plot=True):
        file = next(plot_files, None) if plot else None
        if p.segments and file is not None:
            _plot(p, file)
        if args.json:
            return
        if writer is not None:
            for s in p.segments:
                writer.writerow([p.video, s["start"], s["end"], s["label"], s["score"], p.warning or "", ""])
            if p.error:
                writer.writerow([p.video, "", "", "", "", p.warning or "", p.error])
            return
        if p.error:
            print(f"{p.video}: ERROR {p.error}", file=sys.stderr)
        if p.warning:
            print(f"{p.video}: warning: {p.warning}", file=sys.stderr)
        if p.topk:
            print(f"{p.video}: " + ", ".join(f"{lab} {prob:.3f}" for lab, prob in p.topk))
            if len(p.segments) > 1:
                for s in p.segments:
                    print(f"    {s['start']:8.2f}-{s['end']:8.2f}s  {s['label']}  {s['score']:.3f}")

    return show


def _predict_to_file(args, predictor, videos, dist_info, show) -> int:
    """predict --out: resumable JSON lines, sharded under torchrun; a progress bar on rank 0."""
    import json

    from actionbert.predict import Prediction
    from actionbert.predict_batch import predict_to_file, settings_of
    from actionbert.results import ResultsError
    from actionbert.runtime import shutdown_distributed

    settings = settings_of(args.model, predictor, videos, topk=args.topk)
    plots = _plot_files(args.plot, videos)
    progress = _predict_progress(quiet=not dist_info.is_main)

    def on_video(index, p):
        if plots and p.segments:
            _plot(p, plots[index])
        if p.error:
            progress.write(f"{p.video}: ERROR {p.error}")
        progress.video(len(p.segments))

    try:
        summary = predict_to_file(predictor, videos, args.out, settings, topk=args.topk, workers=args.workers,
                                  overwrite=args.overwrite, dist_info=dist_info, on_video=on_video,
                                  on_start=progress.start)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        progress.close()
        shutdown_distributed()
    if not dist_info.is_main:
        return 0
    preds = [Prediction.from_dict(r) for r in summary.records]
    if args.json:
        print(json.dumps([p.to_dict() for p in preds], indent=2))
    elif args.csv:
        for p in preds:
            show(p, plot=False)
    failed = sum(p.error is not None for p in preds)
    print(f"{args.out}: {len(preds)} of {len(videos)} videos ({summary.skipped} were already there, "
          f"{failed} failed)", file=sys.stderr)
    return _predict_status(failed, len(preds))


def _predict_progress(quiet: bool):
    """A one-line tqdm bar: videos done / total, videos/s, clips/s and the ETA of this process's share."""
    import time
    from types import SimpleNamespace

    from tqdm import tqdm

    state = SimpleNamespace(bar=None, clips=0, t0=time.perf_counter())

    def start(skipped, todo):
        if skipped and not quiet:
            tqdm.write(f"{skipped} video(s) already in the results file: skipped", file=sys.stderr)
        if not quiet and todo:
            state.bar = tqdm(total=todo, unit="video", desc="predicting", dynamic_ncols=True)
        state.t0 = time.perf_counter()

    def video(clips):
        state.clips += clips
        if state.bar is not None:
            rate = state.clips / max(time.perf_counter() - state.t0, 1e-9)
            state.bar.set_postfix_str(f"{rate:.1f} clips/s", refresh=False)
            state.bar.update(1)

    def close():
        if state.bar is not None:
            state.bar.close()

    return SimpleNamespace(start=start, video=video, close=close, write=lambda text: tqdm.write(text, file=sys.stderr))


def _plot_files(folder: str | None, videos: list[str]) -> list:
    """The timeline PNG of each video (distinct names, see `plots.timeline_names`); [] without --plot."""
    from pathlib import Path

    from actionbert.plots import timeline_names

    return [Path(folder) / name for name in timeline_names(videos)] if folder else []


def _plot(p, file) -> None:
    from pathlib import Path

    from actionbert.plots import plot_timeline

    replaced = file.exists()
    plot_timeline(p.segments, file, title=Path(p.video).name)
    print(f"{p.video}: timeline {file}{' (replaced the existing file)' if replaced else ''}", file=sys.stderr)


# --------------------------------------------------------------------------------------------- ablate
def _args_ablate(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="base YAML config")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="values to cross, e.g. --grid head=tgap,bert --grid reduction=frmb,frab")
    p.add_argument("--seeds", type=int, default=3, help="seeds per grid point")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", help="folder for the runs and ablation.md/csv (default: <train.out>/ablation)")
    p.add_argument("--views", default="all", help="evaluation views of each best checkpoint (see eval)")
    p.add_argument("--temporal-check", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace runs an earlier ablation left in --out")
    p.add_argument("--quiet", action="store_true")


def _run_ablate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from actionbert.ablate import parse_grid, run_ablation
    from actionbert.config import load_config
    from actionbert.evaluate import evaluate
    from actionbert.runtime import single_process_only
    from actionbert.train import train

    single_process_only("ablate", "run it without torchrun (it trains on one GPU: --set train.device=cuda:N)")
    base = load_config(args.config, args.overrides)
    grid = parse_grid(args.grid)
    out = Path(args.out or Path(base.train.out) / "ablation")
    hooks = _progress_hooks(quiet=args.quiet)

    def eval_fn(run_dir, cfg):
        r = evaluate(run_dir / "best.pt", data=cfg.data.root, split=cfg.data.val_split, views=args.views,
                     temporal_check=args.temporal_check, out=run_dir / "eval")
        res = {"top1": r["video"]["top1"], "predictions": r.get("predictions", [])}  # per video: for comparisons
        if args.temporal_check:
            res["shuffled_top1"] = r["temporal_check"]["shuffled"]["top1"]
        return res

    run_ablation(base, grid, seeds=args.seeds, out=out,
                 train_fn=lambda cfg: train(cfg, overwrite=args.overwrite, hooks=hooks), eval_fn=eval_fn,
                 on_run=lambda name, seed, r: print(f"{name} seed {seed}: {r}"))
    print((out / "ablation.md").read_text().strip())  # the table, then the paired comparisons and verdicts
    print(f"written: {out}/ablation.md, {out}/ablation.csv, {out}/ablation.json, {out}/report.html")
    return 0


# ----------------------------------------------------------------------------------------------- demo
def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--videos-per-class", type=int, default=None)
    p.add_argument("--quiet", action="store_true")


def _run_demo(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from actionbert.demo import DemoConfig, run_demo

    demo = DemoConfig(out=args.out)
    for name in ("seeds", "epochs", "videos_per_class"):
        if getattr(args, name) is not None:
            demo = dataclasses.replace(demo, **{name: getattr(args, name)})
    t0 = time.perf_counter()
    report = run_demo(demo, log=lambda s: print(s, flush=True), train_hooks=_progress_hooks(quiet=True))
    text = report.read_text()
    start = text.find("## Ablation")
    print(text[start:text.find("## What this shows")].strip())
    print(f"\nreport: {report} and {report.with_name('report.html')}  ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


# -------------------------------------------------------------------------------------------- convert
def _args_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="weights file (.pth / .pth.tar / .pt / .safetensors), actionbert model folder, or "
                                "a name from `actionbert models --weights` (downloaded once, verified)")
    p.add_argument("--source", choices=["torchvision", "ig65m", "hara", "reference", "actionbert"],
                   help="format of a PATH file (torchvision/ig65m/hara hold a backbone only); implied by a name")
    p.add_argument("--quiet", action="store_true", help="no download progress bar")
    p.add_argument("--out", required=True, help="actionbert model folder to write (model.safetensors + config.json)")
    p.add_argument("--backbone", help="e.g. r2plus1d_34, resnext101_3d (reference: from its `arch`, else the "
                                      "full-size backbone of its key layout)")
    p.add_argument("--head", choices=["tgap", "bert"], help="reference: from the keys (bert.* -> bert)")
    p.add_argument("--reduction", choices=["frab", "frmb"], help="ResNeXt only; reference: from the keys")
    p.add_argument("--clip-len", type=int, help="frames per clip; reference BERT: from the positional table")
    p.add_argument("--num-classes", type=int, help="reference: from fc_action")
    p.add_argument("--classes", help="text file with one class name per line (sets the class count)")
    p.add_argument("--input-size", type=int, help="crop side in pixels (default 112)")


def _run_convert(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from actionbert.checkpoint import CheckpointError
    from actionbert.convert import convert_weights

    classes = None
    if args.classes:
        classes = [line.strip() for line in Path(args.classes).read_text().splitlines() if line.strip()]
    try:
        folder, report = convert_weights(args.path, args.out, source=args.source, backbone=args.backbone,
                                         head=args.head, reduction=args.reduction, clip_len=args.clip_len,
                                         num_classes=args.num_classes, classes=classes, input_size=args.input_size,
                                         progress=not args.quiet)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(report.summary())
    cfg = json.loads((folder / "config.json").read_text())
    m = cfg["model"]
    print(f"wrote {folder}: {m['backbone']} + {m['head']}"
          f"{' + ' + m['reduction'] if m['reduction'] else ''}, {m['num_classes']} classes, "
          f"clip {cfg['clip_len']} x {cfg['input_size']}px, norm {cfg['preprocessing']['norm']}")
    return 0


# --------------------------------------------------------------------------------------------- export
def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="training checkpoint (best.pt / last.pt) or actionbert model folder")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "torch-export"])
    p.add_argument("--out", required=True, help="file to write (suggested: .onnx, .ts, .pt2)")
    p.add_argument("--batch", type=int, default=2,
                   help="batch of the traced example; the check runs this and batch + 1 (the batch axis is dynamic)")


def _run_export(args: argparse.Namespace) -> int:
    from actionbert.checkpoint import CheckpointError, load_model
    from actionbert.export import TOLERANCE, ExportCheckError, export_metadata, export_model

    try:
        model, info = load_model(args.model)
        result = export_model(model, args.out, format=args.format, clip_len=info.get("clip_len"),
                              input_size=info.get("input_size"), batch=args.batch, metadata=export_metadata(info))
    except (CheckpointError, ExportCheckError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    c, t, h, w = result.clip_shape
    print(f"exported {args.format} to {result.path}: input (B, {c}, {t}, {h}, {w}), dynamic B")
    print(f"max abs difference vs eager PyTorch (B in {result.batches}): {result.max_abs_diff:.3g} "
          f"(tolerance {TOLERANCE:g}): ok")
    return 0


# --------------------------------------------------------------------------------------------- main
COMMANDS = {
    "clips": (_args_clips, _run_clips, "cut long videos into clips by scene change, fixed windows or a cut list"),
    "prepare": (_args_prepare, _run_prepare, "index, check and split a video dataset (optionally cache its frames)"),
    "models": (_args_models, _run_models, "list backbones, heads and reduction blocks with their sizes"),
    "train": (_args_train, _run_train, "train a model from a YAML config (also under torchrun for DDP)"),
    "eval": (_args_eval, _run_eval, "evaluate a checkpoint with the paper's protocol (windows x crops)"),
    "predict": (_args_predict, _run_predict, "top-k labels and a sliding-window timeline for new videos"),
    "ablate": (_args_ablate, _run_ablate, "train a grid of configs over seeds and tabulate top-1"),
    "demo": (_args_demo, _run_demo, "the whole workflow on built-in synthetic data: TGAP vs BERT"),
    "convert": (_args_convert, _run_convert, "write pretrained weights of any supported format as a model folder"),
    "export": (_args_export, _run_export, "export to ONNX / TorchScript / torch.export, checked against PyTorch"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actionbert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


# Commands whose time goes into model calls: their process keeps freed memory for reuse (see
# `runtime.keep_freed_memory`; 11-22% faster R(2+1)D-34 inference on the CPU here).
COMPUTE_COMMANDS = ("train", "eval", "predict", "ablate", "demo")


def main(argv: list[str] | None = None) -> int:
    """Run a command. Exit codes: 0 all good, 1 some inputs failed (the rest was done), 2 an expected error
    (usage, data, disk; one `error:` line, argparse's own usage errors too), 3 a bug (traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ActionbertError as e:
        print("error: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()), file=sys.stderr)
        return e.exit_code
    except Exception:  # a bug: show everything, and say so
        import traceback

        traceback.print_exc()
        print("error: this is a bug in actionbert, not a problem with your input: please report it with the command "
              "and the traceback above", file=sys.stderr)
        return EXIT_BUG


def _dispatch(args: argparse.Namespace) -> int:
    _, run, _ = COMMANDS[args.command]
    if args.command in COMPUTE_COMMANDS:
        import logging

        from actionbert.runtime import keep_freed_memory

        keep_freed_memory()
        # torch.compile's C++ build imports torch.utils.cpp_extension, which warns "No CUDA runtime is found" on
        # every CPU-only machine; actionbert builds no CUDA extension, so that warning is noise here.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from actionbert.runtime import UnsupportedSetup

        try:
            return run(args)
        except UnsupportedSetup as e:  # a device / precision / process layout the command cannot run with
            print(f"error: {e}", file=sys.stderr)
            return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
