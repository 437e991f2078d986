"""The `actionbert` command line.

This package is the only place that parses arguments or prints progress; every command calls an importable
function of the library. Each sub-command is a pair of functions, `_args_<name>(parser)` and `_run_<name>(args)`,
in the module of its command group (`models`, `train`, `data`, `evaluate`, `predict`), listed in the `COMMANDS`
dict literal below.
"""

from __future__ import annotations

import argparse
import sys

from actionbert.cli.data import _args_clips, _args_prepare, _run_clips, _run_prepare
from actionbert.cli.evaluate import _args_eval, _run_eval
from actionbert.cli.models import _args_convert, _args_export, _args_models, _run_convert, _run_export, _run_models
from actionbert.cli.predict import PREDICT_CSV_COLUMNS, _args_predict, _run_predict
from actionbert.cli.train import _args_ablate, _args_demo, _args_train, _run_ablate, _run_demo, _run_train
from actionbert.errors import EXIT_BUG, ActionbertError

__all__ = ["COMMANDS", "COMPUTE_COMMANDS", "PREDICT_CSV_COLUMNS", "build_parser", "main"]

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
