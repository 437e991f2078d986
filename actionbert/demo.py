"""`actionbert demo`: the whole workflow on built-in synthetic data, TGAP against BERT, in minutes on a CPU.

1. Generate the synthetic dataset (`data.synthetic`): real video files, folder per class, order events placed
   where the backbone's tokens cannot leak their order (below).
2. `prepare` it (index, stratified split, decoded-frame cache).
3. Train `r2plus1d_local_tiny` with the TGAP head and with the BERT head, 3 seeds each (`ablate`).
4. Evaluate every best checkpoint with the paper's protocol plus the temporal check (frame-reversed and
   frame-shuffled clips).
5. Write `REPORT.md` (group table, per-class figure, ablation table, curves, confusion matrices) and
   `summary.json` (accuracy per class group and head, per seed, mean and std).

What it shows. The order-only classes (`data.synthetic.ORDER_CLASSES`: red_then_blue / blue_then_red,
circle_then_square / square_then_circle) hold the same two events in opposite order. TGAP averages the temporal
tokens, so it can only tell the pair, never the order: 50% on those classes. BERT attends over the ordered tokens
with positions and can. The control classes need no order: the same event twice (red_twice, ..., appearance)
and a disc sliding left or right (local motion); both heads should learn them. A mechanism check on designed
data, not the size of BERT's gain on real videos.

Why it works (numbers measured on the 2-core AVX2 CPU of 2026-11-30, fp32, one thread, CPU seconds, while
other jobs loaded the machine, so rough):

- Local tokens. The former demo backbone, `r2plus1d_tiny`, gives 32 frames T' = 4 tokens, but
  `models.backbones.temporal_windows` measures that token 0 depends on frames 0-24 and tokens 1-3 on all 32
  frames: every token sees both events and, through the zero padding at the clip's ends, when they happen, so
  the mean of the tokens keeps the order. `r2plus1d_local_tiny` halves time in its stem, has (2+1)D kernels in
  layer 1 only and halves time twice more without temporal kernels: tokens k = 0..3 see frames 0-5 (padded),
  3-13, 11-21 and 19-29, i.e. 8k-5 .. 8k+5 (frames 30-31 are seen by none).
- Event layout (`data.synthetic.local_event_layout`, from those windows). The second event starts 16 frames
  (two tokens) after the first, so each event meets the tokens at the same offsets wherever it is, and
  16 - 3 > 11 frames apart, so no token sees both; the first starts at frame 6 or 7, the only starts that keep
  both events away from the padded token 0 and from frames a fifth token would see. Then swapping the two
  events' times maps the tokens that see A onto tokens that see A at the same offsets: the mean over tokens is
  the same up to float64 rounding (relative 1e-16; `tests/test_demo_design.py`), while events at frame 5 or 8
  leak (relative 0.07 / 0.09) and so does `r2plus1d_tiny` (0.54).
- Four tokens, not more. BERT alone on clean synthetic tokens learned an order pair in about 200 steps with
  4 tokens, 300 with 8 and 500 with 16; end to end, an 8-token local variant (stride 4, 7-frame windows) left
  BERT at chance after 600 steps, the 4-token one reached 100% on the order pairs after about 375.
- No token masking (`bert_mask_prob` 0; the paper: 0.2): an event covers one or two of the four tokens, so a
  masked token often hides it; with 8 clean tokens masking took BERT from 300 to 700 steps.
- Appearance controls. Without the "_twice" classes nothing asks the CNN to tell red from blue (TGAP needs only
  "coloured flash" vs "white flash"), and BERT cannot use a difference that is not there: it stayed at 50% on the
  order pairs for 1,500 steps. Large flashes (radius 0.35-0.45 of the frame; 0.22-0.3 did not train in 500
  steps), square 32 x 32 frames (a 16 px centre crop of a 4:3 frame cut events out: label noise), no distractor.
- Enough videos: with 24 training videos per class BERT memorised them (order pairs at 50%); 60 per class
  generalise. The sliding disc moves 0.1-0.15 frame widths per frame: at 0.05-0.08 BERT confused left and right
  (38% / 73% over 3 seeds) while TGAP did not (92% / 97%). It is large (radius 0.28-0.36 of the frame) and the
  classifier dropout is 0.2: with radius 0.18-0.24 and dropout 0.5, one BERT seed in three still learned the
  order pairs late (74% after 10 epochs) and one in four put both slide classes into one (slide_left 20%), with
  dropout 0.2 alone too (4 seeds); with both changes, in 10 epochs, BERT reached 92-100% on the order pairs and
  97-100% on the controls in each of 5 seeds (the demo's three and the two hard ones above), TGAP 99-100% on
  the controls.
- Cost: a training step (batch 8, fp32) of `r2plus1d_local_tiny` on 32 x 16 x 16 clips takes 0.04 s against
  1.6 s for the former `r2plus1d_tiny` on 32 x 48 x 48 clips (bf16 is emulated on CPUs without AVX512-BF16 or
  AMX, so the demo trains in fp32 there); 10 epochs of 75 steps per run, 6 runs.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from actionbert import demo_summary
from actionbert.ablate import (AblationRow, comparisons_markdown, grid_comparisons, markdown_table, run_ablation,
                               table_rows)
from actionbert.compare import METHOD_NOTE
from actionbert.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from actionbert.data.synthetic import LOCAL_ORDER_STYLE, EventLayout, class_groups, local_event_layout
from actionbert.fileio import atomic_write_text, to_json
from actionbert.preprocessing import Resize
from actionbert.report import write_ablation_page

#: The demo's classes: two order pairs (order-only), their events twice (appearance controls) and a disc sliding
#: left or right (local-motion controls).
DEMO_CLASSES = ("red_then_blue", "blue_then_red", "circle_then_square", "square_then_circle",
                "red_twice", "blue_twice", "circle_twice", "square_twice", "slide_left", "slide_right")
#: How the report names `data.synthetic.class_groups`' groups.
GROUP_TITLES = {"all": "all classes", "order_only": "order-only classes", "control": "control classes"}
@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo, chosen to finish in under 10 minutes on 2 CPU cores (see the module docstring).

    Args:
        out: output folder (REPORT.md, summary.json, data, runs).
        seeds: training seeds per head (consecutive, from `seed`).
        epochs: training epochs per run.
        classes: synthetic classes (`data.synthetic.SYNTHETIC_CLASSES`), grouped by `class_groups`.
        videos_per_class: synthetic videos per class (a quarter goes to validation).
        backbone: a registered backbone whose temporal tokens are local (`r2plus1d_local_tiny`).
        clip_len: frames per video and per clip: every clip is the whole video, so the order events sit where
            `data.synthetic.local_event_layout` puts them for this backbone.
        size: (height, width) of the synthetic videos in pixels.
        crop: model input side in pixels; resize: frame size before cropping.
        dropout: classifier dropout (0.2: a 64-wide toy head under the paper's 0.8, or 0.5, needs more epochs).
        bert_mask_prob: BERT's token masking in training (the paper: 0.2). 0 here: an event covers one or two of
            the four tokens, so masking a token often hides an event and makes the label a guess.
        hflip: 0, because left/right motion is what separates two of the classes.
        crop_scales: mild multi-scale crops (the events stay in the frame).
        precision: "auto": bf16 autocast where the device runs bf16 natively, else fp32; the report says which ran.
        views: evaluation views (clips x crops); "all" is the paper's protocol.
        seed: base seed of the data, the split and the first training run.
    """

    out: str = "runs/demo"
    seeds: int = 3
    epochs: int = 10
    classes: tuple[str, ...] = DEMO_CLASSES
    videos_per_class: int = 80
    backbone: str = "r2plus1d_local_tiny"
    clip_len: int = 32
    size: tuple[int, int] = (32, 32)
    crop: int = 16
    resize: tuple[int, int] = (18, 18)
    batch_size: int = 8
    lr: float = 3e-3
    dropout: float = 0.2
    bert_mask_prob: float = 0.0
    hflip: float = 0.0
    crop_scales: tuple[float, ...] = (1.0, 0.875)
    precision: str = "auto"
    views: str = "all"
    seed: int = 0
    workers: int = 1


def base_config(demo: DemoConfig, prepared: Path) -> RunConfig:
    return RunConfig(
        model=ModelConfig(backbone=demo.backbone, head="bert", num_classes=0, clip_len=demo.clip_len,
                          input_size=demo.crop, dropout=demo.dropout,
                          head_options={"mask_prob": demo.bert_mask_prob}),
        data=DataConfig(root=str(prepared), resize=demo.resize, num_workers=demo.workers, hflip=demo.hflip,
                        crop_scales=demo.crop_scales),
        train=TrainConfig(out=str(Path(demo.out) / "runs"), epochs=demo.epochs, batch_size=demo.batch_size,
                          lr=demo.lr, plateau_patience=3, seed=demo.seed, precision=demo.precision),
    )


def event_layout(demo: DemoConfig, log: Callable[[str], None]) -> EventLayout:
    """Where the order events go: measured from the backbone's token windows (said once)."""
    from actionbert.models.backbones import temporal_windows

    windows = temporal_windows(demo.backbone, demo.clip_len)
    layout = local_event_layout(windows)
    log(f"    {demo.backbone}: {len(windows)} tokens seeing frames {windows}; order events start at frame "
        f"{' or '.join(map(str, layout.starts))} and {layout.spacing} frames later")
    return layout


def _resolve_precision(demo: DemoConfig, log: Callable[[str], None]) -> DemoConfig:
    """"auto" -> the device's fast precision (`runtime.resolve_precision`); said once."""
    if demo.precision != "auto":
        return demo
    from actionbert import runtime

    precision, note = runtime.resolve_precision(runtime.select_device("auto"), "auto")
    log(f"    {note}" if note else f"    precision {precision} (the device runs it natively)")
    return dataclasses.replace(demo, precision=precision)


def _fresh_folder(out: Path) -> None:
    """Make `out` empty, removing it first only if an earlier demo made it (never a user's folder)."""
    marker = out / ".actionbert-demo"
    if out.exists() and any(out.iterdir()):
        report = out / "REPORT.md"
        made_by_demo = marker.is_file() or (report.is_file() and report.read_text().startswith("# actionbert demo"))
        if not made_by_demo:  # never wipe a folder the demo did not make
            raise FileExistsError(f"{out}: exists and is not an actionbert demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by `actionbert demo`; the next demo run replaces this folder\n")


def make_demo_data(demo: DemoConfig, out: Path, log: Callable[[str], None] = lambda s: None) -> Path:
    """Steps 1-2: the synthetic videos in `out/videos`, prepared (split, decoded cache) in `out/prepared`."""
    from actionbert.data import make_synthetic_dataset, prepare_dataset

    log("1/4 generating the synthetic dataset")
    style = dataclasses.replace(LOCAL_ORDER_STYLE, layout=event_layout(demo, log))
    raw = make_synthetic_dataset(out / "videos", classes=demo.classes, videos_per_class=demo.videos_per_class,
                                 num_frames=demo.clip_len, size=demo.size, clip_len=demo.clip_len, seed=demo.seed,
                                 style=style)
    log("2/4 preparing it (index, split, decoded cache)")
    prepared = out / "prepared"
    prepare_dataset(raw, prepared, val_fraction=0.25, seed=demo.seed, cache=True, cache_resize=Resize(*demo.resize))
    return prepared


def run_demo(demo: DemoConfig, *, log: Callable[[str], None] = lambda s: None,
             train_hooks=None) -> Path:
    """Run the whole demo; returns the path of REPORT.md."""
    from actionbert.evaluate import evaluate
    from actionbert.train import train

    t_start = time.perf_counter()
    out = Path(demo.out)
    _fresh_folder(out)
    prepared = make_demo_data(demo, out, log)
    demo = _resolve_precision(demo, log)
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
    rows = run_ablation(base_config(demo, prepared), {"model.head": ["tgap", "bert"]}, seeds=demo.seeds,
                        out=out / "ablation", train_fn=train_fn, eval_fn=eval_fn,
                        on_run=lambda name, seed, res: log(f"    {name} seed {seed}: top-1 {res['top1']:.1f}%"))
    log("4/4 writing the report")
    seconds = time.perf_counter() - t_start
    summary = demo_summary.summarize(evaluations, demo.classes, seconds=seconds)
    atomic_write_text(out / "summary.json", to_json(summary))
    return write_report(out, demo, table_rows(rows), evaluations, minutes=seconds / 60, summary=summary,
                        comparisons=group_comparisons(rows, list(demo.classes)))


def group_comparisons(rows: list[AblationRow], classes: list[str]) -> dict[str, dict]:
    """Group title -> {"classes", "comparisons", "not_compared"}: the heads compared paired on each non-empty
    group's validation videos (`ablate.grid_comparisons` restricted to those classes)."""
    out = {}
    for name, members in class_groups(classes).items():
        if members:
            items, notes = grid_comparisons(rows, classes=members)
            out[GROUP_TITLES[name]] = {"classes": members, "comparisons": items, "not_compared": notes}
    return out


def per_class_table(evaluations: dict[str, dict]) -> list[str]:
    """Markdown rows: class x head, recall averaged over the seeds of each head (`demo_summary.per_class_by_head`)."""
    by_head = demo_summary.per_class_by_head(evaluations)
    if not by_head:
        return []
    heads = list(by_head)
    classes = list(dict.fromkeys(c for values in by_head.values() for c in values))
    rows = ["| class | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for c in classes:
        cells = [f"{sum(v) / len(v):.0f}" if (v := by_head[h].get(c)) else "-" for h in heads]
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    return rows


def result_section(out: Path, demo: DemoConfig, evaluations: dict[str, dict], summary: dict) -> list[str]:
    """REPORT.md lines: the group table (order-only, control, all, temporal check) and the per-class figure."""
    from actionbert.plots import plot_class_accuracy

    groups = class_groups(demo.classes)
    plot_class_accuracy(demo_summary.per_class_by_head(evaluations), demo.classes, out / "per_class.png",
                        shaded=groups["order_only"],
                        title="validation accuracy per class (bars: mean over seeds, whiskers: std; grey: order-only)")
    return [
        "## Result: order-only and control classes",
        "",
        f"Accuracy (%) on the validation videos of each group, mean ± std over {summary['seeds']} seeds "
        "(`summary.json`). Order-only classes: " + ", ".join(groups["order_only"]) + " (50% = the pair is known, "
        "its order guessed). Control classes: " + ", ".join(groups["control"]) + ". The last two columns are the "
        "order-only classes with each clip's frames reversed or shuffled (the temporal check).",
        "",
        *demo_summary.summary_table(summary, demo_summary.temporal_summary(evaluations, demo.classes)),
        "",
        "![per-class accuracy](per_class.png)",
        "",
    ]


def comparison_section(comparisons: dict[str, dict]) -> list[str]:
    """REPORT.md lines: how to read the comparison, then a table and verdicts per class group."""
    lines = ["## Paired comparison of the heads", "", METHOD_NOTE, ""]
    for name, group in comparisons.items():
        lines += [f"### {name[0].upper() + name[1:]} ({', '.join(group['classes'])})", "",
                  *comparisons_markdown(group["comparisons"], group["not_compared"], explain=False), ""]
    return lines


def write_report(out: Path, demo: DemoConfig, table: list[dict], evaluations: dict[str, dict], *,
                 minutes: float, summary: dict, comparisons: dict[str, dict]) -> Path:
    """REPORT.md, ablation.json and report.html in `out`; returns REPORT.md's path."""
    lines = [
        "# actionbert demo: TGAP vs BERT on synthetic order-sensitive videos",
        "",
        f"Backbone {demo.backbone} (local temporal tokens), {demo.clip_len}-frame clips at {demo.crop}x{demo.crop}, "
        f"{demo.epochs} epochs, {demo.precision} training, {demo.seeds} seed(s) per head (base seed {demo.seed}), "
        f"evaluated on the validation split with the paper's protocol (views: {demo.views}). "
        f"Run time {minutes:.1f} min.",
        "",
        *result_section(out, demo, evaluations, summary),
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
        WHAT_IT_SHOWS,
        "",
        "## Per-class recall (%), mean over seeds",
        "",
        *per_class_table(evaluations),
        "",
        "## Runs",
        "",
        *_run_lines(out, evaluations),
    ]
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    groups = {name: group for name, group in comparisons.items() if name != GROUP_TITLES["all"]}
    everything = comparisons.get(GROUP_TITLES["all"], {"comparisons": [], "not_compared": []})
    atomic_write_text(out / "ablation.json", to_json(
        {"table": table, "comparisons": everything["comparisons"], "not_compared": everything["not_compared"],
         "class_groups": groups}))
    write_ablation_page(out / "ablation", out / "report.html", markdown=path)
    return path


WHAT_IT_SHOWS = (
    "The order pairs (red_then_blue / blue_then_red, circle_then_square / square_then_circle) hold the same two "
    "events in opposite order. The backbone's temporal tokens are local (each sees 11 of the 32 frames) and the "
    "events sit where swapping their times leaves the mean of the tokens unchanged (the module docstring of "
    "`actionbert.demo` explains it; `tests/test_demo_design.py` checks it), so TGAP cannot tell the two orders "
    "apart and lands at 50% on them, while BERT reads the order from the token positions; reversing the frames "
    "turns each order class into its partner, which BERT then predicts. The control classes (the same events "
    "twice, a disc sliding left or right) need no order and both heads learn them. This is a check of the "
    "mechanism on designed data, not a measure of BERT's gain on real videos (METHOD.md §1: +2.5 to +3 points "
    "on the brief's dataset), whose 3D CNN features are much less local than these.")


def _run_lines(out: Path, evaluations: dict[str, dict]) -> list[str]:
    lines = []
    for run_dir, report in sorted(evaluations.items()):
        rel = Path(run_dir).relative_to(out)
        lines += [f"### {rel}", "", f"![curves]({rel}/curves.png)", "",
                  f"![confusion]({rel}/eval/confusion.png)", "",
                  f"video top-1 {report['video']['top1']:.1f}%, mean class accuracy "
                  f"{report['video']['mean_class_accuracy']:.1f}%", ""]
    return lines
