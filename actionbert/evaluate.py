"""Evaluation with the paper's protocol: every test window x 10 crops, mean of raw logits per video.

```
prepared split -> test items (video, window) -> views (crops) -> model -> logits (V, K)
  -> clip logits = mean over crops   -> clip-level metrics
  -> video logits = mean over all views of the video -> video-level metrics (top-1/5, mean class accuracy,
     per-class precision/recall, confusion matrix)
```

`views` chooses fewer: "all" (all windows x 10 crops, the paper), or "CxV" with C clips per video (evenly
spread among its test windows, 0 = all) and V crops (1 = centre, 5 = centre and corners, 10 = those five and
their mirror images), e.g. "1x1". A model trained without horizontal flips (`data.hflip: 0`, because left and
right matter to its classes) is never shown mirrored views: "all" then means every window x 5 crops.

`temporal_check=True` evaluates again with each clip's frames reversed and shuffled (a fixed permutation per
run): a model that uses temporal order loses accuracy there, one that averages over time does not.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Subset

from actionbert import runtime
from actionbert.checkpoint import CheckpointError, load_model
from actionbert.config import transform_resize
from actionbert.metrics import classification_report, topk_accuracy

ORDERS = ("original", "reversed", "shuffled")


@dataclass(frozen=True)
class Views:
    clips: int  # per video; 0 = every test window
    crops: int  # 1 or 10

    @staticmethod
    def parse(text: str) -> "Views":
        if text in ("all", "paper"):
            return Views(0, 10)
        c, sep, v = text.lower().partition("x")
        try:
            views = Views(int(c), int(v))
        except ValueError:
            raise ValueError(f"views {text!r}: expected 'all' or CLIPSxCROPS such as 1x1, 3x10, 0x10") from None
        if views.crops not in (1, 5, 10) or views.clips < 0:
            raise ValueError(f"views {text!r}: crops must be 1, 5 or 10 and clips >= 0 (0 = all windows)")
        return views


def select_windows(count: int, clips: int) -> list[int]:
    """Which of a video's `count` test windows to use: all, or `clips` spread evenly (centre-most for 1)."""
    if clips <= 0 or clips >= count:
        return list(range(count))
    if clips == 1:
        return [(count - 1) // 2]
    return sorted({round(i * (count - 1) / (clips - 1)) for i in range(clips)})


EVAL_WORKERS = 2  # loader processes decoding beside the model (as training's data.num_workers); 0: in-process


def evaluate(model_path: str | Path, *, data: str | Path, split: str = "val", views: str = "all",
             temporal_check: bool = False, out: str | Path | None = None, device: str = "auto",
             precision: str = "fp32", batch_size: int = 4, workers: int = EVAL_WORKERS, seed: int = 0,
             fast: bool = True, on_batch: Callable[[int, int], None] = lambda done, total: None,
             on_failure: Callable[[str, str], None] = lambda vid, reason: None) -> dict | None:
    """Evaluate a checkpoint or model folder on a prepared split; returns (and writes) the JSON report.

    Under torchrun each process evaluates every world_size-th video of the split (each chosen view exactly
    once, nothing padded or repeated) on its own device (LOCAL_RANK); rank 0 gathers the results, writes the
    report and returns it, the other processes return None. The report is that of a one-process evaluation
    (identical with batch_size 1; otherwise up to the rounding of other batch compositions).

    Args:
        model_path: training checkpoint (`best.pt`) or `actionbert` model folder.
        data: folder written by `actionbert prepare`.
        split: "val", "train" or "test" (whatever `prepare` wrote).
        views: "all" or "CxV" (see the module docstring).
        temporal_check: also evaluate frame-reversed and frame-shuffled clips.
        out: folder for `report.json`, `confusion.csv`, `confusion.png`, `predictions.csv` (None: write nothing).
        precision: "fp32", "bf16", "fp16" or "auto" (see `runtime.resolve_precision`; its note goes into
            the report's notes).
        batch_size: test items (windows) per forward pass; each carries all its crops.
        workers: DataLoader worker processes decoding videos while the model runs (0: decode in this process).
        fast: evaluate the prepared inference copy (BatchNorm folded, channels-last, compiled where it pays).
    """
    from actionbert.data import collate_clips

    dev = runtime.select_device(device)
    precision, precision_note = runtime.resolve_precision(dev, precision)
    with runtime.distributed(dev.type) as dist_info:
        model, info, samples, classes, v, notes = _setup(model_path, data, split, views, dev, precision, fast)
        notes += [precision_note] if precision_note else []
        dataset, chosen = _test_items(samples, info, v, dist_info, seed)
        loader = DataLoader(Subset(dataset, chosen), batch_size=batch_size, shuffle=False, num_workers=workers,
                            collate_fn=collate_clips, pin_memory=dev.type == "cuda")
        orders = ORDERS if temporal_check else ORDERS[:1]
        shuffle = torch.randperm(info["clip_len"], generator=torch.Generator().manual_seed(seed))
        part = _run_views(model, loader, dev, orders, shuffle, "fp32" if fast else precision,
                          total=len(chosen), on_batch=on_batch, on_failure=on_failure)
        parts = runtime.gather_to_main(part, dist_info)
    if parts is None:
        return None
    report = _report(_merge(parts, samples), samples, classes, v, orders, shuffle, notes)
    report = {"model": str(model_path), "data": str(data), "split": split, **report}
    if out is not None:
        write_report(report, Path(out))
    return report


def _setup(model_path, data, split: str, views: str, dev: torch.device, precision: str, fast: bool):
    """(model ready to run, its inference info, samples, classes, views, notes)."""
    from actionbert.inference import prepare_for_inference
    from actionbert.data import load_split

    model, info = load_model(model_path, map_location="cpu")
    model = prepare_for_inference(model, precision=precision, device=dev) if fast else model.to(dev).eval()
    samples, classes = load_split(data, split)
    if list(classes) != list(info["classes"]):
        raise CheckpointError(f"{model_path}: trained on classes {info['classes']} but {data} has {classes}")
    v = Views.parse(views)
    notes = []
    if v.crops == 10 and info.get("hflip", 0.5) == 0:
        v = Views(v.clips, 5)
        notes.append("trained without horizontal flips: mirrored views left out (5 crops)")
    return model, info, samples, classes, v, notes


def _test_items(samples, info: dict, v: Views, dist_info: runtime.DistInfo, seed: int):
    """(test dataset, indices of the items this process evaluates): the chosen windows of every
    world_size-th video, so a video's views stay together and every view is evaluated exactly once."""
    from actionbert.data import VideoClipDataset, eval_transform, ten_crop_transform

    look = dict(resize=transform_resize(info["resize"], info.get("keep_aspect", False)),
                crop_size=info["input_size"], norm=info["norm"])
    transform = eval_transform(**look) if v.crops == 1 else _first_views(ten_crop_transform(**look), v.crops)
    dataset = VideoClipDataset(samples, clip_len=info["clip_len"], mode="test", frame_stride=info["frame_stride"],
                               transform=transform, seed=seed)
    chosen = [i for i, (s, k, count) in enumerate(dataset.items)
              if s % dist_info.world_size == dist_info.rank and k in select_windows(count, v.clips)]
    return dataset, chosen


@torch.inference_mode()
def _run_views(model, loader, dev: torch.device, orders, shuffle, precision: str, *, total: int, on_batch,
               on_failure) -> dict:
    """Run every view of the loader's items: per-video logit sums and view counts, clip logits (mean over
    crops) per frame order, labels and failures."""
    part: dict = {"sums": {o: {} for o in orders}, "views": {}, "clip_logits": {o: [] for o in orders},
                  "clip_labels": [], "labels": {}, "failures": []}
    done = 0
    for batch in loader:
        for vid, reason in batch["failures"]:
            part["failures"].append({"video_id": vid, "reason": reason})
            on_failure(vid, reason)
        done += len(batch["video_id"]) + len(batch["failures"])
        on_batch(done, total)
        if batch["video"] is None:
            continue
        x = batch["video"]  # (B, V, 3, T, S, S)
        B, V = x.shape[:2]
        flat = x.flatten(0, 1)  # (B*V, 3, T, S, S)
        for order in orders:
            clip = {"original": flat, "reversed": flat.flip(2), "shuffled": flat[:, :, shuffle]}[order]
            with runtime.autocast(dev, precision):  # fp32 for the prepared copy: it autocasts itself
                logits = model(clip.to(dev)).float().cpu().view(B, V, -1)  # (B, V, K)
            part["clip_logits"][order].append(logits.mean(dim=1))  # (B, K): mean over crops
            sums = part["sums"][order]
            for i, vid in enumerate(batch["video_id"]):
                sums[vid] = sums.get(vid, 0) + logits[i].sum(dim=0)
        for i, vid in enumerate(batch["video_id"]):
            part["views"][vid] = part["views"].get(vid, 0) + V
            part["labels"][vid] = int(batch["label"][i])
            part["clip_labels"].append(int(batch["label"][i]))
    return part


def _merge(parts: list[dict], samples) -> dict:
    """One process's results from the parts of all (each video lives in one part); failures in split order."""
    merged = parts[0]
    for part in parts[1:]:
        for order, sums in part["sums"].items():
            merged["sums"][order].update(sums)
            merged["clip_logits"][order] += part["clip_logits"][order]
        for key in ("views", "labels"):
            merged[key].update(part[key])
        merged["clip_labels"] += part["clip_labels"]
        merged["failures"] += part["failures"]
    position = {s.video_id: i for i, s in enumerate(samples)}
    merged["failures"].sort(key=lambda f: position.get(f["video_id"], len(position)))
    return merged


def _report(r: dict, samples, classes, v: Views, orders, shuffle, notes: list[str]) -> dict:
    failed_ids = {f["video_id"] for f in r["failures"]}
    ids = [s.video_id for s in samples if s.video_id in r["labels"] and s.video_id not in failed_ids]
    y = torch.tensor([r["labels"][i] for i in ids], dtype=torch.long)
    report: dict = {
        "classes": list(classes),
        "views": {"clips_per_video": v.clips or "all", "crops": v.crops,
                  "mean_views_per_video": (sum(r["views"][i] for i in ids) / len(ids)) if ids else 0},
        "num_videos": len(samples), "evaluated_videos": len(ids),
        "failures": r["failures"],
        "notes": notes,
    }
    if not ids:
        report["video"] = {"top1": math.nan, "mean_class_accuracy": math.nan}
        report["note"] = "no video could be evaluated"
        return report
    per_video = {o: torch.stack([r["sums"][o][i] / r["views"][i] for i in ids]) for o in orders}
    report["video"] = classification_report(per_video["original"], y, classes)
    cl = torch.tensor(r["clip_labels"], dtype=torch.long)
    report["clip"] = {"num_clips": int(cl.numel()),
                      "top1": topk_accuracy(torch.cat(r["clip_logits"]["original"]), cl, 1)}
    if len(orders) > 1:
        tc = {o: {"top1": topk_accuracy(per_video[o], y, 1),
                  "clip_top1": topk_accuracy(torch.cat(r["clip_logits"][o]), cl, 1)} for o in orders}
        tc["order_dependence"] = tc["original"]["top1"] - tc["shuffled"]["top1"]
        tc["shuffle_permutation"] = shuffle.tolist()
        report["temporal_check"] = tc
    report["predictions"] = [
        {"video_id": i, "label": classes[r["labels"][i]], "predicted": classes[int(per_video["original"][j].argmax())]}
        for j, i in enumerate(ids)]
    return report


def _first_views(ten_crop, n: int):
    """The first `n` views of the ten-crop set (its order: centre, 4 corners, then the same mirrored);
    a partial of a module-level function, so DataLoader workers can pickle it."""
    return functools.partial(_take_views, transform=ten_crop, n=n)


def _take_views(frames, rng=None, *, transform, n: int) -> torch.Tensor:
    return transform(frames, rng)[:n]  # (n, 3, T, S, S)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if "confusion_matrix" not in report.get("video", {}):
        return
    classes, cm = report["classes"], report["video"]["confusion_matrix"]
    with open(out / "confusion.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, cm):
            w.writerow([name, *row])
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["video_id", "label", "predicted"])
        w.writeheader()
        w.writerows(report["predictions"])
    from actionbert.plots import plot_confusion

    plot_confusion(torch.tensor(cm).numpy(), classes, out / "confusion.png",
                   title=f"{Path(report['model']).name}: video top-1 {report['video']['top1']:.1f}%")
