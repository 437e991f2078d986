"""The demo's headline numbers: accuracy per class group (order-only, control, all) and head, over seeds.

Input: the evaluation reports of the demo's runs (`evaluate.evaluate(..., temporal_check=True)`), keyed by run
folder `.../head-<name>/seed<k>`. Group accuracy is the share of the group's validation videos classified right
(the per-class recalls weighted by their support). Output: `summary.json`'s dictionary, the order-only accuracy
of the temporal check (frames reversed / shuffled) and the report's table.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

from actionbert.data.synthetic import class_groups

GROUPS = ("order_only", "control", "all")
HEADS = ("tgap", "bert")


def group_accuracy(per_class: Sequence[dict], members: Sequence[str]) -> float | None:
    """Percent of the videos of `members` classified right, from a report's `per_class` rows; None: no videos."""
    rows = [r for r in per_class if r["class"] in members and r["support"]]
    videos = sum(r["support"] for r in rows)
    if not videos:
        return None
    return sum(r["recall"] * r["support"] for r in rows) / videos


def runs_by_head(evaluations: dict[str, dict]) -> dict[str, list[dict]]:
    """Head name -> its runs' reports in seed order (run folders `head-<name>/seed<k>`)."""
    by_head: dict[str, list[tuple[int, dict]]] = {}
    for run_dir, report in evaluations.items():
        path = Path(run_dir)
        head = path.parent.name.removeprefix("head-")
        by_head.setdefault(head, []).append((int(path.name.removeprefix("seed")), report))
    return {head: [r for _, r in sorted(runs, key=lambda x: x[0])] for head, runs in by_head.items()}


def mean_std(values: Sequence[float | None]) -> dict:
    """{"per_seed", "mean", "std"}: std over seeds with ddof=1 (None with fewer than two values)."""
    kept = [v for v in values if v is not None]
    return {"per_seed": [None if v is None else round(v, 4) for v in values],
            "mean": round(statistics.fmean(kept), 4) if kept else None,
            "std": round(statistics.stdev(kept), 4) if len(kept) > 1 else None}


def summarize(evaluations: dict[str, dict], classes: Sequence[str], *, seconds: float) -> dict:
    """`summary.json`: {"seeds", "seconds", "order_only" / "control" / "all": {head: mean_std(accuracy per seed)}}."""
    groups = class_groups(classes)
    runs = runs_by_head(evaluations)
    summary: dict = {"seeds": max((len(r) for r in runs.values()), default=0), "seconds": round(seconds, 1)}
    for group in GROUPS:
        summary[group] = {head: mean_std([group_accuracy(r["video"]["per_class"], groups[group]) for r in runs[head]])
                          for head in _heads(runs)}
    return summary


def temporal_summary(evaluations: dict[str, dict], classes: Sequence[str]) -> dict[str, dict[str, dict]]:
    """Order-only accuracy with the frames reversed and shuffled: {order: {head: mean_std(...)}}."""
    members = class_groups(classes)["order_only"]
    runs = runs_by_head(evaluations)
    return {order: {head: mean_std([group_accuracy(r["temporal_check"][order]["per_class"], members)
                                    for r in runs[head]]) for head in _heads(runs)}
            for order in ("reversed", "shuffled")}


def pooled_std(a: dict, b: dict) -> float | None:
    """sqrt((s_a^2 + s_b^2) / 2) of two `mean_std` entries (equal seed counts)."""
    if a["std"] is None or b["std"] is None:
        return None
    return math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)


def summary_table(summary: dict, temporal: dict) -> list[str]:
    """REPORT.md lines: per head, mean ± std over seeds of each group and of the order-only temporal check,
    then BERT − TGAP per group in points and in pooled seed standard deviations."""
    heads = [h for h in HEADS if h in summary["all"]]
    lines = ["| head | order-only | control | all | order-only, frames reversed | order-only, frames shuffled |",
             "|---|---|---|---|---|---|"]
    for head in heads:
        cells = [_fmt(summary[g][head]) for g in GROUPS] + [_fmt(temporal[o][head]) for o in ("reversed", "shuffled")]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    if set(HEADS) <= set(heads):
        lines.append("")
        for group in GROUPS:
            a, b = summary[group]["tgap"], summary[group]["bert"]
            if a["mean"] is None or b["mean"] is None:
                continue
            diff, pooled = b["mean"] - a["mean"], pooled_std(a, b)
            times = f" = {abs(diff) / pooled:.1f} x the pooled seed std ({pooled:.2f})" if pooled else ""
            lines.append(f"- BERT − TGAP, {group.replace('_', '-')} classes: {diff:+.1f} points{times}")
    return lines


def _heads(runs: dict[str, list]) -> list[str]:
    return [h for h in HEADS if h in runs] + sorted(h for h in runs if h not in HEADS)


def _fmt(entry: dict) -> str:
    if entry["mean"] is None:
        return "-"
    return f"{entry['mean']:.1f} ± {entry['std']:.1f}" if entry["std"] is not None else f"{entry['mean']:.1f}"


def per_class_by_head(evaluations: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    """{head: {class: [recall per seed]}} (the figure's data; classes without validation videos left out)."""
    out: dict[str, dict[str, list[float]]] = {}
    for head, reports in runs_by_head(evaluations).items():
        for report in reports:
            for row in report["video"]["per_class"]:
                if row["recall"] is not None:
                    out.setdefault(head, {}).setdefault(row["class"], []).append(row["recall"])
    return {h: out[h] for h in _heads(out)}
