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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Subset

from actionbert import runtime
from actionbert.checkpoint import CheckpointError, load_model, preprocessing_of
from actionbert.errors import UsageError
from actionbert.fileio import atomic_write_text, to_json
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
            raise UsageError(f"views {text!r}: expected 'all' or CLIPSxCROPS such as 1x1, 3x10, 0x10") from None
        if views.crops not in (1, 5, 10) or views.clips < 0:
            raise UsageError(f"views {text!r}: crops must be 1, 5 or 10 and clips >= 0 (0 = all windows)")
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
             fast: bool = True,
             on_batch: Callable[[int, int], None] = lambda done, total: None,
             on_failure: Callable[[str, str], None] = lambda vid, reason: None) -> dict:
    """Evaluate a checkpoint or model folder on a prepared split; returns (and writes) the JSON report.

    Args:
        model_path: training checkpoint (`best.pt`) or `actionbert` model folder.
        data: folder written by `actionbert prepare`.
        split: "val", "train" or "test" (whatever `prepare` wrote).
        views: "all" or "CxV" (see the module docstring).
        temporal_check: also evaluate frame-reversed and frame-shuffled clips.
        out: folder for `report.json`, `confusion.csv`, `confusion.png`, `predictions.csv` and the page
            `report.html` (None: write nothing).
        batch_size: test items (windows) per forward pass; each carries all its crops.
        fast: evaluate the prepared inference copy (BatchNorm folded, channels-last, compiled where it pays).
    """
    v = Views.parse(views)
    dev = runtime.select_device(device)
    precision, precision_note = runtime.resolve_precision(dev, precision)
    with runtime.distributed(dev.type) as dist_info:
        scores, samples, classes, v, notes = _score(model_path, data, split, v, dev, precision, fast, dist_info,
                                                     seed=seed, batch_size=batch_size, workers=workers,
                                                     temporal_check=temporal_check, on_batch=on_batch,
                                                     on_failure=on_failure)
        parts = runtime.gather_to_main(scores.state(), dist_info)
    if parts is None:
        return None  # another process writes the report
    scores.merge(parts[1:], samples)
    notes += [precision_note] if precision_note else []
    report = _report(scores, samples, classes, v, notes, temporal_check=temporal_check)
    report = {"model": str(model_path), "data": str(data), "split": split, **report}
    if out is not None:
        write_report(report, Path(out))
    return report


def _score(model_path, data, split, v: "Views", dev, precision, fast, dist_info, *, seed, batch_size, workers,
           temporal_check, on_batch, on_failure):
    """This process's share of the test windows (every world_size-th video), scored: (_Scores, samples,
    classes, views, notes)."""
    from actionbert.data import load_split
    from actionbert.inference import prepare_for_inference

    model, info = load_model(model_path, map_location="cpu")
    samples, classes = load_split(data, split)
    model = prepare_for_inference(model, precision=precision, device=dev) if fast else model.to(dev).eval()
    if list(classes) != list(info["classes"]):
        raise CheckpointError(f"{model_path}: trained on classes {info['classes']} but {data} has {classes}")
    pre = preprocessing_of(info, where=str(model_path))
    notes = []
    if v.crops > pre.test_crops:
        v = Views(v.clips, pre.test_crops)
        notes.append("trained without horizontal flips: mirrored views left out (5 crops)")
    loader = _test_loader(samples, pre, v, seed=seed, batch_size=batch_size, workers=workers, device=dev,
                          share=(dist_info.rank, dist_info.world_size))
    orders = ORDERS if temporal_check else ORDERS[:1]
    scores = _Scores(orders, torch.randperm(pre.clip_len, generator=torch.Generator().manual_seed(seed)))
    with torch.inference_mode():
        for batch in loader:
            scores.add(batch, model, shuffle=scores.shuffle, device=dev, precision="fp32" if fast else precision,
                       on_failure=on_failure)  # the prepared (fast) copy autocasts itself
            on_batch(scores.done, len(loader.dataset))
    return scores, samples, classes, v, notes


def _report(scores: "_Scores", samples, classes, v: "Views", notes: list[str], *, temporal_check: bool) -> dict:
    failed_ids = {f["video_id"] for f in scores.failures}
    ids = [s.video_id for s in samples if s.video_id in scores.labels and s.video_id not in failed_ids]
    report: dict = {
        "classes": list(classes),
        "views": {"clips_per_video": v.clips or "all", "crops": v.crops,
                  "mean_views_per_video": (sum(scores.views[i] for i in ids) / len(ids)) if ids else 0},
        "num_videos": len(samples), "evaluated_videos": len(ids),
        "failures": _per_video(scores.failures),
        "notes": notes,
    }
    if not ids:
        report["video"] = {"top1": None, "mean_class_accuracy": None}  # undefined: null, never NaN
        report["note"] = "no video could be evaluated"
    else:
        report.update(scores.metrics(ids, classes, temporal_check=temporal_check, shuffle=scores.shuffle))
    return report


def _test_loader(samples, pre, v: Views, *, seed: int, batch_size: int, workers: int,
                 device: torch.device, share: tuple[int, int] = (0, 1)) -> DataLoader:
    """The chosen test windows of `samples`, each item carrying its `v.crops` views of the record `pre`; with
    `share` = (rank, world size) only every world-size-th video's, so a video's views stay in one process and
    every view is evaluated exactly once (no padding)."""
    from actionbert.data import VideoClipDataset, collate_clips
    from actionbert.data.transforms import transforms_for

    looks = transforms_for(pre)
    transform = looks["val"] if v.crops == 1 else _first_views(looks["test"], v.crops)
    dataset = VideoClipDataset(samples, preprocessing=pre, mode="test", transform=transform, seed=seed)
    rank, world = share
    chosen = [i for i, (s, k, count) in enumerate(dataset.items)
              if s % world == rank and k in select_windows(count, v.clips)]
    return DataLoader(Subset(dataset, chosen), batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_clips, pin_memory=device.type == "cuda")


class _Scores:
    """Logits summed per video and kept per clip, for each frame order, as batches come in."""

    def __init__(self, orders: tuple[str, ...], shuffle: torch.Tensor):
        self.orders, self.shuffle = orders, shuffle
        self.video_sum: dict[str, dict[str, torch.Tensor]] = {o: {} for o in orders}
        self.views: dict[str, int] = {}
        self.clip_logits: dict[str, list[torch.Tensor]] = {o: [] for o in orders}
        self.clip_labels: list[int] = []
        self.labels: dict[str, int] = {}
        self.failures: list[dict] = []
        self.done = 0

    FIELDS = ("video_sum", "views", "clip_logits", "clip_labels", "labels", "failures")

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self.FIELDS}

    def merge(self, others: list[dict], samples) -> None:
        """Add other processes' `state()`s (each video lives in one process); failures in split order."""
        for other in others:
            for order in self.orders:
                self.video_sum[order].update(other["video_sum"][order])
                self.clip_logits[order] += other["clip_logits"][order]
            self.views.update(other["views"])
            self.labels.update(other["labels"])
            self.clip_labels += other["clip_labels"]
            self.failures += other["failures"]
        position = {s.video_id: i for i, s in enumerate(samples)}
        self.failures.sort(key=lambda f: position.get(f["video_id"], len(position)))

    def add(self, batch: dict, model, *, shuffle: torch.Tensor, device: torch.device, precision: str,
            on_failure: Callable[[str, str], None]) -> None:
        for vid, reason in batch["failures"]:
            self.failures.append({"video_id": vid, "reason": reason})
            on_failure(vid, reason)
        self.done += len(batch["video_id"]) + len(batch["failures"])
        if batch["video"] is None:
            return
        x = batch["video"]  # (B, V, 3, T, S, S)
        B, V = x.shape[:2]
        flat = x.flatten(0, 1)  # (B*V, 3, T, S, S)
        for order in self.orders:
            clip = {"original": flat, "reversed": flat.flip(2), "shuffled": flat[:, :, shuffle]}[order]
            with runtime.autocast(device, precision):
                logits = model(clip.to(device)).float().cpu().view(B, V, -1)  # (B, V, K)
            self.clip_logits[order].append(logits.mean(dim=1))  # (B, K): mean over crops
            for i, vid in enumerate(batch["video_id"]):
                acc = self.video_sum[order]
                acc[vid] = acc.get(vid, 0) + logits[i].sum(dim=0)
        for i, vid in enumerate(batch["video_id"]):
            self.views[vid] = self.views.get(vid, 0) + V
            self.labels[vid] = int(batch["label"][i])
            self.clip_labels.append(int(batch["label"][i]))

    def metrics(self, ids: list[str], classes: list[str], *, temporal_check: bool, shuffle: torch.Tensor) -> dict:
        """Video-level (mean of all views' logits) and clip-level metrics of the videos `ids`."""
        y = torch.tensor([self.labels[i] for i in ids], dtype=torch.long)
        per_video = {o: torch.stack([self.video_sum[o][i] / self.views[i] for i in ids]) for o in self.orders}
        cl = torch.tensor(self.clip_labels, dtype=torch.long)
        report = {"video": classification_report(per_video["original"], y, classes),
                  "clip": {"num_clips": int(cl.numel()),
                           "top1": topk_accuracy(torch.cat(self.clip_logits["original"]), cl, 1)}}
        if temporal_check:
            tc = {o: {"top1": topk_accuracy(per_video[o], y, 1),
                      "clip_top1": topk_accuracy(torch.cat(self.clip_logits[o]), cl, 1),
                      "per_class": classification_report(per_video[o], y, classes)["per_class"]} for o in self.orders}
            tc["order_dependence"] = tc["original"]["top1"] - tc["shuffled"]["top1"]
            tc["shuffle_permutation"] = shuffle.tolist()
            report["temporal_check"] = tc
        report["predictions"] = video_rows(ids, per_video["original"], [classes[self.labels[i]] for i in ids],
                                           classes)
        return report


def _per_video(failures: list[dict]) -> list[dict]:
    """One entry per failed video (a video fails in each of its test windows): its first reason and the
    number of its windows that failed."""
    out: dict[str, dict] = {}
    for f in failures:
        entry = out.setdefault(f["video_id"], {"video_id": f["video_id"], "reason": f["reason"], "windows": 0})
        entry["windows"] += 1
    return list(out.values())


def video_rows(ids: list[str], logits: torch.Tensor, labels: list[str], classes: list[str]) -> list[dict]:
    """One row per video: its label, the predicted class and the scores of every class: `probabilities`, the
    softmax of the video's mean raw logits over all its views (windows x crops, the paper's protocol: the
    predicted class is their argmax), and those mean `logits`."""
    probs = logits.softmax(dim=1)  # (N, K)
    return [{"video_id": vid, "label": label, "predicted": classes[int(logits[j].argmax())],
             "label_probability": round(float(probs[j, classes.index(label)]), 4),
             "predicted_probability": round(float(probs[j].max()), 4),
             "probabilities": [float(p) for p in probs[j]], "logits": [float(v) for v in logits[j]]}
            for j, (vid, label) in enumerate(zip(ids, labels))]


def _first_views(ten_crop, n: int):
    """The first `n` views of the ten-crop set (its order: centre, 4 corners, then the same mirrored);
    a partial of a module-level function, so DataLoader workers can pickle it."""
    return functools.partial(_take_views, transform=ten_crop, n=n)


def _take_views(frames, rng=None, *, transform, n: int) -> torch.Tensor:
    return transform(frames, rng)[:n]  # (n, 3, T, S, S)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", to_json(report))
    if "confusion_matrix" not in report.get("video", {}):
        return
    classes, cm = report["classes"], report["video"]["confusion_matrix"]
    with open(out / "confusion.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, cm):
            w.writerow([name, *row])
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)  # then one column per class: its probability for the video ("p_<class>")
        w.writerow(["video_id", "label", "predicted", "label_probability", "predicted_probability",
                    *(f"p_{c}" for c in classes)])
        w.writerows([r["video_id"], r["label"], r["predicted"], r["label_probability"], r["predicted_probability"],
                     *(f"{p:.9g}" for p in r["probabilities"])] for r in report["predictions"])
    from actionbert.plots import plot_confusion

    plot_confusion(torch.tensor(cm).numpy(), classes, out / "confusion.png",
                   title=f"{Path(report['model']).name}: video top-1 {report['video']['top1']:.1f}%")
    from actionbert.report import write_eval_page

    write_eval_page(report, out / "report.html")
