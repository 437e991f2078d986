"""Evaluation with the paper's protocol: every test window x 10 crops, mean of raw logits per video.

```
prepared split -> test items (video, window) -> DataLoader workers decode them (`workers`)
  -> batches of `batch_size` items, windows of several videos -> views (crops) -> model -> logits (V, K)
  -> per video, once all its windows are scored (`eval_records`): a record, appended to `out/videos.jsonl`
  -> clip logits = mean over crops   -> clip-level metrics
  -> video logits = mean over all views of the video -> video-level metrics (top-1/5, mean class accuracy,
     per-class precision/recall, confusion matrix)
```

Under torchrun every process takes every world-size-th video (each view scored exactly once, nothing padded);
with `out`, each appends its records to its own part file and rank 0 merges them. An evaluation killed mid-way
continues with `resume=True` (`eval --out` again): the videos in the file are skipped, and the report, computed from
every record, is that of an evaluation that ran through (`eval_output`).

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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Subset

from actionbert import runtime
from actionbert.checkpoint import CheckpointError, load_model, preprocessing_of
from actionbert.errors import DataError, UsageError
from actionbert.eval_output import EvalOutput, settings_of
from actionbert.eval_records import ORDERS, VideoScores, report_numbers
from actionbert.fileio import atomic_write_text, to_json


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
             fast: bool = True, resume: bool = False,
             on_batch: Callable[[int, int], None] = lambda done, total: None,
             on_failure: Callable[[str, str], None] = lambda vid, reason: None,
             on_start: Callable[[int, int], None] = lambda skipped, total: None) -> dict | None:
    """Evaluate a checkpoint or model folder on a prepared split; returns (and writes) the JSON report.

    Args:
        model_path: training checkpoint (`best.pt`) or `actionbert` model folder.
        data: folder written by `actionbert prepare`.
        split: "val", "train" or "test" (whatever `prepare` wrote).
        views: "all" or "CxV" (see the module docstring).
        temporal_check: also evaluate frame-reversed and frame-shuffled clips.
        out: folder for `videos.jsonl` (one line per video as it completes), then `report.json`,
            `confusion.csv`, `confusion.png`, `predictions.csv` and the page `report.html` (None: write nothing).
        batch_size: test items (windows, of one or several videos) per forward pass; each carries all its crops.
        fast: evaluate the prepared inference copy (BatchNorm folded, channels-last, compiled where it pays).
        resume: continue the unfinished evaluation in `out` (same settings; its videos are skipped) and refuse a
            finished one; False starts afresh (`eval_output`).
        on_batch: (windows done, windows to do in this run) after each batch.
        on_start: (videos found done in `out`, videos in the split), once, on the main process.

    Returns:
        The report; None on the other processes of a torchrun evaluation (rank 0 reports).
    """
    v = Views.parse(views)
    dev = runtime.select_device(device)
    precision, precision_note = runtime.resolve_precision(dev, precision)
    with runtime.distributed(dev.type) as dist_info:
        setup = _load(model_path, data, split, v, dev, precision, fast)
        output = None if out is None else EvalOutput.open(out, lambda: settings_of(
            model_path, split=split, samples=setup.samples, classes=setup.classes,
            views={"clips": setup.views.clips, "crops": setup.views.crops}, temporal_check=temporal_check,
            precision=precision, fast=fast, seed=seed), resume=resume, info=dist_info)
        done = output.done if output is not None else set()
        if dist_info.is_main:
            on_start(sum((i, s.video_id) in done for i, s in enumerate(setup.samples)), len(setup.samples))
        try:
            records = _score(setup, dev, "fp32" if fast else precision, fast, dist_info, done=done, seed=seed,
                             batch_size=batch_size, workers=workers, temporal_check=temporal_check,
                             on_batch=on_batch, on_failure=on_failure,
                             on_record=output.write if output is not None else lambda r: None)
        finally:
            if output is not None:
                output.close()  # every finished line is on disk, whatever stopped the run
        records = output.finish() if output is not None else _gather(records, dist_info)
    if records is None:
        return None  # another process writes the report
    notes = setup.notes + ([precision_note] if precision_note else [])
    report = _report(records, setup, notes, temporal_check=temporal_check, seed=seed)
    report = {"model": str(model_path), "data": str(data), "split": split, **report}
    if out is not None:
        write_report(report, Path(out))
    return report


@dataclass
class _Setup:
    """The model to evaluate and what it is evaluated on."""

    model: object
    samples: list
    classes: list[str]
    pre: object  # the model's preprocessing record
    views: Views  # the views asked for, less the mirrored ones for a model trained without flips
    notes: list[str]


def _load(model_path, data, split, v: Views, dev, precision, fast) -> _Setup:
    from actionbert.data import load_split
    from actionbert.inference import prepare_for_inference

    model, info = load_model(model_path, map_location="cpu")
    samples, classes = load_split(data, split)
    if list(classes) != list(info["classes"]):
        raise CheckpointError(f"{model_path}: trained on classes {info['classes']} but {data} has {classes}")
    unlabelled = sum(s.label < 0 for s in samples)
    if unlabelled:
        raise DataError(f"{data}: {unlabelled} video(s) of the {split} split have no label; eval needs labelled "
                        "videos (use `actionbert predict` for unlabelled ones)")
    model = prepare_for_inference(model, precision=precision, device=dev) if fast else model.to(dev).eval()
    pre = preprocessing_of(info, where=str(model_path))
    notes = []
    if v.crops > pre.test_crops:
        v = Views(v.clips, pre.test_crops)
        notes.append("trained without horizontal flips: mirrored views left out (5 crops)")
    return _Setup(model, samples, list(classes), pre, v, notes)


def _score(setup: _Setup, dev, precision, fast, dist_info, *, done: set, seed, batch_size, workers, temporal_check,
           on_batch, on_failure, on_record) -> list[dict]:
    """This process's share of the test windows (every world_size-th video, less those `done`), scored: one
    record per video, handed to `on_record` as soon as the video is complete."""
    skip = {i for i, s in enumerate(setup.samples) if (i, s.video_id) in done}
    loader, expected = _test_loader(setup.samples, setup.pre, setup.views, seed=seed, batch_size=batch_size,
                                    workers=workers, device=dev, share=(dist_info.rank, dist_info.world_size),
                                    skip=skip)
    orders = ORDERS if temporal_check else ORDERS[:1]
    shuffle = _shuffle(setup.pre.clip_len, seed)
    scores = VideoScores(setup.samples, setup.classes, orders, expected)
    forward = _Forward(setup.model, batch_size, orders, shuffle, dev, precision, warm_up=fast)
    records, windows = [], 0
    threads = runtime.threads_beside_workers(dev, workers)
    with torch.inference_mode(), runtime.intra_op_threads(threads):
        for batch in loader:
            for vid, reason in batch["failures"]:
                on_failure(vid, reason)
            logits = forward(batch["video"]) if batch["video"] is not None else {}
            for record in scores.add(batch, logits):
                on_record(record)
                records.append(record)
            windows += len(batch["video_id"]) + len(batch["failures"])
            on_batch(windows, len(loader.dataset))
    return records


def _shuffle(clip_len: int, seed: int) -> torch.Tensor:
    """The temporal check's fixed frame permutation of a run."""
    return torch.randperm(clip_len, generator=torch.Generator().manual_seed(seed))


class _Forward:
    """Logits (B, V, K) per frame order of a batch of test items (B, V, 3, T, S, S). Every model call has the
    same shape, batch_size x V clips (zero clips fill a short batch), and the prepared model's compile decision
    for that shape is taken on zeros before the first real batch: a window's logits do not depend on the batch
    it came in, so a resumed or sharded evaluation scores every window as one that ran through."""

    def __init__(self, model, batch_size: int, orders, shuffle: torch.Tensor, device, precision: str, *,
                 warm_up: bool) -> None:
        self.model, self.batch_size, self.orders, self.shuffle = model, batch_size, orders, shuffle
        self.device, self.precision, self.warm = device, precision, not warm_up

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        B, V = x.shape[:2]
        flat = x.flatten(0, 1)  # (B*V, 3, T, S, S)
        if B < self.batch_size:
            flat = torch.cat([flat, flat.new_zeros((self.batch_size - B) * V, *flat.shape[1:])])
        if not self.warm:
            for _ in range(2):
                self._run(torch.zeros_like(flat))
            self.warm = True
        clips = {"original": lambda: flat, "reversed": lambda: flat.flip(2),
                 "shuffled": lambda: flat[:, :, self.shuffle]}
        return {o: self._run(clips[o]())[:B * V].view(B, V, -1) for o in self.orders}

    def _run(self, clips: torch.Tensor) -> torch.Tensor:
        with runtime.autocast(self.device, self.precision):  # the prepared (fast) copy autocasts itself: fp32 here
            return self.model(clips.to(self.device)).float().cpu()


def _gather(records: list[dict], dist_info) -> list[dict] | None:
    """Every process's records on rank 0, in split order (None elsewhere)."""
    parts = runtime.gather_to_main(records, dist_info)
    return None if parts is None else sorted((r for part in parts for r in part), key=lambda r: r["index"])


def _report(records: list[dict], setup: _Setup, notes: list[str], *, temporal_check: bool, seed: int) -> dict:
    numbers = report_numbers(records, setup.classes, temporal_check=temporal_check,
                             shuffle=_shuffle(setup.pre.clip_len, seed).tolist())
    v = setup.views
    report: dict = {
        "classes": list(setup.classes),
        "views": {"clips_per_video": v.clips or "all", "crops": v.crops,
                  "mean_views_per_video": numbers.pop("mean_views_per_video")},
        "num_videos": len(setup.samples), "evaluated_videos": numbers.pop("evaluated_videos"),
        "failures": numbers.pop("failures"),
        "notes": notes,
    }
    report.update(numbers)
    return report


def _test_loader(samples, pre, v: Views, *, seed: int, batch_size: int, workers: int,
                 device: torch.device, share: tuple[int, int] = (0, 1),
                 skip: set[int] = frozenset()) -> tuple[DataLoader, dict[int, int]]:
    """The chosen test windows of `samples`, each item carrying its `v.crops` views of the record `pre`; with
    `share` = (rank, world size) only every world-size-th video's, so a video's views stay in one process and
    every view is evaluated exactly once (no padding); the videos `skip` (sample indices) left out. Also
    returns, per sample index, the number of its windows in the loader."""
    from actionbert.data import VideoClipDataset, collate_clips
    from actionbert.data.transforms import transforms_for

    looks = transforms_for(pre)
    transform = looks["val"] if v.crops == 1 else _first_views(looks["test"], v.crops)
    dataset = VideoClipDataset(samples, preprocessing=pre, mode="test", transform=transform, seed=seed)
    rank, world = share
    chosen = [i for i, (s, k, count) in enumerate(dataset.items)
              if s % world == rank and s not in skip and k in select_windows(count, v.clips)]
    expected = Counter(dataset.items[i][0] for i in chosen)
    loader = DataLoader(Subset(dataset, chosen), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_clips, pin_memory=device.type == "cuda")
    return loader, dict(expected)


def _first_views(ten_crop, n: int):
    """The first `n` views of the ten-crop set (its order: centre, 4 corners, then the same mirrored);
    a partial of a module-level function, so DataLoader workers can pickle it."""
    return functools.partial(_take_views, transform=ten_crop, n=n)


def _take_views(frames, rng=None, *, transform, n: int) -> torch.Tensor:
    return transform(frames, rng)[:n]  # (n, 3, T, S, S)


def write_report(report: dict, out: Path) -> None:
    """The report's files; `report.json` last (its presence marks a finished evaluation, see `eval_output`)."""
    out.mkdir(parents=True, exist_ok=True)
    if "confusion_matrix" in report.get("video", {}):
        _write_tables(report, out)
    atomic_write_text(out / "report.json", to_json(report))


def _write_tables(report: dict, out: Path) -> None:
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
