"""The page of an ablation (`actionbert ablate`) or of the demo: built from the ablation folder's files.

```
ablation folder: ablation.csv (one row per grid point)
                 <grid point>/seed<k>/metrics.csv       -> training curves, one line per seed
                 <grid point>/seed<k>/eval/report.json  -> per-class recall, mean +- std over seeds;
                                                           confusion matrices summed over seeds
(demo) REPORT.md -> its title and prose paragraphs
```
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from actionbert.report import charts
from actionbert.report.html import Markup, esc, image, join, page, para, section, table, tag, write_page


@dataclass
class _Group:
    """The runs (seeds) of one grid point."""

    name: str
    histories: list[list[dict]] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def write_ablation_page(folder: str | Path, path: str | Path | None = None, *, markdown: str | Path | None = None,
                        order: Sequence[str] = ()) -> Path:
    """Write the page of the ablation in `folder` (default `folder/report.html`); returns its path.

    Args:
        markdown: a Markdown report (the demo's REPORT.md) whose title and prose paragraphs head the page.
        order: grid point folder names in the order to show them (others follow by age).
    """
    folder = Path(folder)
    groups = _groups(folder, order)
    title, prose = _markdown_prose(Path(markdown)) if markdown else (None, [])
    seeds = max((len(g.histories) for g in groups), default=0)
    title = title or f"Ablation: {len(groups)} grid point(s), up to {seeds} seed(s) each"
    parts: list = [tag("h1", title)]
    if prose:
        parts.append(section("About this run", *prose))
    parts.append(_ablation_table(folder))
    parts.append(_per_class(groups))
    parts.append(_curves(groups))
    parts.append(_confusions(groups))
    return write_page(path or folder / "report.html", page(title, *parts))


def _groups(folder: Path, order: Sequence[str]) -> list[_Group]:
    runs: dict[str, _Group] = {}
    for run in sorted(folder.glob("*/seed*")):
        if not (run / "metrics.csv").is_file():
            continue
        group = runs.setdefault(run.parent.name, _Group(run.parent.name))
        with open(run / "metrics.csv", newline="") as f:
            group.histories.append(list(csv.DictReader(f)))
        report = run / "eval" / "report.json"
        if report.is_file():
            group.evals.append(json.loads(report.read_text()))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(runs.values(), key=lambda g: (rank.get(g.name, len(rank)), _age(folder / g.name), g.name))


def _age(group_dir: Path) -> float:
    times = [p.stat().st_mtime for p in group_dir.glob("seed*/config.yaml")]
    return min(times, default=0.0)


def _ablation_table(folder: Path) -> Markup:
    file = folder / "ablation.csv"
    if not file.is_file():
        return section("Ablation", para("No ablation.csv in this folder yet."))
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = _columns(list(rows[0]) if rows else [])
    cells = [[f"{r[k]} \u00b1 {r[std]}" if std else r[k] for k, std, _ in columns] for r in rows]
    numeric = [i for i, (k, _, _) in enumerate(columns) if all(_is_number(r[k]) for r in rows)]
    return section("Ablation", tag("div", table([h for _, _, h in columns], cells, id="ablation", numeric=numeric),
                                   cls="wide"),
                   para("One row per grid point; mean \u00b1 standard deviation over seeds; top1: video-level top-1 "
                        "(%) on the evaluated split; params and FLOPs for one clip at the model's input size; the "
                        "same numbers as ablation.csv.", cls="small"))


def _columns(keys: list[str]) -> list[tuple[str, str | None, str]]:
    """(key, key of its standard deviation or None, header): `x_mean` and `x_std` make one column `x`."""
    columns = []
    for k in keys:
        base = k.removesuffix("_mean")
        if k.endswith("_mean") and f"{base}_std" in keys:
            columns.append((k, f"{base}_std", base))
        elif not (k.endswith("_std") and f"{k.removesuffix('_std')}_mean" in keys):
            columns.append((k, None, k))
    return columns


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def class_recall(groups: Sequence[_Group]) -> tuple[list[str], dict[str, tuple[list[float], list[float]]]]:
    """(classes, {group: (mean recall % per class, std over seeds per class)}), NaN where no seed has a value."""
    classes = next((list(e["classes"]) for g in groups for e in g.evals), [])
    result = {}
    for g in groups:
        if not g.evals:
            continue
        means, stds = [], []
        for c in classes:
            values = [pc["recall"] for e in g.evals for pc in e["video"].get("per_class", [])
                      if pc["class"] == c and pc["recall"] is not None]
            means.append(statistics.fmean(values) if values else float("nan"))
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        result[g.name] = (means, stds)
    return classes, result


def _per_class(groups: Sequence[_Group]) -> Markup:
    classes, recall = class_recall(groups)
    if not recall:
        return section("Per-class accuracy", para("No evaluation reports (eval/report.json) in the runs."))
    names = list(recall)
    rows = [[c, *(_mean_std(recall[n][0][i], recall[n][1][i]) for n in names)] for i, c in enumerate(classes)]
    seeds = ", ".join(f"{g.name} {len(g.evals)}" for g in groups if g.name in recall)
    chart = charts.png(charts.per_class_figure(classes, recall, ylabel="recall = class accuracy (%)"))
    return section("Per-class accuracy", image(chart, mime="image/png", alt="per-class accuracy", cls="chart"),
                   para("Bars: recall of each class (the share of its videos classified correctly), mean over seeds; "
                        "error bars: +- one standard deviation over seeds, cut at 0 and 100 (none with one seed). "
                        f"Seeds: {seeds}.", cls="small"),
                   table(["class", *names], rows, id="per-class", numeric=list(range(1, len(names) + 1))))


def _mean_std(mean: float, std: float) -> str:
    return "-" if mean != mean else f"{mean:.1f} \u00b1 {std:.1f}"


def _curves(groups: Sequence[_Group]) -> Markup:
    runs = {g.name: g.histories for g in groups if g.histories}
    if not runs:
        return Markup("")
    chart = charts.png(charts.runs_curves_figure(runs))
    return section("Training curves", image(chart, mime="image/png", alt="training curves", cls="chart"),
                   para("One colour per grid point, one line per seed; validation on the centre clip of each "
                        "validation video, as during training.", cls="small"))


def _confusions(groups: Sequence[_Group]) -> Markup:
    images = []
    for g in groups:
        matrices = [e["video"]["confusion_matrix"] for e in g.evals if "confusion_matrix" in e.get("video", {})]
        if not matrices:
            continue
        total = [[sum(m[i][j] for m in matrices) for j in range(len(matrices[0]))] for i in range(len(matrices[0]))]
        fig = charts.confusion_figure(total, g.evals[0]["classes"], max_inches=6.0,
                                      title=f"{g.name}: {len(matrices)} seed(s) summed")
        images.append(image(charts.png(fig), mime="image/png", alt=f"confusion matrix {g.name}"))
    if not images:
        return Markup("")
    return section("Confusion matrices", tag("div", join(images), style="display:flex;flex-wrap:wrap;gap:12px"),
                   para("Rows: true class, columns: predicted class; counts summed over the seeds of a grid point.",
                        cls="small"))


def _markdown_prose(path: Path) -> tuple[str | None, list[Markup]]:
    """The title (`# ...`) and the prose paragraphs of a Markdown report; tables, images and `###` subsections
    are left out (the page draws its own)."""
    if not path.is_file():
        return None, []
    title, parts, skip, heading = None, [], False, None
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
        block = block.strip()
        if block.startswith("# ") and title is None:
            title = block[2:].strip()
        elif block.startswith("## "):
            skip, heading = False, block[3:].strip()
        elif block.startswith("#"):
            skip = True
        elif block and not skip and not block.startswith(("|", "![")):
            if heading:  # a section heading only above prose
                parts.append(tag("h3", heading))
                heading = None
            parts.append(para(_inline_code(block)))
    return title, parts


def _inline_code(text: str) -> Markup:
    pieces = text.split("`")
    return join(tag("code", p) if i % 2 else esc(p) for i, p in enumerate(pieces))
