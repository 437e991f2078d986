"""The `actionbert` command line.

This is the only module that parses arguments or prints progress; every command calls an importable function
of the library. Each sub-command is a pair of functions, `_args_<name>(parser)` and `_run_<name>(args)`,
listed in the `COMMANDS` dict literal at the bottom.
"""

from __future__ import annotations

import argparse
import sys


# --------------------------------------------------------------------------------------------- models
def _args_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-classes", type=int, default=51, help="class count used for the parameter counts")


def _run_models(args: argparse.Namespace) -> int:
    from actionbert.models import list_models

    rows = list_models(num_classes=args.num_classes)
    print(_table(rows))
    return 0


def _table(rows: list[dict]) -> str:
    """Format a list of same-keyed dicts as an aligned plain-text table."""
    if not rows:
        return "(nothing)"
    keys = list(rows[0])
    cells = [[_fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(keys), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def _fmt(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else str(v)


def _numeric(s: str) -> bool:
    return s.replace(",", "").replace(".", "").replace("-", "").isdigit()


# ---------------------------------------------------------------------------------------------- train
def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (model/data/train sections); defaults if omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set model.head=tgap --set train.epochs=10")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out from its last.pt")
    p.add_argument("--out", help="run folder (train.out)")
    p.add_argument("--data", help="prepared dataset folder (data.root)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="train.precision")
    p.add_argument("--device", help="train.device: auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--epochs", type=int, help="train.epochs")
    p.add_argument("--pretrained", help="weights to start from (train.pretrained)")
    p.add_argument("--pretrained-source", help="torchvision | ig65m | hara | reference | actionbert")
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

    from actionbert.config import load_config
    from actionbert.train import train

    overrides = args.overrides + _cli_overrides(args, {
        "out": "train.out", "data": "data.root", "precision": "train.precision", "device": "train.device",
        "epochs": "train.epochs", "pretrained": "train.pretrained", "pretrained_source": "train.pretrained_source",
        "sync_bn": "train.sync_bn"})
    cfg = load_config(args.config, overrides)
    main_process = os.environ.get("RANK", "0") == "0"
    hooks = _progress_hooks(quiet=args.quiet or not main_process)
    result = train(cfg, resume=args.resume, hooks=hooks)
    if main_process:
        print(f"best val top-1 {result.best_top1:.2f}% at epoch {result.best_epoch}; "
              f"{result.failures} clip(s) failed to decode; run folder {result.run_dir}")
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
            print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} top-1 {row['train_top1']:5.1f}  "
                  f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:5.1f}  lr {row['lr']:.2e}  "
                  f"{row['clips_per_s']:.1f} clips/s  failures {row['failures']}", flush=True)

    def failure(video_id, reason):
        msg = f"warning: skipped {video_id}: {reason}"
        (tqdm.write(msg) if state.get("bar") is not None else print(msg, file=sys.stderr))

    return TrainHooks(on_epoch_start=start, on_step=step, on_epoch_end=end, on_failure=failure)


# --------------------------------------------------------------------------------------------- main
COMMANDS = {
    "models": (_args_models, _run_models, "list backbones, heads and reduction blocks with their sizes"),
    "train": (_args_train, _run_train, "train a model from a YAML config (also under torchrun for DDP)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actionbert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, run, _ = COMMANDS[args.command]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
