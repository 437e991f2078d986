"""`actionbert train`, `ablate` and `demo`, and the progress shown while a model trains."""

from __future__ import annotations

import argparse
import sys

from actionbert.errors import EXIT_ERROR
from actionbert.precisions import TRAIN_PRECISIONS


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
    p.add_argument("--seed", type=int, default=None, help="base seed of the data, the split and the first run (0)")
    p.add_argument("--quiet", action="store_true")


def _run_demo(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from actionbert.demo import DemoConfig, run_demo

    demo = DemoConfig(out=args.out)
    for name in ("seeds", "epochs", "videos_per_class", "seed"):
        if getattr(args, name) is not None:
            demo = dataclasses.replace(demo, **{name: getattr(args, name)})
    t0 = time.perf_counter()
    report = run_demo(demo, log=lambda s: print(s, flush=True), train_hooks=_progress_hooks(quiet=True))
    text = report.read_text()
    start = text.find("## Result")
    print(text[start:text.find("## What this shows")].strip())
    print(f"\nreport: {report} and {report.with_name('report.html')}  ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0
