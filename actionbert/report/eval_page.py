"""`eval --out DIR` writes `DIR/report.html` from the evaluation's report dict (the same numbers as `report.json`):
overall and per-class metrics, the confusion matrix, the temporal check, and the misclassified videos with a
thumbnail, their true and predicted class and the probability the model gave each.
"""

from __future__ import annotations

import math
from pathlib import Path

from actionbert.report import charts
from actionbert.report.html import Markup, facts, image, join, page, para, section, table, tag, write_page
from actionbert.report.thumbs import thumbnails

MAX_MISCLASSIFIED = 200  # rows with thumbnails on the page; predictions.csv lists them all


def write_eval_page(report: dict, path: str | Path) -> Path:
    """Write the page of an `evaluate.evaluate` report dict; returns its path."""
    name = _model_name(report["model"])
    parts = [tag("h1", f"Evaluation of {name} on the {report['split']} split"),
             para(f"model {report['model']}, data {report['data']}", cls="sub"), _facts(report)]
    parts += [tag("div", n, cls="note") for n in [*report.get("notes", []), report.get("note")] if n]
    video = report.get("video", {})
    if "per_class" in video:
        parts += [_overall(report), _temporal(report), _per_class(report), _misclassified(report)]
    parts.append(_failures(report))
    return write_page(path, page(f"actionbert eval: {name} ({report['split']})", *parts))


def _model_name(path: str) -> str:
    """A checkpoint with the run folder it belongs to (`seed0/best.pt`), a model folder by its name."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.suffix and p.parent.name else p.name


def pct(value) -> str:
    """A percentage as shown on the page ('-' for none or NaN)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}%"


def _facts(report: dict) -> Markup:
    v = report["views"]
    clips = "every test window" if v["clips_per_video"] == "all" else f"{v['clips_per_video']} clip(s) per video"
    views = f"{clips} x {v['crops']} crop(s), {v['mean_views_per_video']:.1f} views per video on average"
    return facts([("videos", f"{report['evaluated_videos']} evaluated of {report['num_videos']}"),
                  ("views", views), ("classes", len(report["classes"]))])


def _overall(report: dict) -> Markup:
    v, clip = report["video"], report.get("clip", {})
    rows = [["video top-1", pct(v["top1"])], [f"video top-{v['top5_k']}", pct(v["top5"])],
            ["mean class accuracy", pct(v["mean_class_accuracy"])]]
    if clip:
        rows.append([f"clip top-1 ({clip['num_clips']} clips)", pct(clip["top1"])])
    return section("Overall", table(["metric", "value"], rows, id="overall", numeric=[1]),
                   para("Video scores: the mean of the raw logits over all views of a video; clip scores: the "
                        "mean over the crops of one clip.", cls="small"))


def _temporal(report: dict) -> Markup:
    tc = report.get("temporal_check")
    if not tc:
        return section("Temporal check", para(join(["Not run; ", tag("code", "actionbert eval ... --temporal-check"),
                                                    " adds it."])))
    rows = [[order, pct(tc[order]["top1"]), pct(tc[order]["clip_top1"])]
            for order in ("original", "reversed", "shuffled")]
    text = (f"Order dependence (video top-1 of original minus shuffled frames): "
            f"{tc['order_dependence']:+.2f} points. A model that uses the order of frames loses accuracy on "
            "reversed and shuffled clips; one that averages over time does not.")
    return section("Temporal check", table(["frame order", "video top-1", "clip top-1"], rows, id="temporal",
                                           numeric=[1, 2]), para(text))


def _per_class(report: dict) -> Markup:
    v = report["video"]
    rows = [[c["class"], c["support"], pct(c["precision"]), pct(c["recall"])] for c in v["per_class"]]
    k = len(report["classes"])
    chart = charts.png(charts.confusion_figure(v["confusion_matrix"], report["classes"], max_inches=12.0,
                                               title=f"confusion matrix ({v['num_samples']} videos)"))
    return section("Per class", table(["class", "videos", "precision", "recall (class accuracy)"], rows,
                                      id="per-class", numeric=[1, 2, 3]),
                   para("Precision: the share of the videos predicted as the class that belong to it ('-': never "
                        "predicted); recall: the share of the class's videos predicted as it.", cls="small"),
                   tag("h3", "Confusion matrix"),
                   para("Rows: true class, columns: predicted class; colour: share of the row, numbers: videos."
                        if k <= 30 else "Rows: true class, columns: predicted class; colour: share of the row.",
                        cls="small"),
                   image(chart, mime="image/png", alt="confusion matrix"))


def _misclassified(report: dict) -> Markup:
    wrong = [p for p in report["predictions"] if p["label"] != p["predicted"]]
    if not wrong:
        return section("Misclassified videos", para("None: every evaluated video got its true class."))
    samples = _samples(report)
    rows = []
    for p in wrong[:MAX_MISCLASSIFIED]:
        rows.append([_thumb(samples.get(p["video_id"])), p["video_id"], p["label"], f"{p['label_probability']:.3f}",
                     p["predicted"], f"{p['predicted_probability']:.3f}"])
    shown = (f"{len(wrong)} of {len(report['predictions'])} videos"
             + (f"; the first {MAX_MISCLASSIFIED} shown, all in predictions.csv" if len(wrong) > MAX_MISCLASSIFIED
                else ""))
    return section("Misclassified videos", para(shown + ". Probabilities: softmax of the video's mean logits."),
                   table(["", "video", "true class", "its probability", "predicted", "its probability"], rows,
                         id="misclassified", numeric=[3, 5]))


def _samples(report: dict) -> dict:
    from actionbert.data.dataset import load_split

    try:
        samples, _ = load_split(report["data"], report["split"])
    except (OSError, ValueError):
        return {}
    return {s.video_id: s for s in samples}


def _thumb(sample) -> Markup | str:
    if sample is None:
        return ""
    thumbs, why = thumbnails(sample.path, [max(sample.num_frames, 1) // 2], num_frames=sample.num_frames or None)
    return image(thumbs[0], mime="image/jpeg", alt="thumbnail", cls="thumb") if thumbs else tag("span", why,
                                                                                                  cls="small")


def _failures(report: dict) -> Markup:
    failures = report.get("failures") or []
    if not failures:
        return Markup("")
    rows = [[f["video_id"], f["reason"]] for f in failures]
    return section("Videos that failed to decode", table(["video", "reason"], rows, id="failures"))
