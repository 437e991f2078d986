"""Trust, predict side (issue 11 items 3, 9, 15, 16): distinct timeline files, exit codes and failed videos in
the CSV, refused options, caveats in predictions, and model folders / checkpoints checked when loaded."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from actionbert.checkpoint import CheckpointError, load_model, save_checkpoint
from actionbert.cli import main
from conftest import TINY_CLASSES
from actionbert.plots import timeline_names
from actionbert.predict import Predictor

CLASSES = TINY_CLASSES


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="module")
def videos(tmp_path_factory, video_tools) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("predict_videos")
    w = video_tools.write_coded
    return {"a": w(d / "a" / "demo.mp4", 20), "b": w(d / "b" / "demo.mp4", 24), "short": w(d / "short.mp4", 5),
            "bad": _bad(d / "bad.mp4")}


def _bad(path: Path) -> Path:
    path.write_bytes(b"not a video at all" * 10)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI (`predict` eagerly: the prepared fast path is tested elsewhere and compiles slowly)."""
    capsys.readouterr()
    argv = [str(a) for a in argv] + (["--eager"] if argv[0] == "predict" and "--eager" not in argv else [])
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------ item 3: plot names
def test_plots_of_videos_with_the_same_stem_do_not_collide(model_dir, videos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(videos["a"].parent.parent)
    plots = tmp_path / "plots"
    code, _, err = _run(capsys, "predict", model_dir, "a/demo.mp4", "b/demo.mp4", "--plot", plots, "--json",
                        "--device", "cpu", "--eager")
    assert code == 0 and "replaced" not in err
    assert sorted(p.name for p in plots.iterdir()) == ["a_demo_timeline.png", "b_demo_timeline.png"]
    first = (plots / "a_demo_timeline.png").read_bytes()
    code, _, err = _run(capsys, "predict", model_dir, "b/demo.mp4", "--plot", plots, "--device", "cpu")
    assert code == 0 and err.strip() == f"b/demo.mp4: timeline {plots / 'b_demo_timeline.png'} (replaced the " \
                                        f"existing file)"  # the same video: same name, and said
    assert sorted(p.name for p in plots.iterdir()) == ["a_demo_timeline.png", "b_demo_timeline.png"]
    assert (plots / "a_demo_timeline.png").read_bytes() == first


def test_timeline_names_are_distinct_readable_and_stable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert timeline_names(["walk.mp4", "x/run.mp4"]) == ["walk_timeline.png", "x_run_timeline.png"]
    assert timeline_names(["x/run.mp4"]) == ["x_run_timeline.png"]  # whatever else is in the list
    assert timeline_names(["/data/v/a b.mp4"]) == ["data_v_a_b_timeline.png"]  # outside the working folder
    names = timeline_names(["demo.mp4", "demo.mp4", "a_b/demo.mp4", "a/b_demo.mp4", "c/d?e.mp4", "c/d?e.avi"])
    assert len(set(names)) == 6 and names[1] == names[0].replace("_timeline", "-2_timeline")
    assert names[0] == "demo_timeline.png" and names[2].startswith("a_b_demo-") and names[3].startswith("a_b_demo-")
    assert names[4].startswith("c_d_e-") and names[5].startswith("c_d_e-")
    long = timeline_names(["/" + "v" * 300 + ".mp4"])[0]
    assert len(long) < 130 and long.endswith("_timeline.png")


# ------------------------------------------------------------------------------ item 15: exit codes, CSV
def test_predict_exits_1_when_a_video_failed_and_the_csv_lists_it(model_dir, videos, capsys):
    code, out, err = _run(capsys, "predict", model_dir, videos["a"], videos["bad"], "--csv", "--device", "cpu")
    assert code == 1 and "1 of 2 video(s) failed" in err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["video", "start", "end", "label", "score", "warning", "error"]
    failed = [r for r in rows if r["error"]]
    assert [r["video"] for r in failed] == [str(videos["bad"])] and "bad.mp4" in failed[0]["error"]
    assert all(r["label"] in CLASSES and not r["error"] for r in rows if r["video"] == str(videos["a"]))
    code, out, _ = _run(capsys, "predict", model_dir, videos["a"], videos["b"], "--json", "--device", "cpu")
    assert code == 0 and all(r["error"] is None for r in json.loads(out))


@pytest.mark.parametrize("option, value", [("--topk", "0"), ("--topk", "-2"), ("--hop", "0"), ("--hop", "-1"),
                                           ("--batch-size", "0")])
def test_non_positive_topk_and_hop_are_refused_with_one_line(model_dir, videos, option, value, capsys):
    code, out, err = _run(capsys, "predict", model_dir, videos["a"], option, value, "--device", "cpu")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: {option} must be >= 1, got {value}"]


def test_predictor_refuses_hop_zero_and_topk_zero(model_dir, videos):
    model, info = load_model(model_dir)
    with pytest.raises(ValueError, match="hop must be >= 1"):
        Predictor(model, info, hop=0, fast=False)
    with pytest.raises(ValueError, match="topk must be >= 1"):
        Predictor(model, info, fast=False).predict(videos["a"], topk=0)


# -------------------------------------------------------------------------- item 9: caveats in predictions
def test_short_and_truncated_videos_are_predicted_with_a_warning(model_dir, videos, video_tools, tmp_path):
    model, info = load_model(model_dir)
    predictor = Predictor(model, info, fast=False)
    short = predictor.predict(videos["short"])
    assert short.error is None and short.topk
    assert short.warning == "short: 5 frames looped to fill a 8-frame clip"
    assert short.to_dict()["warning"] == short.warning
    full = video_tools.write_coded(tmp_path / "full.mkv", 16)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # Matroska states a duration, no count
    pred = predictor.predict(cut)
    assert pred.error is None and pred.topk
    assert pred.warning == f"truncated: decoded {pred.num_frames} of 16 frames" and 4 <= pred.num_frames < 12
    assert predictor.predict(full).warning is None and predictor.predict(videos["a"]).warning is None


# ------------------------------------------------------------------------------- item 16: model checks
def _copy_folder(model_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in model_dir.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def _edit_weights(folder: Path, change) -> None:
    state = load_file(folder / "model.safetensors")
    save_file({k: change(k, v).contiguous() for k, v in state.items()}, folder / "model.safetensors")


def _edit_config(folder: Path, **changes) -> None:
    """Change keys of config.json; those of the preprocessing record are changed inside it."""
    config = json.loads((folder / "config.json").read_text())
    record = config["preprocessing"]
    for key, value in changes.items():
        (record if key in ("resize", "norm", "frame_stride") else config)[key] = value
    (folder / "config.json").write_text(json.dumps(config))


BAD_FOLDERS = {
    "bool weights": (lambda f: _edit_weights(f, lambda k, v: v.bool()), "model.safetensors", "wrong type"),
    "int64 weights": (lambda f: _edit_weights(f, lambda k, v: v.long()), "model.safetensors", "wrong type"),
    "nan weight": (lambda f: _edit_weights(f, lambda k, v: v.fill_(float("nan")) if k == "fc.weight" else v),
                   "model.safetensors", "NaN or infinite values (fc.weight)"),
    "inf weight": (lambda f: _edit_weights(f, lambda k, v: v.fill_(float("inf")) if k.endswith("running_var")
                                           else v), "model.safetensors", "NaN or infinite"),
    "classes short": (lambda f: _edit_config(f, classes=["walk", "run"]), "config.json",
                      "'classes' lists 2 names but the classifier has 3 outputs"),
    "classes long": (lambda f: _edit_config(f, classes=CLASSES + ["sit"]), "config.json",
                     "'classes' lists 4 names but the classifier has 3 outputs"),
    "resize zero": (lambda f: _edit_config(f, resize=[0, 0]), "config.json", "'resize' must be [height, width]"),
    "resize huge": (lambda f: _edit_config(f, resize=[100000, 100000]), "config.json", "(1..4096)"),
    "resize below crop": (lambda f: _edit_config(f, resize=[16, 20]), "config.json",
                          "smaller than the 32-pixel crop"),
    "resize text": (lambda f: _edit_config(f, resize="big"), "config.json", "'resize' must be"),
    "input size": (lambda f: _edit_config(f, input_size=0), "config.json", "'input_size' is 0"),
    "norm": (lambda f: _edit_config(f, norm="imagenet"), "config.json", "'norm' must be one of"),
    "clip_len zero": (lambda f: _edit_config(f, clip_len=0, model={**json.loads((f / "config.json").read_text())[
        "model"], "clip_len": 0}), "config.json", "the model config cannot build a model (clip_len must be >= 1"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_a_damaged_model_folder_is_refused_naming_the_file_and_the_problem(case, model_dir, tmp_path):
    damage, file_name, words = BAD_FOLDERS[case]
    folder = _copy_folder(model_dir, tmp_path / "m")
    damage(folder)
    with pytest.raises(CheckpointError) as caught:
        load_model(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / file_name) + ": ") and words in message, message


def test_a_training_checkpoint_with_nan_weights_is_refused(model_dir, tmp_path):
    model, info = load_model(model_dir)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.cls_token"] = torch.full_like(state["head.cls_token"], float("nan"))
    save_checkpoint(tmp_path / "best.pt", {"epoch": 1, "model_state": state, "inference": info})
    with pytest.raises(CheckpointError, match=r"best\.pt: 1 weight tensor\(s\) hold NaN .*head\.cls_token"):
        load_model(tmp_path / "best.pt")


def test_predict_with_a_damaged_model_is_one_error_line_not_a_video_error(model_dir, videos, tmp_path, capsys):
    folder = _copy_folder(model_dir, tmp_path / "m")
    _edit_config(folder, resize=[8, 8])
    code, out, err = _run(capsys, "predict", folder, videos["a"], "--device", "cpu")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: {folder / 'config.json'}: 'resize' [8, 8] is smaller than the "
                                        f"32-pixel crop ('crop_size')"]
