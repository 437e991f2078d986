"""PNG files: training curves, confusion matrices, prediction timelines (figures from `report.charts`)."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from actionbert.report import charts


def plot_curves(rows: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    """Loss and top-1 per epoch for train and validation, from `metrics.csv` rows."""
    return _save(charts.curves_figure(rows, title=title), path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    return _save(charts.confusion_figure(matrix, classes, title=title), path)


def plot_timeline(segments: Sequence[dict], path: str | Path, *, title: str = "", duration: float | None = None,
                  unit: str = "s") -> Path:
    """Sliding-window predictions over time: each window's probability of the video's top classes at the
    window's centre (lines, 0-1 axis, legend) and, for BERT models, the CLS attention per window."""
    return _save(charts.timeline_figure(segments, title=title, duration=duration, unit=unit), path)


def timeline_names(videos: Sequence[str | os.PathLike]) -> list[str]:
    """A distinct, readable PNG file name for each video's timeline, the same for a video whatever else is in
    the list: its path (relative to the working folder when inside it) without the extension, separators and
    unsafe characters replaced by "_", then "_timeline.png" (`a/demo.mp4` -> `a_demo_timeline.png`). Two
    different files that give the same name (`a_b/demo.mp4`, `a/b_demo.mp4`; `x.mp4`, `x.avi`) get a short
    hash of their absolute path; a very long name keeps its last 100 characters and gets the hash; the same
    path given twice gets a `-2`, `-3`, ... suffix. Never two equal names for one list."""
    names = [_path_name(v) for v in videos]
    owners: dict[str, set[str]] = {}
    for name, video in zip(names, videos):
        owners.setdefault(name, set()).add(os.path.abspath(video))
    names = [f"{n}-{_short_hash(v)}" if len(owners[n]) > 1 else n for n, v in zip(names, videos)]
    seen: Counter = Counter()
    unique = []
    for n in names:
        seen[n] += 1
        unique.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return [f"{n}_timeline.png" for n in unique]


def _path_name(video) -> str:
    path = os.path.abspath(video)
    inside = os.path.commonpath([path, os.getcwd()]) == os.getcwd()
    shown = os.path.relpath(path) if inside else os.path.splitdrive(path)[1]
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f\s]+', "_", os.path.splitext(shown)[0]).strip("._") or "video"
    return name if len(name) <= 100 else f"{name[-100:].lstrip('._')}-{_short_hash(video)}"


def _short_hash(video) -> str:
    return hashlib.sha1(os.path.abspath(video).encode("utf-8", "surrogateescape")).hexdigest()[:6]


def plot_class_accuracy(per_class: dict[str, dict[str, Sequence[float]]], classes: Sequence[str],
                        path: str | Path, *, shaded: Sequence[str] = (), title: str = "") -> Path:
    """Per-class accuracy by head: one bar per head and class at the mean over seeds, error bars one standard
    deviation (ddof=1). `per_class[head][class]` holds one value per seed; classes in `shaded` get a grey
    background (the demo: the order-only classes)."""
    bars = {}
    for head, values in per_class.items():
        runs = [np.asarray(values.get(c, []), dtype=float) for c in classes]
        bars[head] = ([v.mean() if v.size else np.nan for v in runs], [v.std(ddof=1) if v.size > 1 else 0.0 for v in runs])
    return _save(charts.per_class_figure(classes, bars, ylabel="accuracy (%)", shaded=shaded, title=title), path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(charts.png(fig))
    return path
