"""Evaluation per video: the scores of a video's views folded into one record as soon as its last view is scored,
and the report's numbers computed from those records.

```
batch of test windows (several videos) -> logits (B, V, K) per frame order
  -> per video: logits summed over its views, each window's clip prediction (top-1 of the mean over crops)
  -> record once every chosen window of the video is scored or failed:
     {"index": position in the split, "video": video id, "path", "label", "views", "windows", "error",
      "failed_windows", "predicted", "mean_logits": [K], "clip_predicted": [one class index per window],
      "temporal": {"reversed"|"shuffled": {"mean_logits", "clip_predicted"}} (with the temporal check)}
records (all videos, split order) -> video-level and clip-level metrics
```

A record is plain JSON (float32 values written exactly), so the report of records read back from a results file
is the report of the records held in memory: an evaluation resumed after a kill reports the numbers of one that
ran through. A video with a failed window is left out of the video-level metrics (its first reason and the number
of its failed windows are reported); its scored windows still count at clip level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from actionbert.metrics import classification_report, topk_accuracy

ORDERS = ("original", "reversed", "shuffled")


@dataclass
class _Open:
    """A video in flight: logit sums and clip predictions per frame order, views scored, windows seen."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    clips: dict[str, list[int]] = field(default_factory=dict)
    views: int = 0
    windows: int = 0
    failed: int = 0
    reason: str | None = None


class VideoScores:
    """Folds batches of scored test windows into one record per video, returned when the video is complete.

    Args:
        samples: the split's samples (a record's index is the sample's position).
        classes: class names in label order.
        orders: frame orders scored ("original" first).
        expected: sample index -> windows of that video in this run (each arrives scored or failed).
    """

    def __init__(self, samples, classes: list[str], orders: tuple[str, ...], expected: dict[int, int]) -> None:
        self.samples, self.classes, self.orders = samples, list(classes), orders
        self.expected = dict(expected)
        self.index_of = {samples[s].video_id: s for s in self.expected}
        self.open: dict[int, _Open] = {}

    def add(self, batch: dict, logits: dict[str, torch.Tensor]) -> list[dict]:
        """Take one collated batch (its failures too) and its logits (B, V, K) per order; return the records of
        the videos it completed, in split order."""
        touched = []
        for vid, reason in batch["failures"]:
            video = self._video(vid, touched)
            video.failed += 1
            video.reason = video.reason if video.reason is not None else reason
        for i, vid in enumerate(batch["video_id"]):
            video = self._video(vid, touched)
            for order in self.orders:
                window = logits[order][i]  # (V, K), per item: the same arithmetic whatever the batch
                video.sums[order] = video.sums.get(order, 0) + window.sum(dim=0)
                video.clips.setdefault(order, []).append(int(window.mean(dim=0).topk(1).indices[0]))
            video.views += window.shape[0]
            video.windows += 1
        done = sorted(s for s in set(touched) if self.open[s].windows + self.open[s].failed == self.expected[s])
        return [self._record(s, self.open.pop(s)) for s in done]

    def _video(self, vid: str, touched: list[int]) -> _Open:
        s = self.index_of[vid]
        touched.append(s)
        return self.open.setdefault(s, _Open())

    def _record(self, s: int, video: _Open) -> dict:
        sample, ok = self.samples[s], video.reason is None
        means = {o: video.sums[o] / video.views for o in self.orders} if ok else {}
        rec = {"index": s, "video": sample.video_id, "path": str(sample.path), "label": self.classes[sample.label],
               "views": video.views, "windows": video.windows, "error": video.reason, "failed_windows": video.failed,
               "predicted": self.classes[int(means["original"].argmax())] if ok else None,
               "mean_logits": _floats(means.get("original")), "clip_predicted": video.clips.get("original", [])}
        if len(self.orders) > 1:
            rec["temporal"] = {o: {"mean_logits": _floats(means.get(o)), "clip_predicted": video.clips.get(o, [])}
                               for o in self.orders[1:]}
        return rec


def _floats(t: torch.Tensor | None) -> list[float] | None:
    return None if t is None else [float(v) for v in t]  # float32 values: exact in JSON


def _of(rec: dict, order: str) -> dict:
    return rec if order == "original" else rec["temporal"][order]


def report_numbers(records: list[dict], classes: list[str], *, temporal_check: bool,
                   shuffle: list[int]) -> dict:
    """Video-level (mean of all views' logits) and clip-level metrics of `records` (split order), and the
    per-video predictions; the failures listed per video."""
    orders = ORDERS if temporal_check else ORDERS[:1]
    good = [r for r in records if r["error"] is None]
    out: dict = {"mean_views_per_video": (sum(r["views"] for r in good) / len(good)) if good else 0,
                 "evaluated_videos": len(good),
                 "failures": [{"video_id": r["video"], "reason": r["error"], "windows": r["failed_windows"]}
                              for r in records if r["error"] is not None]}
    if not good:
        out["video"] = {"top1": None, "mean_class_accuracy": None}  # undefined: null, never NaN
        out["note"] = "no video could be evaluated"
        return out
    y = torch.tensor([classes.index(r["label"]) for r in good], dtype=torch.long)
    per_video = {o: torch.tensor([_of(r, o)["mean_logits"] for r in good], dtype=torch.float32) for o in orders}
    clip_y = torch.tensor([classes.index(r["label"]) for r in records for _ in r["clip_predicted"]],
                          dtype=torch.long)
    clip_top1 = {o: _percent(torch.tensor([p for r in records for p in _of(r, o)["clip_predicted"]],
                                          dtype=torch.long), clip_y) for o in orders}
    out["video"] = classification_report(per_video["original"], y, classes)
    out["clip"] = {"num_clips": int(clip_y.numel()), "top1": clip_top1["original"]}
    if temporal_check:
        tc: dict = {o: {"top1": topk_accuracy(per_video[o], y, 1), "clip_top1": clip_top1[o],
                        "per_class": classification_report(per_video[o], y, classes)["per_class"]} for o in orders}
        tc["order_dependence"] = tc["original"]["top1"] - tc["shuffled"]["top1"]
        tc["shuffle_permutation"] = list(shuffle)
        out["temporal_check"] = tc
    out["predictions"] = video_rows([r["video"] for r in good], per_video["original"],
                                    [r["label"] for r in good], classes)
    return out


def _percent(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of clips predicted right (NaN for none, as `metrics.topk_accuracy`)."""
    return 100.0 * int((predicted == labels).sum()) / labels.numel() if labels.numel() else float("nan")


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
