"""Matplotlib figures for the PNG files and the HTML reports (headless Agg backend).

Each `*_figure` function returns a figure; `png(fig)` renders it to PNG bytes (and closes it), `plots.py`
saves the same figures as files.

The prediction timeline puts two panels on one time axis:

```
probability  |  one line per class (the video's top classes), one point per window at its centre time, 0..1
CLS attention|  one row of cells per window lane: a window's T' tokens drawn over the part of the window each
             |  token covers; windows that overlap in time sit on different lanes (no colour stacking)
             +--------------------------------------------------------------------------------- time (s)
```
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Left and right edges of the timeline's axes as fractions of the figure width: the HTML page aligns its
# thumbnail strip to them, so a thumbnail sits above the time it shows.
TIMELINE_LEFT, TIMELINE_RIGHT = 0.07, 0.78
LEGEND_CHARS = 30  # class names are cut to this many characters in legends



def _number(value) -> float:
    """A metric value; NaN (a gap in the curve) where it is undefined (None, empty: no validation data)."""
    return float("nan") if value is None or value == "" else float(value)

def png(fig, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _short(name: str, n: int = LEGEND_CHARS) -> str:
    return name if len(name) <= n else name[: n - 1] + "\u2026"


# ------------------------------------------------------------------------------------------- training
def curves_figure(rows: Sequence[dict], *, title: str = ""):
    """Loss and top-1 per epoch for train and validation, from `metrics.csv` rows."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        ax_loss.plot(epochs, [_number(r[key]) for r in rows], style, marker="o", label=key)
    for key, style in (("train_top1", "-"), ("val_top1", "--")):
        ax_acc.plot(epochs, [_number(r[key]) for r in rows], style, marker="o", label=key)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def runs_curves_figure(runs: dict[str, list[list[dict]]]):
    """Training curves of many runs: train loss, validation loss and validation top-1 per epoch; one colour per
    group (grid point), one line per run (seed) of the group."""
    panels = (("train_loss", "train loss (cross-entropy)"), ("val_loss", "validation loss"),
              ("val_top1", "validation top-1 (%)"))
    fig, axes = plt.subplots(1, 3, figsize=(12.8, 3.6))
    for g, (group, histories) in enumerate(runs.items()):
        colour = plt.cm.tab10(g % 10)
        for s, rows in enumerate(histories):
            epochs = [int(r["epoch"]) for r in rows]
            for ax, (key, _) in zip(axes, panels):
                ax.plot(epochs, [_number(r[key]) for r in rows], color=colour, marker="o", ms=3, lw=1.2,
                        label=_short(group) if s == 0 else None)
    for ax, (key, label) in zip(axes, panels):
        ax.set(xlabel="epoch", title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key == "val_top1":
            ax.set_ylim(0, 100)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ evaluation
def confusion_figure(matrix, classes: Sequence[str], *, title: str = "", max_inches: float | None = None):
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts in the cells (up to 30
    classes). `max_inches` caps the figure's side (the tick labels shrink to fit)."""
    matrix = np.asarray(matrix)
    k = len(classes)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * k + 2)
    if max_inches:
        size = min(size, max_inches)
    fontsize = min(8.0, 0.6 * 72 * size / max(k, 1))  # label height: at most ~60% of a row
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), [_short(c) for c in classes], rotation=60, ha="right", fontsize=fontsize)
    ax.set_yticks(range(k), [_short(c) for c in classes], fontsize=fontsize)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def per_class_figure(classes: Sequence[str], groups: dict[str, tuple[Sequence[float], Sequence[float]]], *,
                     ylabel: str = "recall (%)", shaded: Sequence[str] = (), title: str = ""):
    """Grouped bars: one group of bars per class, one bar per group name with its mean and an error bar of
    +- the given spread (e.g. the standard deviation over seeds; 0 draws none), cut at 0 and 100. Classes in
    `shaded` get a grey background (the demo: its order-only classes)."""
    k, n = len(classes), max(len(groups), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(12.8, 4.2))
    x = np.arange(k)
    for i, name in enumerate(classes):
        if name in shaded:
            ax.axvspan(i - 0.5, i + 0.5, color="0.9", zorder=0)
    for g, (name, (means, spreads)) in enumerate(groups.items()):
        m, s = np.asarray(means, dtype=float), np.nan_to_num(np.asarray(spreads, dtype=float))
        yerr = np.stack([np.minimum(s, m), np.minimum(s, 100 - m)])  # (2, K): below, above; NaN means stay NaN
        ax.bar(x - 0.4 + width * (g + 0.5), means, width, yerr=yerr, capsize=3, label=_short(name),
               color=plt.cm.tab10(g % 10), error_kw={"elinewidth": 1})
    ax.set_xticks(x, [_short(c, 24) for c in classes], rotation=20 if k > 6 else 0, ha="right" if k > 6 else "center",
                  fontsize=9)
    ax.set(ylabel=ylabel, ylim=(0, 105), title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ prediction
def window_lanes(segments: Sequence[dict]) -> list[int]:
    """Lane (row) of each window of a timeline: the first lane whose windows all end by the time this one starts,
    so windows that overlap in time never share a lane."""
    lane_ends: list[float] = []
    lanes = []
    for s in segments:
        for i, end in enumerate(lane_ends):
            if s["start"] >= end - 1e-9:
                lane_ends[i] = s["end"]
                lanes.append(i)
                break
        else:
            lane_ends.append(s["end"])
            lanes.append(len(lane_ends) - 1)
    return lanes


def timeline_classes(segments: Sequence[dict]) -> list[str]:
    """Classes drawn as lines: those with a probability in the windows (the video's top classes, in their order),
    else each window's top-1 label."""
    return list(dict.fromkeys(c for s in segments for c in (s.get("probabilities") or {s["label"]: 0})))


def timeline_figure(segments: Sequence[dict], *, duration: float | None = None, unit: str = "s",
                    title: str = ""):
    """Probability of the top classes over time and, when the windows carry CLS attention, the attention strip
    below it on the same time axis (see the module docstring)."""
    attention = bool(segments) and all(s.get("attention") for s in segments)
    lanes = window_lanes(segments) if attention else []
    n_lanes = max(lanes, default=0) + 1
    prob_h, strip_h = 2.6, max(0.45, 0.3 * n_lanes) if attention else 0.0
    top, gap, bottom = 0.45 if title else 0.15, 0.12 if attention else 0.0, 0.6
    height = top + prob_h + gap + strip_h + bottom
    fig = plt.figure(figsize=(12.8, height))
    width = TIMELINE_RIGHT - TIMELINE_LEFT
    ax = fig.add_axes((TIMELINE_LEFT, (bottom + strip_h + gap) / height, width, prob_h / height))
    end = duration or max((s["end"] for s in segments), default=1.0)
    _probability_lines(ax, segments)
    ax.set_xlim(0, end)
    ax.set_title(title, loc="left", fontsize=11)
    xlabel = "time (s)" if unit == "s" else "frame"
    if attention:
        strip = fig.add_axes((TIMELINE_LEFT, bottom / height, width, strip_h / height), sharex=ax)
        colours = fig.add_axes((TIMELINE_RIGHT + 0.01, bottom / height, 0.01, strip_h / height))
        _attention_strip(strip, colours, segments, lanes, n_lanes)
        ax.tick_params(labelbottom=False)
        strip.set_xlabel(xlabel)
    else:
        ax.set_xlabel(xlabel)
    return fig


def _probability_lines(ax, segments: Sequence[dict]) -> None:
    centres = [(s["start"] + s["end"]) / 2 for s in segments]
    for i, c in enumerate(timeline_classes(segments)):
        ys = [_class_probability(s, c) for s in segments]
        ax.plot(centres, ys, marker="o", ms=4, lw=1.6, color=plt.cm.tab10(i % 10), label=_short(c))
    ax.set_ylim(0, 1)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    if segments:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9,
                  title="class", title_fontsize=9, alignment="left")


def _class_probability(segment: dict, name: str) -> float:
    probs = segment.get("probabilities")
    if probs is not None:
        return float(probs.get(name, math.nan))
    return float(segment["score"]) if segment["label"] == name else math.nan


def _attention_strip(ax, colour_ax, segments: Sequence[dict], lanes: list[int], n_lanes: int) -> None:
    cells, values, borders = [], [], []
    for s, lane in zip(segments, lanes):
        weights = s["attention"]
        step = (s["end"] - s["start"]) / len(weights)
        for j, w in enumerate(weights):
            cells.append(Rectangle((s["start"] + j * step, lane + 0.06), step, 0.88))
            values.append(w)
        borders.append((s["start"], lane))
    cmap = plt.get_cmap("viridis")
    collection = PatchCollection(cells, cmap=cmap, linewidths=0)
    collection.set_array(np.asarray(values, dtype=float))
    collection.set_clim(0, max(max(values, default=0), 1e-6))
    ax.add_collection(collection)
    for x, lane in borders:  # a thin line where each window starts
        ax.plot([x, x], [lane + 0.06, lane + 0.94], color="white", lw=1.0)
    ax.set_ylim(n_lanes, 0)
    ax.set_yticks([])
    ax.set_ylabel("CLS\nattention", rotation=0, ha="right", va="center", fontsize=9)
    bar = ax.figure.colorbar(collection, cax=colour_ax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label("weight", fontsize=8)
