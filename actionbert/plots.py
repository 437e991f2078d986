"""PNG files: training curves, confusion matrices, prediction timelines (figures from `report.charts`)."""

from __future__ import annotations

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


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(charts.png(fig))
    return path
