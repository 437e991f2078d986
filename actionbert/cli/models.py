"""`actionbert models`, `convert` and `export`: the known models and weights, model folders, deployable files."""

from __future__ import annotations

import argparse
import sys

from actionbert.errors import EXIT_ERROR


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
