"""`actionbert eval`: a checkpoint scored with the paper's protocol."""

from __future__ import annotations

import argparse

from actionbert.errors import EXIT_SOME_FAILED
from actionbert.precisions import PREDICT_CHOICES


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
    p.add_argument("--workers", type=int, help="loader processes decoding beside the model (default 2; 0: none); "
                   "a CPU model then uses the cores they leave")
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
