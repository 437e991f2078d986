"""HTML reports of predict, eval and ablate/demo: every video listed, every image embedded and decodable, nothing
referenced outside the file, and the numbers on the page equal to those of the JSON / CSV outputs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import statistics
from pathlib import Path

import pytest
import torch
from html_checks import check_self_contained, decode_image, read_page

from actionbert import build_model
from actionbert.checkpoint import inference_config, save_pretrained
from actionbert.report import page_name, write_ablation_page
from actionbert.report.charts import timeline_figure, window_lanes

CLASSES = ["walk", "run <fast> & far", "jump", "sit"]  # one name that must be escaped


def _model(folder: Path, head: str, classes=CLASSES) -> Path:
    torch.manual_seed(0)
    model = build_model(backbone="r2plus1d_tiny", head=head, num_classes=len(classes), clip_len=16, input_size=32)
    save_pretrained(model, folder, info=inference_config(model, classes=list(classes), norm="torchvision",
                                                         resize=(36, 48)))
    return folder


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, video_tools):
    """`predict --json --report` over two videos with the same name in two folders and a broken file."""
    from actionbert.cli import main

    root = tmp_path_factory.mktemp("predict")
    model = _model(root / "bert", "bert")
    videos = [video_tools.write_coded(root / "a" / "demo.mp4", 60),
              video_tools.write_coded(root / "b" / "demo.mp4", 30, size=(64, 48))]
    (root / "broken.mp4").write_bytes(b"not a video at all")
    videos.append(root / "broken.mp4")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["predict", str(model), *map(str, videos), "--json", "--hop", "8", "--report",
                     str(root / "report"), "--eager"])
    return {"code": code, "json": json.loads(buf.getvalue()), "report": root / "report", "videos": videos,
            "root": root}


def test_predict_index_lists_every_video_with_its_top1(predicted):
    results, folder = predicted["json"], predicted["report"]
    index = read_page(folder / "index.html")
    check_self_contained(index)
    rows = index.tables["videos"]
    assert len(rows) == 3
    names = [page_name(v) for v in predicted["videos"]]
    assert len(set(names)) == 3 and names[0].startswith("demo-") and names[1].startswith("demo-")
    assert [href for href in index.links] == names
    for row, images, result, video in zip(rows, index.row_images["videos"], results, predicted["videos"]):
        assert str(video) in row[1]
        if result["topk"]:
            top = result["topk"][0]
            assert row[2] == top["label"] and row[3] == f"{top['probability']:.3f}"
            assert images == 1  # a thumbnail
        else:
            assert row[2] == "-" and "error" in row[5] and "broken.mp4" in row[5] and images == 0
    assert "1 could not be read" in index.text


def test_predict_video_pages_show_the_json_numbers(predicted):
    folder = predicted["report"]
    for result, video in zip(predicted["json"], predicted["videos"]):
        page = read_page(folder / page_name(video))
        check_self_contained(page)
        assert 'href="index.html"' in page.text
        if result["error"]:
            assert "broken.mp4" in page.text and "topk" not in page.tables
            continue
        assert page.tables["topk"] == [[str(i + 1), t["label"], f"{t['probability']:.3f}"]
                                       for i, t in enumerate(result["topk"])]
        assert page.tables["windows"] == [[f"{s['start']:.2f}", f"{s['end']:.2f}", s["label"], f"{s['score']:.3f}"]
                                          for s in result["segments"]]
        thumbs = [decode_image(src) for src in page.images if src.startswith("data:image/jpeg")]
        assert len(thumbs) == 8 and all(t.height == 96 for t in thumbs)
        assert sum(src.startswith("data:image/png") for src in page.images) == 1  # the timeline chart
        assert "run &lt;fast&gt; &amp; far" in page.text and "run <fast>" not in page.text
        assert "attention to each temporal token" in page.text


def test_predict_json_gives_each_window_the_video_top_classes(predicted):
    result = predicted["json"][0]
    labels = [t["label"] for t in result["topk"]]
    for s in result["segments"]:
        assert list(s["probabilities"]) == labels and 0 <= min(s["probabilities"].values())
        assert sum(s["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)  # all 4 classes are in the top 5
        assert s["probabilities"][s["label"]] == pytest.approx(s["score"], abs=1e-4)


def test_predict_report_of_a_tgap_model_says_there_is_no_attention(tmp_path, video_tools):
    from actionbert.cli import main

    model = _model(tmp_path / "tgap", "tgap")
    video = video_tools.write_coded(tmp_path / "v.mp4", 20)
    assert main(["predict", str(model), str(video), "--report", str(tmp_path / "rep"), "--eager"]) == 0
    page = read_page(tmp_path / "rep" / page_name(video))
    check_self_contained(page)
    assert "no attention to show" in page.text and "attention to each temporal token" not in page.text


def test_predict_report_never_writes_into_a_foreign_folder(tmp_path, video_tools, capsys, predicted):
    from actionbert.cli import main

    model = predicted["root"] / "bert"
    video = video_tools.write_coded(tmp_path / "v.mp4", 20)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    assert main(["predict", str(model), str(video), "--report", str(folder)]) == 2
    assert "not an actionbert report folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    # an earlier report is replaced, stale pages of it removed
    old = tmp_path / "old"
    assert main(["predict", str(model), str(predicted["videos"][0]), "--report", str(old), "--eager"]) == 0
    assert main(["predict", str(model), str(video), "--report", str(old), "--eager"]) == 0
    assert sorted(p.name for p in old.iterdir()) == sorted(["index.html", page_name(video)])


def test_overlapping_windows_get_separate_lanes_and_the_chart_plots_the_json_values():
    span, hop = 1.6, 0.8
    segments = [{"start": round(i * hop, 3), "end": round(i * hop + span, 3), "label": "a", "score": 0.6,
                 "probabilities": {"a": 0.6, "b": 0.3 - 0.01 * i}, "attention": [0.2, 0.5]} for i in range(5)]
    segments.append({"start": 3.6, "end": 5.2, "label": "b", "score": 0.5, "probabilities": {"a": 0.4, "b": 0.5},
                     "attention": [0.4, 0.4]})  # the last window, flush with the end
    lanes = window_lanes(segments)
    assert lanes == [0, 1, 0, 1, 0, 2]  # the last window overlaps windows 3 and 4
    for i, (s, lane) in enumerate(zip(segments, lanes)):
        for t, other in zip(segments[i + 1:], lanes[i + 1:]):
            if other == lane:
                assert t["start"] >= s["end"]  # nothing overlaps within a lane: no colour stacking
    assert window_lanes([{"start": 0.0, "end": 1.0}, {"start": 1.0, "end": 2.0}]) == [0, 0]
    fig = timeline_figure(segments, duration=5.2)
    prob = fig.axes[0]
    assert prob.get_ylim() == (0.0, 1.0) and prob.get_xlim() == (0.0, 5.2)
    assert [t.get_text() for t in prob.get_legend().get_texts()] == ["a", "b"]
    centres = [(s["start"] + s["end"]) / 2 for s in segments]
    for line, name in zip(prob.get_lines(), ["a", "b"]):
        assert list(line.get_xdata()) == pytest.approx(centres)
        assert list(line.get_ydata()) == pytest.approx([s["probabilities"][name] for s in segments])
    strip = fig.axes[1]
    assert strip.get_ylim() == (3.0, 0.0)  # three lanes
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------------------------------------- eval
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from actionbert.data import make_synthetic_dataset, prepare_dataset
    from actionbert.evaluate import evaluate

    root = tmp_path_factory.mktemp("eval")
    raw = make_synthetic_dataset(root / "videos", num_classes=3, videos_per_class=4, num_frames=20, size=(48, 64),
                                 clip_len=16, seed=2)
    prepare_dataset(raw, root / "prepared", val_fraction=0.5, seed=0)
    classes = (root / "prepared" / "classes.txt").read_text().split()
    model = _model(root / "model", "bert", classes)
    report = evaluate(model, data=root / "prepared", split="val", views="1x1", temporal_check=True,
                      out=root / "out", fast=False)
    return root / "out", report


def test_eval_page_shows_the_report_numbers(evaluated):
    out, _ = evaluated
    report = json.loads((out / "report.json").read_text())
    page = read_page(out / "report.html")
    check_self_contained(page)
    v = report["video"]
    overall = dict(page.tables["overall"])
    assert overall["video top-1"] == f"{v['top1']:.2f}%"
    assert overall["mean class accuracy"] == f"{v['mean_class_accuracy']:.2f}%"
    assert overall[f"clip top-1 ({report['clip']['num_clips']} clips)"] == f"{report['clip']['top1']:.2f}%"
    per_class = [[c["class"], str(c["support"]), "-" if c["precision"] is None else f"{c['precision']:.2f}%",
                  "-" if c["recall"] is None else f"{c['recall']:.2f}%"] for c in v["per_class"]]
    assert page.tables["per-class"] == per_class
    tc = report["temporal_check"]
    assert page.tables["temporal"] == [[o, f"{tc[o]['top1']:.2f}%", f"{tc[o]['clip_top1']:.2f}%"]
                                       for o in ("original", "reversed", "shuffled")]
    assert f"{tc['order_dependence']:+.2f} points" in page.text
    assert sum(src.startswith("data:image/png") for src in page.images) == 1  # the confusion matrix


def test_eval_page_lists_the_misclassified_videos_with_thumbnails(evaluated):
    out, _ = evaluated
    with open(out / "predictions.csv", newline="") as f:
        wrong = [r for r in csv.DictReader(f) if r["label"] != r["predicted"]]
    assert wrong  # an untrained model: most videos are wrong
    page = read_page(out / "report.html")
    rows = page.tables["misclassified"]
    assert [r[1:] for r in rows] == [[w["video_id"], w["label"], f"{float(w['label_probability']):.3f}",
                                      w["predicted"], f"{float(w['predicted_probability']):.3f}"] for w in wrong]
    assert page.row_images["misclassified"] == [1] * len(wrong)
    for w in wrong:
        assert float(w["predicted_probability"]) >= float(w["label_probability"])


# --------------------------------------------------------------------------------------- ablation / demo
def _fake_run(run: Path, *, recall: list[float | None], matrix: list[list[int]], top1: float) -> None:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "val_loss", "train_top1", "val_top1"])
        w.writeheader()
        w.writerows([{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1), "train_top1": 50 + e,
                      "val_top1": top1 - 2 + e} for e in range(3)])
    (run / "eval").mkdir()
    per_class = [{"class": c, "support": 2, "precision": 50.0, "recall": r} for c, r in zip(["x", "y"], recall)]
    (run / "eval" / "report.json").write_text(json.dumps(
        {"classes": ["x", "y"], "video": {"top1": top1, "per_class": per_class, "confusion_matrix": matrix}}))


def test_ablation_page_from_the_run_folders(tmp_path):
    folder = tmp_path / "abl"
    recalls = {"head-tgap": [[50.0, 100.0], [100.0, None]], "head-bert": [[100.0, 50.0], [50.0, 0.0]]}
    for name, seeds in recalls.items():
        for k, r in enumerate(seeds):
            _fake_run(folder / name / f"seed{k}", recall=r, matrix=[[1, 1], [0, 2]], top1=70.0 + k)
    (folder / "ablation.csv").write_text("head,top1_mean,top1_std,seeds\ntgap,70.5,0.71,2\nbert,70.5,0.71,2\n")
    md = tmp_path / "REPORT.md"
    md.write_text("# Demo title\n\nWhat ran, with `code`.\n\n## Ablation\n\n| a | b |\n|---|---|\n\n"
                  "## Runs\n\n### head-tgap/seed0\n\n![c](x.png)\n\nnot this\n")
    page = read_page(write_ablation_page(folder, tmp_path / "report.html", markdown=md,
                                         order=["head-tgap", "head-bert"]))
    check_self_contained(page)
    assert "<h1>Demo title</h1>" in page.text and "<code>code</code>" in page.text and "not this" not in page.text
    assert page.tables["ablation"] == [["tgap", "70.5 \u00b1 0.71", "2"], ["bert", "70.5 \u00b1 0.71", "2"]]

    def cell(values):
        values = [v for v in values if v is not None]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.1f} \u00b1 {std:.1f}"

    expected = [[c, *(cell([seed[i] for seed in recalls[g]]) for g in ("head-tgap", "head-bert"))]
                for i, c in enumerate(["x", "y"])]
    assert page.tables["per-class"] == expected
    assert expected[1][1] == "100.0 \u00b1 0.0"  # a seed without a value for the class is left out
    # charts: per-class bars, training curves, one confusion matrix per grid point
    assert sum(src.startswith("data:image/png") for src in page.images) == 4
    assert 'alt="confusion matrix head-tgap"' in page.text and 'alt="confusion matrix head-bert"' in page.text

