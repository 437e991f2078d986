"""Ablation grids: train every combination of a few config values over several seeds and tabulate.

`actionbert ablate CONFIG --grid model.head=tgap,bert --grid model.reduction=frmb,frab --seeds 3` trains
2 x 2 x 3 runs, evaluates each best checkpoint, and writes `ablation.md` / `ablation.csv` (one row per grid point:
mean and standard deviation of top-1 over seeds, parameters, FLOPs per clip, training time) plus `runs.csv`
(one row per run) and the page `report.html` (table, per-class accuracy, curves, confusion matrices). This is how
the brief's TGAP-vs-BERT table is reproduced on a user's dataset.

Mean and standard deviation over 2-3 seeds cannot say whether a difference is real, so every pair of grid
points that differ in exactly one value (head tgap vs bert at each reduction, reduction frmb vs frab at each
head) is also compared paired, on the same test videos and seeds (`actionbert.compare`): the difference with a
95% bootstrap interval, a p-value and a verdict, in `ablation.md` and in `ablation.json` under `comparisons`.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from actionbert import compare
from actionbert.config import (SECTIONS, ConfigError, RunConfig, apply_override, config_from_dict, config_to_dict,
                               load_config)
from actionbert.errors import DataError
from actionbert.models import VideoClassifier, count_parameters
from actionbert.report import write_ablation_page


@dataclass
class AblationRow:
    values: dict[str, Any]
    top1: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    params: int = 0
    gflops: float = 0.0
    train_seconds: list[float] = field(default_factory=list)
    predictions: list[list[dict]] = field(default_factory=list)  # per seed: the evaluation's per-video predictions


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """["model.head=tgap,bert", "reduction=frmb,frab"] -> {"model.head": ["tgap", "bert"], "model.reduction": [...]}.

    A key without a section is looked up in the model, data and train sections (it must be unambiguous).
    Values are parsed as YAML scalars, so `null`, numbers and booleans work.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2,...")
        key = _qualify(key.strip())
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def _qualify(key: str) -> str:
    if "." in key:
        return key
    owners = [name for name, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(owners) != 1:
        raise ConfigError(f"--grid key {key!r} is {'ambiguous' if owners else 'unknown'}; write section.{key}")
    return f"{owners[0]}.{key}"


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_config(base: RunConfig, point: dict[str, Any], *, seed: int, out: Path) -> RunConfig:
    raw = config_to_dict(base)
    for key, value in point.items():
        raw = apply_override(raw, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")
        if key == "model.head" and value == "tgap":
            raw["model"]["head_options"] = {}  # BERT options mean nothing to TGAP
    raw = apply_override(raw, f"train.seed={seed}")
    raw = apply_override(raw, f"train.out={out}")
    return config_from_dict(raw, where="ablation grid")


def run_name(point: dict[str, Any]) -> str:
    return "_".join(f"{k.split('.')[-1]}-{v}" for k, v in point.items()) or "base"


def clip_flops(model: VideoClassifier) -> float:
    """FLOPs of one forward pass on one clip (torch.utils.flop_counter counts a multiply-add as 2)."""
    c = model.config
    x = torch.zeros(1, 3, c.clip_len, c.input_size, c.input_size)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def run_ablation(base: RunConfig, grid: dict[str, list[Any]], *, seeds: int, out: str | Path,
                 train_fn: Callable, eval_fn: Callable | None = None,
                 on_run: Callable[[str, int, dict], None] = lambda name, seed, res: None) -> list[AblationRow]:
    """Train (and evaluate) every grid point for seeds base.train.seed .. +seeds-1; write the tables.

    Args:
        train_fn: `train(cfg) -> TrainResult` (injected so tests and the demo can wrap it).
        eval_fn: optional `(run_dir, cfg) -> dict` returning at least {"top1": ...} (e.g. the paper's video-level
            protocol on the validation split), and the report's per-video `predictions` for the paired
            comparisons; without it the best validation top-1 of training is used and nothing is compared.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[AblationRow] = []
    per_run: list[dict] = []
    for point in grid_points(grid):
        row = AblationRow(values=point)
        for k in range(seeds):
            seed = base.train.seed + k
            cfg = point_config(base, point, seed=seed, out=out / run_name(point) / f"seed{seed}")
            t0 = time.perf_counter()
            result = train_fn(cfg)
            seconds = time.perf_counter() - t0
            evaluated = eval_fn(result.run_dir, cfg) if eval_fn else {"top1": result.best_top1}
            if evaluated["top1"] is None:
                raise DataError(f"{result.run_dir}: no validation top-1 (no validation videos could be evaluated); "
                                "an ablation compares validation results: prepare the data with a validation split")
            if "predictions" in evaluated:  # kept per run for the paired comparisons, not tabulated
                row.predictions.append(evaluated["predictions"])
                evaluated = {key: v for key, v in evaluated.items() if key != "predictions"}
            row.top1.append(float(evaluated["top1"]))
            for key, value in evaluated.items():
                if key != "top1" and isinstance(value, (int, float)):
                    row.extra.setdefault(key, []).append(float(value))
            row.train_seconds.append(seconds)
            per_run.append({**point, "seed": seed, "top1": evaluated["top1"], "train_seconds": round(seconds, 2),
                            **{k: v for k, v in evaluated.items() if k != "top1" and isinstance(v, (int, float))}})
            on_run(run_name(point), seed, evaluated)
        resolved = load_config(result.run_dir / "config.yaml")  # class count filled in from the dataset
        model = VideoClassifier(resolved.model)
        row.params = count_parameters(model)
        row.gflops = clip_flops(model) / 1e9
        rows.append(row)
        write_tables(rows, per_run, out, seeds=seeds)
        write_ablation_page(out, order=[run_name(r.values) for r in rows])
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def table_rows(rows: list[AblationRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        mean, std = _mean_std(r.top1)
        d = {k.split(".")[-1]: ("none" if v is None else v) for k, v in r.values.items()}
        d.update({"top1_mean": round(mean, 2), "top1_std": round(std, 2), "seeds": len(r.top1)})
        for key, values in r.extra.items():
            m, s = _mean_std(values)
            d[f"{key}_mean"], d[f"{key}_std"] = round(m, 2), round(s, 2)
        d.update({"params": r.params, "gflops_per_clip": round(r.gflops, 3),
                  "train_s_mean": round(statistics.fmean(r.train_seconds), 1)})
        out.append(d)
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:,}" if isinstance(r[k], int) and k == "params" else str(r[k])
                                        for k in keys) + " |")
    return "\n".join(lines)


def comparable_pairs(rows: list[AblationRow]) -> list[tuple[str, AblationRow, AblationRow]]:
    """(factor, a, b) for every two grid points that differ in exactly one value; a comes first in the grid.
    Sorted by factor in grid order, e.g. head tgap/bert at frmb, at frab, then reduction frmb/frab at tgap, ..."""
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            differ = [key for key in a.values if a.values[key] != b.values[key]]
            if len(differ) == 1:
                pairs.append((differ[0], a, b))
    keys = list(rows[0].values) if rows else []
    return sorted(pairs, key=lambda pair: keys.index(pair[0]))


def _text(value: Any) -> str:
    return "none" if value is None else str(value)


def _where(at: dict[str, str]) -> str:
    """{"model.reduction": "frmb"} -> "reduction=frmb": the values the other factors are held at."""
    return ", ".join(f"{key.split('.')[-1]}={v}" for key, v in at.items())


def grid_comparisons(rows: list[AblationRow], *, classes: list[str] | None = None,
                     seed: int = 0) -> tuple[list[dict], list[str]]:
    """Paired comparisons of every comparable pair (see `actionbert.compare`), and notes on pairs left out.

    Args:
        classes: compare on the test videos of these classes only (None: all).
        seed: of the bootstrap and sign-flip draws (the same numbers every time).

    Returns items {"factor", "a", "b", "metric", "diff", "ci95", "p_value", "videos", "seeds", "verdict"}
    (points, b - a; one per metric), plus "at" {other factor: value} when the grid has more than one factor.
    """
    items, notes = [], []
    for factor, a, b in comparable_pairs(rows):
        at = {key: _text(v) for key, v in a.values.items() if key != factor}
        name_a, name_b = _text(a.values[factor]), _text(b.values[factor])
        where = _where(at)
        pair = f"{factor} {name_a} vs {name_b}" + (f" at {where}" if where else "")
        if not (a.predictions and b.predictions):
            notes.append(f"{pair}: no per-video results (runs not evaluated)")
            continue
        try:
            paired = compare.paired_results(a.predictions, b.predictions, classes)
        except ValueError as e:
            notes.append(f"{pair}: {e}")
            continue
        for metric, r in compare.compare(paired, seed=seed).items():
            item = {"factor": factor, "a": name_a, "b": name_b, "metric": metric, "diff": round(r["diff"], 3),
                    "ci95": [round(x, 3) for x in r["ci95"]], "p_value": r["p_value"], "videos": r["videos"],
                    "seeds": r["seeds"], "verdict": compare.verdict(name_a, name_b, metric, r, where=where)}
            items.append({**item, "at": at} if at else item)
    return items, notes


def comparisons_markdown(items: list[dict], notes: list[str], *, explain: bool = True) -> list[str]:
    """Markdown lines: how to read the comparisons (with `explain`), their table and one verdict line each."""
    if not items and not notes:
        return ["No two grid points differ in exactly one value: nothing to compare."]
    table = [{"factor": i["factor"], **({"at": _where(i["at"])} if "at" in i else {}), "a": i["a"], "b": i["b"],
              "metric": i["metric"], "diff (b − a)": f"{i['diff']:+.1f}",
              "95% CI": f"[{i['ci95'][0]:+.1f}, {i['ci95'][1]:+.1f}]", "p": f"{i['p_value']:.3g}",
              "videos": i["videos"], "seeds": i["seeds"]} for i in items]
    lines = ([compare.METHOD_NOTE, ""] if explain else []) + ([markdown_table(table), ""] if table else [])
    lines += [f"- {i['verdict']}" for i in items] + [f"- not compared: {n}" for n in notes]
    return lines


def write_tables(rows: list[AblationRow], per_run: list[dict], out: Path, *, seeds: int) -> None:
    table = table_rows(rows)
    items, notes = grid_comparisons(rows)
    (out / "ablation.md").write_text(
        f"# Ablation ({seeds} seed{'s' if seeds > 1 else ''} per row)\n\n"
        "top-1 in %, mean and standard deviation over seeds; FLOPs for one clip at the model's input size.\n\n"
        + markdown_table(table) + "\n\n## Paired comparisons\n\n" + "\n".join(comparisons_markdown(items, notes))
        + "\n")
    (out / "ablation.json").write_text(json.dumps({"table": table, "comparisons": items,
                                                   **({"not_compared": notes} if notes else {})}, indent=2))
    for name, data in (("ablation.csv", table), ("runs.csv", per_run)):
        if data:
            keys = list(dict.fromkeys(k for d in data for k in d))
            with open(out / name, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(data)
