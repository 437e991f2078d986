"""Training, resume, evaluation, prediction and ablation on tiny synthetic videos the tests write themselves."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from actionbert.ablate import AblationRow, parse_grid, run_ablation
from actionbert.checkpoint import load_checkpoint, load_model
from actionbert.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from actionbert.data import make_synthetic_dataset, prepare_dataset
from actionbert.data.synthetic import write_video
from actionbert.evaluate import Views, evaluate, select_windows
from actionbert.predict import Predictor
from actionbert.preprocessing import Resize
from actionbert.train import TrainHooks, train

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wf")
    raw = make_synthetic_dataset(root / "videos", num_classes=NUM_CLASSES, videos_per_class=4, num_frames=20,
                                 size=(48, 64), clip_len=16, seed=1)
    prepare_dataset(raw, root / "prepared", val_fraction=0.25, seed=0, cache=True, cache_resize=Resize(36, 48))
    return root / "prepared"


def tiny_config(prepared: Path, out: Path, **train_kw) -> RunConfig:
    return RunConfig(
        model=ModelConfig(backbone="r2plus1d_tiny", head="bert", num_classes=0, clip_len=16, input_size=32),
        data=DataConfig(root=str(prepared), resize=(36, 48), num_workers=0),
        train=TrainConfig(out=str(out), **{"epochs": 2, "batch_size": 4, "lr": 1e-3, **train_kw}),
    )


def state_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model_state"]


def test_train_writes_a_complete_run_folder(prepared, tmp_path):
    steps = []
    result = train(tiny_config(prepared, tmp_path / "run"), hooks=TrainHooks(on_step=steps.append))
    run = result.run_dir
    for name in ("config.yaml", "classes.txt", "metrics.csv", "last.pt", "best.pt", "curves.png"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and float(rows[0]["clips_per_s"]) > 0
    ckpt = load_checkpoint(run / "last.pt")  # weights_only=True
    assert {"model_state", "optimizer", "scheduler", "scaler", "rng", "config", "inference", "epoch"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["config"]["model"]["num_classes"] == NUM_CLASSES
    assert ckpt["inference"]["classes"] == (run / "classes.txt").read_text().split()
    assert steps and steps[-1]["step"] == steps[-1]["steps"] == 3  # 12 training clips / batch 4
    assert result.best_top1 == max(float(r["val_top1"]) for r in rows)


def test_resume_after_a_kill_gives_the_same_weights(prepared, tmp_path):
    cfg = tiny_config(prepared, tmp_path / "full", epochs=3)
    train(cfg)

    class Killed(Exception):
        pass

    def kill_after_epoch_1(row):
        if row["epoch"] == 1:
            raise Killed  # the process dies right after epoch 1's checkpoint was written

    cut = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out=str(tmp_path / "cut")))
    with pytest.raises(Killed):
        train(cut, hooks=TrainHooks(on_epoch_end=kill_after_epoch_1))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    train(cut, resume=True)
    full, resumed = state_of(tmp_path / "full" / "last.pt"), state_of(tmp_path / "cut" / "last.pt")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    a = list(csv.DictReader(open(tmp_path / "full" / "metrics.csv")))
    b = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


def test_resume_without_checkpoint_is_a_clear_error(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny_config(prepared, tmp_path / "none"), resume=True)


def test_a_broken_video_is_reported_and_skipped_not_replaced(prepared, tmp_path):
    data = tmp_path / "prepared"
    shutil.copytree(prepared, data)
    rows = list(csv.DictReader(open(data / "train.csv")))
    victim = rows[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)  # truncated nonsense
    for r in rows:
        if r["video_id"] == victim["video_id"]:
            r["path"] = str(broken)
    with open(data / "train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    shutil.rmtree(data / "cache")  # force decoding from the (now broken) file
    failures, seen = [], []
    result = train(tiny_config(data, tmp_path / "run", epochs=1),
                   hooks=TrainHooks(on_failure=lambda vid, reason: failures.append((vid, reason)),
                                    on_step=seen.append))
    assert failures and failures[0][0] == victim["video_id"] and "broken.mp4" in failures[0][1]
    assert result.failures == 1
    metrics = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert metrics[0]["failures"] == "1"


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_config(prepared, out, epochs=1))
    return out / "best.pt"


def test_evaluate_report(prepared, trained, tmp_path):
    report = evaluate(trained, data=prepared, split="val", temporal_check=True, out=tmp_path / "eval")
    v = report["video"]
    assert report["evaluated_videos"] == report["num_videos"] == 4
    assert report["views"]["mean_views_per_video"] == 10  # 20 frames, 16-frame windows: 1 window x 10 crops
    assert v["top5_k"] == NUM_CLASSES and v["top5"] == 100.0  # top-k clamped to the class count
    cm = torch.tensor(v["confusion_matrix"])
    assert cm.sum() == 4 and cm.trace() / 4 * 100 == pytest.approx(v["top1"])
    tc = report["temporal_check"]
    assert tc["order_dependence"] == pytest.approx(tc["original"]["top1"] - tc["shuffled"]["top1"])
    assert sorted(tc["shuffle_permutation"]) == list(range(16))
    for name in ("report.json", "confusion.csv", "confusion.png", "predictions.csv", "report.html"):
        assert (tmp_path / "eval" / name).is_file()
    one = evaluate(trained, data=prepared, split="val", views="1x1")
    assert one["views"]["mean_views_per_video"] == 1
    five = evaluate(trained, data=prepared, split="val", views="all", workers=1)
    assert five["views"]["mean_views_per_video"] == 10 and not five["notes"]


def test_no_mirrored_views_for_a_model_trained_without_flips(prepared, tmp_path):
    train(dataclasses.replace(tiny_config(prepared, tmp_path / "noflip", epochs=1),
                              data=DataConfig(root=str(prepared), resize=(36, 48), num_workers=0, hflip=0.0)))
    report = evaluate(tmp_path / "noflip" / "best.pt", data=prepared, split="val", workers=1)
    assert report["views"]["crops"] == 5 and report["views"]["mean_views_per_video"] == 5
    assert "mirrored views left out" in report["notes"][0]


def test_evaluate_mean_of_raw_logits_matches_manual(prepared, trained):
    """Video logits are the mean of raw logits over the 10 crops, checked against a direct computation."""
    from actionbert.data import VideoClipDataset, load_split
    from actionbert.preprocessing import Preprocessing

    model, info = load_model(trained)
    samples, classes = load_split(prepared, "val")
    ds = VideoClipDataset(samples, preprocessing=Preprocessing.from_info(info), mode="test")
    with torch.no_grad():
        preds = [classes[int(model(ds[i]["video"]).mean(0).argmax())] for i in range(len(ds))]
    report = evaluate(trained, data=prepared, split="val")
    assert [p["predicted"] for p in report["predictions"]] == preds


def test_views_parsing_and_window_selection():
    assert Views.parse("all") == Views(0, 10) and Views.parse("3x1") == Views(3, 1)
    assert Views.parse("0x5") == Views(0, 5)
    with pytest.raises(ValueError, match="crops must be 1, 5 or 10"):
        Views.parse("2x4")
    assert select_windows(5, 0) == [0, 1, 2, 3, 4] and select_windows(5, 1) == [2]
    assert select_windows(5, 3) == [0, 2, 4] and select_windows(2, 5) == [0, 1]


def _long_video(path: Path, frames: int) -> Path:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 255, (frames, 48, 64, 3), generator=g, dtype=torch.uint8).numpy()
    write_video(path, pixels, fps=10)
    return path


def test_predict_timeline_short_video_and_broken_file(trained, tmp_path):
    model, info = load_model(trained)
    predictor = Predictor(model, info, hop=8)
    long = predictor.predict(_long_video(tmp_path / "long.mp4", 60), topk=3)
    assert long.error is None and long.num_frames == 60
    starts = [s["start_frame"] for s in long.segments]
    assert starts == [0, 8, 16, 24, 32, 40, 44]  # hop 8, plus one window flush with the end (60 - 16)
    assert all(len(s["attention"]) == 2 for s in long.segments)  # T' = 16 / 8 tokens
    assert long.segments[1]["start"] == pytest.approx(0.8) and long.segments[-1]["end"] == pytest.approx(6.0)
    assert len(long.topk) == 3 and sum(p for _, p in long.topk) <= 1.0
    short = predictor.predict(_long_video(tmp_path / "short.mp4", 5))
    assert short.error is None and [s["start_frame"] for s in short.segments] == [0]  # circular padding
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    bad = predictor.predict(tmp_path / "bad.mp4")
    assert bad.error and "bad.mp4" in bad.error and not bad.topk


def test_predict_decodes_a_video_once(trained, tmp_path, monkeypatch):
    from actionbert.data import decode

    path = _long_video(tmp_path / "long.mp4", 40)
    expected = decode.probe(path)
    opens = []
    original_open = decode._open
    monkeypatch.setattr(decode, "_open", lambda *a, **k: opens.append(a[0]) or original_open(*a, **k))
    model, info = load_model(trained)
    pred = Predictor(model, info).predict(path)
    assert opens == [path]  # no separate probing pass: one pass streams the frames and measures the video
    assert (pred.num_frames, pred.fps) == (expected.num_frames, expected.fps) == (40, 10.0)
    assert [(s["start"], s["end"]) for s in pred.segments] == [(0.0, 1.6), (1.6, 3.2), (2.4, 4.0)]


def test_predict_uses_checkpoint_settings(trained, tmp_path):
    model, info = load_model(trained)
    p = Predictor(model, info)
    assert (p.clip_len, p.span, p.hop) == (16, 16, 16)
    assert p.transform.crop_size == 32 and p.transform.resize == Resize(36, 48) and p.transform.norm == "torchvision"


def test_ablation_table(prepared, tmp_path):
    base = tiny_config(prepared, tmp_path / "abl", epochs=1)
    grid = parse_grid(["head=tgap,bert"])
    assert grid == {"model.head": ["tgap", "bert"]}

    def eval_fn(run_dir, cfg):
        r = evaluate(run_dir / "best.pt", data=prepared, split="val", views="1x1")
        return {"top1": r["video"]["top1"], "predictions": r["predictions"]}

    rows = run_ablation(base, grid, seeds=2, out=tmp_path / "abl", train_fn=train, eval_fn=eval_fn)
    assert [r.values["model.head"] for r in rows] == ["tgap", "bert"]
    assert all(len(r.top1) == 2 and r.gflops > 0 for r in rows)
    assert rows[1].params - rows[0].params > 0  # BERT adds parameters
    table = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| head | top1_mean | top1_std |" in table
    runs = list(csv.DictReader(open(tmp_path / "abl" / "runs.csv")))
    assert len(runs) == 4 and {r["seed"] for r in runs} == {"0", "1"} and "predictions" not in runs[0]
    # the paired comparison of the heads on the same validation videos and seeds
    written = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    top1, mca = written["comparisons"]
    assert (top1["factor"], top1["a"], top1["b"], top1["metric"], mca["metric"]) == (
        "model.head", "tgap", "bert", "top1", "mean_class_accuracy")
    assert (top1["videos"], top1["seeds"]) == (NUM_CLASSES, 2)  # one validation video per class
    mean = {r.values["model.head"]: sum(r.top1) / len(r.top1) for r in rows}
    assert top1["diff"] == pytest.approx(mean["bert"] - mean["tgap"], abs=1e-3)
    assert top1["ci95"][0] <= top1["diff"] <= top1["ci95"][1]
    assert "## Paired comparisons" in table and f"- {top1['verdict']}" in table
    from html_checks import check_self_contained, read_page

    page = read_page(tmp_path / "abl" / "report.html")
    check_self_contained(page)
    assert [r[0] for r in page.tables["ablation"]] == ["tgap", "bert"] and page.images


def test_fine_tune_from_pretrained_folder_with_other_classes(prepared, tmp_path):
    from actionbert import build_model
    from actionbert.checkpoint import inference_config, save_pretrained

    source = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=7, clip_len=16, input_size=32)
    save_pretrained(source, tmp_path / "pre", info=inference_config(source, classes=[f"c{i}" for i in range(7)],
                                                                    norm="torchvision"))
    messages = []
    cfg = tiny_config(prepared, tmp_path / "ft", epochs=1, pretrained=str(tmp_path / "pre"),
                      pretrained_source="actionbert", lr=1e-12)
    train(cfg, hooks=TrainHooks(on_message=messages.append))
    assert messages and "skipped" in messages[0] and "fc." in messages[0]
    tuned = state_of(tmp_path / "ft" / "last.pt")
    # with a vanishing learning rate the backbone still holds the pretrained weights; the classifier is new
    torch.testing.assert_close(tuned["backbone.stem.0.weight"], source.state_dict()["backbone.stem.0.weight"])
    assert tuned["fc.weight"].shape == (NUM_CLASSES, 128)


@pytest.mark.slow
def test_cli_walks_the_whole_workflow(tmp_path, capsys):
    """clips -> prepare -> train -> resume -> eval -> predict -> ablate, through the command line."""
    from actionbert.cli import main

    long = make_synthetic_dataset(tmp_path / "long", num_classes=2, videos_per_class=2, num_frames=48,
                                  size=(48, 64), clip_len=None, seed=5)
    for cls in ("red_then_blue", "blue_then_red"):
        videos = sorted(str(p) for p in (long / cls).glob("*.mp4"))
        assert main(["clips", *videos, "--out", str(tmp_path / "clips" / cls), "--method", "fixed",
                     "--length", "0.96"]) == 0  # 24-frame windows at 25 fps
    assert len(list((tmp_path / "clips").rglob("*.mp4"))) == 8
    assert main(["prepare", str(tmp_path / "clips"), "--out", str(tmp_path / "prep"), "--val-fraction", "0.5",
                 "--cache", "--resize", "36x48"]) == 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: {{backbone: r2plus1d_tiny, head: bert, clip_len: 16, input_size: 32}}
data: {{root: {tmp_path / 'prep'}, resize: [36, 48], num_workers: 0}}
train: {{out: {tmp_path / 'run'}, epochs: 1, batch_size: 2, lr: 1.0e-3}}
""")
    assert main(["train", str(cfg), "--quiet"]) == 0
    assert main(["train", str(cfg), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert main(["eval", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "prep"), "--temporal-check",
                 "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["evaluated_videos"] == 4
    capsys.readouterr()
    video = next((long / "red_then_blue").glob("*.mp4"))
    assert main(["predict", str(tmp_path / "run" / "best.pt"), str(video), "--json", "--plot",
                 str(tmp_path / "plots")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["num_frames"] == 48 and len(out[0]["segments"]) == 3  # 0, 16, 32
    assert list((tmp_path / "plots").glob("*.png"))
    assert main(["ablate", str(cfg), "--grid", "head=tgap,bert", "--seeds", "1", "--views", "1x1",
                 "--out", str(tmp_path / "abl"), "--quiet"]) == 0
    assert "| tgap |" in (tmp_path / "abl" / "ablation.md").read_text()
    compared = json.loads((tmp_path / "abl" / "ablation.json").read_text())["comparisons"]
    assert [(c["a"], c["b"], c["videos"], c["seeds"]) for c in compared] == [("tgap", "bert", 4, 1)] * 2
    assert compared[0]["verdict"] in capsys.readouterr().out  # the verdicts are printed too


def test_predict_keeps_the_frames_before_a_decoder_error(trained, tmp_path, video_tools):
    model, info = load_model(trained)
    cut = video_tools.write_truncated_mp4(tmp_path / "cut.mp4", 60)
    pred = Predictor(model, info).predict(cut)
    assert pred.error is None and pred.topk and pred.segments
    assert "cut.mp4" in pred.warning and "frames before it" in pred.warning


def test_early_stopping_ends_the_run(prepared, tmp_path):
    # lr 0 and frozen BatchNorm statistics: the model never changes, validation top-1 cannot improve after
    # epoch 0, so patience 1 stops after epoch 1
    result = train(tiny_config(prepared, tmp_path / "es", epochs=5, lr=0.0, early_stopping=1, freeze_bn=True))
    assert [r["epoch"] for r in result.history] == [0, 1] and result.best_epoch == 0


def test_fast_inference_path_matches_the_eager_model(prepared, trained, tmp_path):
    fast = evaluate(trained, data=prepared, split="val", views="1x1")
    eager = evaluate(trained, data=prepared, split="val", views="1x1", fast=False)
    pick = [{k: p[k] for k in ("video_id", "label", "predicted")} for p in fast["predictions"]]
    assert pick == [{k: p[k] for k in ("video_id", "label", "predicted")} for p in eager["predictions"]]
    for p, q in zip(fast["predictions"], eager["predictions"], strict=True):
        assert p["probabilities"] == pytest.approx(q["probabilities"], abs=1e-4)
    model, info = load_model(trained)
    video = _long_video(tmp_path / "v.mp4", 40)
    a = Predictor(model, info).predict(video)
    b = Predictor(model, info, fast=False).predict(video)
    assert [s["label"] for s in a.segments] == [s["label"] for s in b.segments]
    for x, y in zip(a.segments, b.segments):
        assert x["score"] == pytest.approx(y["score"], abs=1e-3)
        assert x["attention"] == pytest.approx(y["attention"], abs=1e-3)


def test_demo_never_wipes_a_folder_it_did_not_make(tmp_path):
    from actionbert.demo import DemoConfig, run_demo

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an actionbert demo folder"):
        run_demo(DemoConfig(out=str(tmp_path)))
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_tiny_demo_runs_end_to_end_and_can_run_again(tmp_path):
    from actionbert.demo import DemoConfig, run_demo

    demo = DemoConfig(out=str(tmp_path / "demo"), seeds=1, epochs=1, videos_per_class=4, precision="fp32", workers=0,
                      classes=("red_then_blue", "blue_then_red", "slide_left", "slide_right"))
    report = run_demo(demo)
    text = report.read_text()
    assert "| tgap |" in text and "| bert |" in text and "## Per-class recall" in text
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert list(summary) == ["seeds", "seconds", "order_only", "control", "all"] and summary["seeds"] == 1
    assert all(list(summary[g]) == ["tgap", "bert"] and summary[g]["bert"]["std"] is None
               for g in ("order_only", "control", "all"))
    assert (tmp_path / "demo" / "per_class.png").is_file()
    written = json.loads((tmp_path / "demo" / "ablation.json").read_text())
    top1 = written["comparisons"][0]
    mean = {row["head"]: row["top1_mean"] for row in written["table"]}
    assert (top1["a"], top1["b"], top1["metric"]) == ("tgap", "bert", "top1")
    assert top1["diff"] == pytest.approx(mean["bert"] - mean["tgap"], abs=0.02)  # the verdict is about these
    assert "## Paired comparison of the heads" in text and top1["verdict"] in text
    assert list(written["class_groups"]) == ["order-only classes", "control classes"]
    assert written["class_groups"]["order-only classes"]["comparisons"][0]["videos"] == top1["videos"] / 2
    _check_demo_page(report)
    assert run_demo(demo).is_file()  # a second run replaces the folder it made


def test_demo_class_groups_and_their_comparisons():
    from actionbert.data.synthetic import class_groups
    from actionbert.demo import group_comparisons

    classes = ["red_then_blue", "blue_then_red", "slide_left", "ring"]
    assert class_groups(classes) == {"order_only": classes[:2], "control": classes[2:], "all": classes}
    ids = [f"v{i}" for i in range(8)]
    labels = [classes[i % 4] for i in range(8)]  # v0 red_then_blue, v1 blue_then_red, v2 slide_left, v3 ring, ...
    tgap = [{"video_id": v, "label": y, "predicted": y if i % 4 >= 2 else "ring"} for i, (v, y) in
            enumerate(zip(ids, labels))]  # right on the control classes only
    bert = [{"video_id": v, "label": y, "predicted": y} for v, y in zip(ids, labels)]  # right everywhere
    rows = [AblationRow({"model.head": "tgap"}, predictions=[tgap]), AblationRow({"model.head": "bert"},
                                                                                 predictions=[bert])]
    groups = group_comparisons(rows, classes)
    diffs = {name: g["comparisons"][0]["diff"] for name, g in groups.items()}
    assert diffs == {"all classes": 50.0, "order-only classes": 100.0, "control classes": 0.0}
    assert groups["order-only classes"]["comparisons"][0]["videos"] == 4


def _check_demo_page(report: Path) -> None:
    """report.html beside REPORT.md: self-contained, small, with the numbers of ablation.json; every run's
    eval/report.html self-contained too."""
    from html_checks import check_self_contained, read_page

    html = report.with_name("report.html")
    page = read_page(html)
    check_self_contained(page)
    table = json.loads((report.parent / "ablation.json").read_text())["table"]
    assert [r[0] for r in page.tables["ablation"]] == [r["head"] for r in table] == ["tgap", "bert"]
    assert [r[1] for r in page.tables["ablation"]] == [f"{r['top1_mean']} \u00b1 {r['top1_std']}" for r in table]
    assert len(page.tables["per-class"]) == 4 and html.stat().st_size < 600_000
    for run in (report.parent / "ablation").glob("*/seed*/eval"):
        check_self_contained(read_page(run / "report.html"))
