"""`actionbert predict`: labels and timelines for new videos, printed, plotted or written to a results file."""

from __future__ import annotations

import argparse
import sys

from actionbert.precisions import PREDICT_CHOICES


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
                   "windows of several videos share a model batch; a CPU model then uses the cores they leave")
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
