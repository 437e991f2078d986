"""`predict --report DIR`: `DIR/index.html` lists every video; one page per video shows what the model saw.

```
Prediction --add()--> thumbnails (JPEG, frames at the centres of equal slices of the video)
           --> DIR/<stem>-<hash of the path>.html: thumbnail strip, probability + attention chart, top-k table
finish() --> DIR/index.html: one row per video (thumbnail, top-1, probability, notes, link)
```

Page names carry a short hash of the video's absolute path, so `a/demo.mp4` and `b/demo.mp4` get two pages.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from actionbert.report import charts
from actionbert.report.html import (Markup, facts, image, is_report, join, link, page, para, section, table,
                                    tag, write_page)
from actionbert.report.thumbs import strip_indices, thumbnails

STRIP_THUMBS = 8
INDEX = "index.html"


class ReportError(Exception):
    """A report folder that cannot be used; the message names it and the fix."""


def page_name(video: str | Path) -> str:
    """File name of a video's page: its stem (made file-name safe) and 8 hex digits of its absolute path."""
    path = Path(video)
    digest = hashlib.sha1(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem or path.name).strip("._")[:60] or "video"
    return f"{stem}-{digest}.html"


def check_folder(folder: str | Path) -> Path:
    """A folder a report may be written to: missing, empty, or holding an earlier actionbert report."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"{folder}: exists and is not a folder; choose another --report folder")
    if folder.is_dir() and any(folder.iterdir()) and not is_report(folder / INDEX):
        raise ReportError(f"{folder}: not empty and not an actionbert report folder; choose another --report "
                          "folder (an earlier report's folder is replaced)")
    return folder


@dataclass
class _Entry:
    video: str
    page: str
    top1: tuple[str, float] | None
    thumb: bytes | None
    length: str
    notes: list[tuple[str, str]]


class PredictReport:
    """Writes a video's page as each prediction arrives (`add`) and the index at the end (`finish`).

    Args:
        folder: the report folder (checked here: see `check_folder`; the pages of an earlier report in it are
            removed).
        model: the model path, as shown on the pages.
        predictor: the `predict.Predictor` that makes the predictions (its clip, stride, hop and head).
    """

    def __init__(self, folder: str | Path, *, model: str | Path, predictor) -> None:
        self.folder = check_folder(folder)
        for old in self.folder.glob("*.html") if self.folder.is_dir() else []:
            if is_report(old):
                old.unlink()
        self.model = str(model)
        self.attention = bool(predictor.has_attention)
        head = "BERT (CLS attention shown)" if self.attention else "TGAP (temporal average pooling: no attention)"
        clip = (f" ({predictor.clip_len} frames taken at stride {predictor.stride})" if predictor.stride > 1
                else "")
        self.about = [("model", self.model), ("head", head),
                      ("windows", f"{predictor.span} frames{clip}, a new window every {predictor.hop} frames")]
        self.entries: list[_Entry] = []

    def add(self, pred) -> Path:
        """Write the page of one `predict.Prediction`; returns its path."""
        indices = strip_indices(pred.num_frames, STRIP_THUMBS) if pred.topk else []
        thumbs, why = thumbnails(pred.video, indices, num_frames=pred.num_frames) if indices else ([], None)
        name = page_name(pred.video)
        notes = _notes(pred) + ([("note", why)] if why else [])
        path = write_page(self.folder / name, self._video_page(pred, thumbs, indices, notes))
        self.entries.append(_Entry(pred.video, name, pred.topk[0] if pred.topk else None,
                                   thumbs[len(thumbs) // 2] if thumbs else None, _length(pred), notes))
        return path

    def finish(self) -> Path:
        """Write `index.html`; returns its path."""
        failed = sum(e.top1 is None for e in self.entries)
        warned = sum(bool(e.notes) for e in self.entries if e.top1 is not None)
        rows = [[image(e.thumb, mime="image/jpeg", alt="thumbnail", cls="thumb") if e.thumb else "",
                 join([link(e.page, Path(e.video).name), tag("div", e.video, cls="small path")]),
                 e.top1[0] if e.top1 else "-", f"{e.top1[1]:.3f}" if e.top1 else "-", tag("span", e.length,
                                                                                          cls="nowrap"),
                 _note_list(e.notes)] for e in self.entries]
        body = [tag("h1", f"Predictions for {len(self.entries)} video{'s' * (len(self.entries) != 1)}"),
                para(f"{failed} could not be read, {warned} with a warning or caveat. Click a video for its timeline.",
                     cls="sub"),
                facts(self.about),
                table(["", "video", "top-1", "probability", "length", "notes"], rows, id="videos", numeric=[3],
                      row_classes=["bad" if e.top1 is None else None for e in self.entries])]
        return write_page(self.folder / INDEX, page("actionbert predictions", *body))

    def _video_page(self, pred, thumbs: list[bytes], indices: list[int], notes) -> str:
        name = Path(pred.video).name
        parts = [para(link(INDEX, "\u2190 all videos"), cls="small"), tag("h1", name), para(pred.video, cls="sub")]
        parts += [tag("div", text, cls="error" if kind == "error" else "note") for kind, text in notes]
        if not pred.topk:
            return page(name, *parts, facts(self.about))
        label, prob = pred.topk[0]
        parts.append(facts([("top-1", f"{label} ({prob:.3f})"), ("video", _length(pred)), *self.about]))
        parts.append(self._timeline(pred, thumbs, indices))
        topk = [[i + 1, lab, f"{p:.3f}"] for i, (lab, p) in enumerate(pred.topk)]
        parts.append(section("Top classes of the whole video", table(["rank", "class", "probability"], topk,
                                                                     id="topk", numeric=[0, 2]),
                             para("Probability: softmax of the mean of the windows' logits.", cls="small")))
        parts.append(section("Windows", _window_table(pred)))
        return page(f"{name}: {label}", *parts)

    def _timeline(self, pred, thumbs: list[bytes], indices: list[int]) -> Markup:
        fps = pred.fps or 0.0
        unit = "s" if fps > 0 else "frame"
        duration = pred.num_frames / fps if fps > 0 else float(pred.num_frames)
        chart = charts.png(charts.timeline_figure(pred.segments, duration=duration, unit=unit))
        parts = [_strip(thumbs, indices, fps), image(chart, mime="image/png", alt="timeline", cls="chart")]
        text = ("Top: the probability of the video's top classes in each window, drawn at the window's centre time. ")
        if self.attention:
            text += ("Bottom: the BERT CLS token's attention to each temporal token of a window (mean over heads), "
                     "drawn over the part of the window the token covers; windows that overlap in time get "
                     "separate rows. A white tick marks where a window starts.")
        else:
            text += "This model's head (temporal average pooling) has no attention to show."
        return section("Over time", *parts, para(text, cls="small"))


def _strip(thumbs: list[bytes], indices: list[int], fps: float) -> Markup:
    """Thumbnails in equal slices spanning exactly the chart's time axis (its left and right edges)."""
    if not thumbs:
        return Markup("")
    left, right = charts.TIMELINE_LEFT * 100, (1 - charts.TIMELINE_RIGHT) * 100
    cells = [tag("figure", join([image(t, mime="image/jpeg", alt=f"frame {i}"),
                                 tag("figcaption", f"{i / fps:.1f} s" if fps > 0 else f"frame {i}")]))
             for t, i in zip(thumbs, indices)]
    return tag("div", join(cells), cls="strip", style=f"margin-left:{left:.2f}%;margin-right:{right:.2f}%")


def _window_table(pred) -> Markup:
    unit = "s" if pred.fps else "frame"
    rows = [[f"{s['start']:.2f}", f"{s['end']:.2f}", s["label"], f"{s['score']:.3f}"] for s in pred.segments]
    body = table([f"start ({unit})", f"end ({unit})", "top-1 of the window", "probability"], rows, id="windows",
                 numeric=[0, 1, 3])
    return tag("details", join([tag("summary", f"{len(rows)} window(s): top-1 of each"), body]))


def _notes(pred) -> list[tuple[str, str]]:
    """(kind, text) of the prediction's error, warning and any caveats."""
    notes = [("error", pred.error)] if pred.error else []
    if pred.warning:
        notes.append(("warning", pred.warning))
    caveats = getattr(pred, "caveats", None) or getattr(pred, "caveat", None) or []
    notes += [("caveat", c) for c in ([caveats] if isinstance(caveats, str) else caveats)]
    return notes


def _note_list(notes) -> Markup:
    return join(tag("div", f"{kind}: {text}", cls="path") for kind, text in notes)


def _length(pred) -> str:
    if not pred.num_frames:
        return "-"
    if not pred.fps:
        return f"{pred.num_frames} frames"
    seconds = pred.num_frames / pred.fps
    clock = f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)}:{seconds % 60:04.1f}"
    return f"{clock}, {pred.num_frames} frames at {pred.fps:.3g} fps"
