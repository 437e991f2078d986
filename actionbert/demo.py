"""`actionbert demo`: the whole workflow on built-in synthetic data, TGAP against BERT, in minutes on a CPU.

1. Generate the synthetic order-sensitive dataset (`data.synthetic`): real video files, folder per class.
2. `prepare` it (index, stratified split, decoded-frame cache).
3. Train a tiny R(2+1)D with the TGAP head and with the BERT head, for a few seeds (`ablate`).
4. Evaluate every best checkpoint with the paper's protocol plus the temporal check (frame-reversed and
   frame-shuffled clips).
5. Write `REPORT.md` with the ablation table, the paired comparison of the heads (on all classes, the order-only
   classes and the control classes), curves and confusion matrices, and the same as one self-contained page,
   `report.html`.

What it shows: some synthetic classes differ only in the order of two events far apart in time. Averaging the
temporal tokens (TGAP) discards their order, while BERT sees ordered tokens with positions, so BERT should
separate those classes and lose accuracy when frames are shuffled. Other classes differ in appearance or local
motion, which both heads can learn. It is a sanity check of the method on toy data, not a benchmark.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from actionbert.ablate import (AblationRow, comparisons_markdown, grid_comparisons, markdown_table, run_ablation,
                               table_rows)
from actionbert.compare import METHOD_NOTE
from actionbert.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from actionbert.fileio import atomic_write_text, to_json
from actionbert.report import write_ablation_page
from actionbert.preprocessing import Resize


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo, chosen to finish in under 10 minutes on 2 CPU cores.

    Args:
        out: output folder (REPORT.md, data, runs).
        seeds: training seeds per head.
        epochs: training epochs per run.
        num_classes: synthetic classes: the two order pairs first, then slide left/right, bounce, ring.
        videos_per_class: synthetic videos per class (a quarter goes to validation).
        num_frames: frames per synthetic video; equal to `clip_len`, the two events of an order class are
            about 20 frames apart, further than the tiny backbone's features reach in practice.
        clip_len: frames per clip (tiny R(2+1)D: 32 frames -> T' = 4 tokens).
        crop: model input side in pixels; resize: frame size before cropping.
        dropout: classifier dropout; 0.5 instead of the paper's 0.8 because a 128-wide toy head under 0.8
            dropout needs far more epochs than the demo's budget.
        hflip: 0, because left/right motion is what separates two of the synthetic classes.
        crop_scales: mild multi-scale crops, so a crop never cuts a flash out of the frame.
        precision: "auto": bf16 autocast where the device runs bf16 natively (1.5x faster than fp32 with AMX),
            else fp32 (a CPU without bf16 instructions emulates it: 6.6x slower); the report says which ran.
        views: evaluation views (clips x crops); "all" is the paper's protocol.
    """

    out: str = "runs/demo"
    seeds: int = 2
    epochs: int = 16
    num_classes: int = 6
    videos_per_class: int = 40
    num_frames: int = 32
    clip_len: int = 32
    crop: int = 48
    resize: tuple[int, int] = (56, 72)
    batch_size: int = 8
    lr: float = 1e-3
    dropout: float = 0.5
    hflip: float = 0.0
    crop_scales: tuple[float, ...] = (1.0, 0.875)
    precision: str = "auto"
    views: str = "all"
    seed: int = 0
    workers: int = 1


def base_config(demo: DemoConfig, prepared: Path) -> RunConfig:
    return RunConfig(
        model=ModelConfig(backbone="r2plus1d_tiny", head="bert", num_classes=0, clip_len=demo.clip_len,
                          input_size=demo.crop, dropout=demo.dropout),
        data=DataConfig(root=str(prepared), resize=demo.resize, num_workers=demo.workers, hflip=demo.hflip,
                        crop_scales=demo.crop_scales),
        train=TrainConfig(out=str(Path(demo.out) / "runs"), epochs=demo.epochs, batch_size=demo.batch_size,
                          lr=demo.lr, plateau_patience=3, seed=demo.seed, precision=demo.precision),
    )


def _resolve_precision(demo: DemoConfig, log: Callable[[str], None]) -> DemoConfig:
    """"auto" -> the device's fast precision (`runtime.resolve_precision`); said once."""
    if demo.precision != "auto":
        return demo
    from actionbert import runtime

    precision, note = runtime.resolve_precision(runtime.select_device("auto"), "auto")
    log(f"    precision {precision}" + (f" ({note})" if note else " (the device runs it natively)"))
    return dataclasses.replace(demo, precision=precision)


def run_demo(demo: DemoConfig, *, log: Callable[[str], None] = lambda s: None,
             train_hooks=None) -> Path:
    """Run the whole demo; returns the path of REPORT.md."""
    from actionbert.data import make_synthetic_dataset, prepare_dataset
    from actionbert.evaluate import evaluate
    from actionbert.train import train

    t_start = time.perf_counter()
    out = Path(demo.out)
    marker = out / ".actionbert-demo"
    if out.exists() and any(out.iterdir()):
        report = out / "REPORT.md"
        made_by_demo = marker.is_file() or (report.is_file() and report.read_text().startswith("# actionbert demo"))
        if not made_by_demo:  # never wipe a folder the demo did not make
            raise FileExistsError(f"{out}: exists and is not an actionbert demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by `actionbert demo`; the next demo run replaces this folder\n")
    log("1/4 generating the synthetic dataset")
    raw = make_synthetic_dataset(out / "videos", num_classes=demo.num_classes, videos_per_class=demo.videos_per_class,
                                 num_frames=demo.num_frames, clip_len=demo.clip_len, seed=demo.seed)
    demo = _resolve_precision(demo, log)
    log("2/4 preparing it (index, split, decoded cache)")
    prepared = out / "prepared"
    prepare_dataset(raw, prepared, val_fraction=0.25, seed=demo.seed, cache=True, cache_resize=Resize(*demo.resize))
    base = base_config(demo, prepared)
    evaluations: dict[str, dict] = {}

    def eval_fn(run_dir: Path, cfg: RunConfig) -> dict:
        report = evaluate(run_dir / "best.pt", data=prepared, split="val", views=demo.views, temporal_check=True,
                          out=run_dir / "eval")
        evaluations[str(run_dir)] = report
        tc = report["temporal_check"]
        return {"top1": report["video"]["top1"], "reversed_top1": tc["reversed"]["top1"],
                "shuffled_top1": tc["shuffled"]["top1"], "order_dependence": tc["order_dependence"],
                "predictions": report.get("predictions", [])}

    def train_fn(cfg: RunConfig):
        log(f"3/4 training {cfg.model.head} seed {cfg.train.seed}")
        return train(cfg, hooks=train_hooks)

    log("3/4 training TGAP and BERT")
    rows = run_ablation(base, {"model.head": ["tgap", "bert"]}, seeds=demo.seeds, out=out / "ablation",
                        train_fn=train_fn, eval_fn=eval_fn,
                        on_run=lambda name, seed, res: log(f"    {name} seed {seed}: top-1 {res['top1']:.1f}%"))
    log("4/4 writing the report")
    minutes = (time.perf_counter() - t_start) / 60
    classes = next(iter(evaluations.values()))["classes"]
    report = write_report(out, demo, table_rows(rows), evaluations, minutes=minutes,
                          comparisons=group_comparisons(rows, classes))
    return report


def class_groups(classes: list[str]) -> dict[str, list[str]]:
    """"all classes", and the order-only and control classes among `classes` (groups left empty are dropped)."""
    from actionbert.data.synthetic import ORDER_CLASSES

    groups = {"all classes": list(classes), "order-only classes": [c for c in classes if c in ORDER_CLASSES],
              "control classes": [c for c in classes if c not in ORDER_CLASSES]}
    return {name: members for name, members in groups.items() if members}


def group_comparisons(rows: list[AblationRow], classes: list[str]) -> dict[str, dict]:
    """Group name -> {"classes", "comparisons", "not_compared"}: the heads compared paired on each group's
    validation videos (`ablate.grid_comparisons` restricted to those classes)."""
    out = {}
    for name, members in class_groups(classes).items():
        items, notes = grid_comparisons(rows, classes=members)
        out[name] = {"classes": members, "comparisons": items, "not_compared": notes}
    return out


def per_class_table(evaluations: dict[str, dict]) -> list[str]:
    """Markdown rows: class x head, recall averaged over the seeds of each head (run folders head-<name>/seedK)."""
    by_head: dict[str, list[dict]] = {}
    for run_dir, report in evaluations.items():
        head = Path(run_dir).parent.name.removeprefix("head-")
        by_head.setdefault(head, []).append({c["class"]: c["recall"] for c in report["video"]["per_class"]})
    if not by_head:
        return []
    heads = sorted(by_head)
    classes = list(next(iter(by_head.values()))[0])
    rows = ["| class | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for c in classes:
        cells = []
        for h in heads:
            values = [r[c] for r in by_head[h] if r.get(c) is not None]
            cells.append(f"{sum(values) / len(values):.0f}" if values else "-")
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    return rows


def comparison_section(comparisons: dict[str, dict]) -> list[str]:
    """REPORT.md lines: how to read the comparison, then a table and verdicts per class group."""
    lines = ["## Paired comparison of the heads", "", METHOD_NOTE, ""]
    for name, group in comparisons.items():
        lines += [f"### {name[0].upper() + name[1:]} ({', '.join(group['classes'])})", "",
                  *comparisons_markdown(group["comparisons"], group["not_compared"], explain=False), ""]
    return lines


def write_report(out: Path, demo: DemoConfig, table: list[dict], evaluations: dict[str, dict], *,
                 minutes: float, comparisons: dict[str, dict]) -> Path:
    lines = [
        "# actionbert demo: TGAP vs BERT on synthetic order-sensitive videos",
        "",
        f"Tiny R(2+1)D backbone, {demo.clip_len}-frame clips at {demo.crop}x{demo.crop}, {demo.epochs} epochs, "
        f"{demo.precision} training, {demo.seeds} seed(s) per head, evaluated on the validation split with the paper's protocol "
        f"(views: {demo.views}). Run time {minutes:.1f} min.",
        "",
        "## Ablation",
        "",
        markdown_table(table),
        "",
        "top1: video-level top-1 (%); reversed/shuffled: the same clips with frames reversed / shuffled; "
        "order_dependence: top-1 minus shuffled top-1 (how much the model relies on temporal order).",
        "",
        *comparison_section(comparisons),
        "## What this shows",
        "",
        "The order pairs (red_then_blue / blue_then_red, circle_then_square / square_then_circle) hold the same two "
        "events in opposite order; the per-class table shows how well each head separates them, and the shuffled "
        "column how much each model loses when the frame order is destroyed; the paired comparison says whether "
        "the gap between the heads, on all classes and on each group, is larger than what this many validation "
        "videos and seeds can resolve. Caveat: the tiny R(2+1)D's temporal "
        "receptive field spans the whole 32-frame clip and zero padding at the clip borders tells its features "
        "where in the clip an event happens, so TGAP is not blind to order on this data. The demo checks the "
        "mechanics of the method (both heads train, are evaluated with the paper's protocol and depend on "
        "temporal order); it says nothing about the size of BERT's gain on real videos (METHOD.md §1: +2.5 to "
        "+3 points on the brief's dataset).",
        "",
        "## Per-class recall (%), mean over seeds",
        "",
        *per_class_table(evaluations),
        "",
        "## Runs",
        "",
    ]
    for run_dir, report in sorted(evaluations.items()):
        rel = Path(run_dir).relative_to(out)
        lines += [f"### {rel}", "", f"![curves]({rel}/curves.png)", "",
                  f"![confusion]({rel}/eval/confusion.png)", "",
                  f"video top-1 {report['video']['top1']:.1f}%, mean class accuracy "
                  f"{report['video']['mean_class_accuracy']:.1f}%", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    groups = {name: group for name, group in comparisons.items() if name != "all classes"}
    everything = comparisons.get("all classes", {"comparisons": [], "not_compared": []})
    atomic_write_text(out / "ablation.json", to_json(
        {"table": table, "comparisons": everything["comparisons"], "not_compared": everything["not_compared"],
         "class_groups": groups}))
    write_ablation_page(out / "ablation", out / "report.html", markdown=path)
    return path
