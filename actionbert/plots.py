"""PNG figures: training curves, confusion matrices, prediction timelines (matplotlib, headless Agg backend)."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(rows: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    """Loss and top-1 per epoch for train and validation, from `metrics.csv` rows."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        ax_loss.plot(epochs, [_number(r[key]) for r in rows], style, marker="o", label=key)
    for key, style in (("train_top1", "-"), ("val_top1", "--")):
        ax_acc.plot(epochs, [_number(r[key]) for r in rows], style, marker="o", label=key)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _number(value) -> float:
    """A metric value; NaN (a gap in the curve) where it is undefined (None, empty: no validation data)."""
    return float("nan") if value is None or value == "" else float(value)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    matrix = np.asarray(matrix)
    k = len(classes)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return _save(fig, path)


def plot_timeline(segments: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    """Sliding-window predictions as coloured bars over time (start, end in seconds; label; score)."""
    labels = sorted({s["label"] for s in segments})
    colours = {lab: plt.cm.tab20(i % 20) for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.3 * len(labels)))
    for s in segments:
        y = labels.index(s["label"])
        ax.barh(y, s["end"] - s["start"], left=s["start"], color=colours[s["label"]], alpha=0.3 + 0.7 * s["score"])
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="time (s)", title=title or "predicted actions")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


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


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
