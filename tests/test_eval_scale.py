"""Evaluation at scale (issue 13): one line per video in `eval --out`, continued after a kill with every video once
and the report of an evaluation that ran through; other settings, a finished folder and --overwrite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actionbert.checkpoint import inference_config, save_pretrained
from actionbert.cli import main
from actionbert.evaluate import evaluate
from actionbert.models import build_model

EVAL = dict(views="0x1", temporal_check=True, batch_size=4, workers=0, fast=False, device="cpu")
CLI = ["--views", "0x1", "--temporal-check", "--batch-size", "4", "--workers", "0", "--eager", "--device", "cpu"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Six validation videos of 3 windows each (8-frame clips of 24 frames), the fifth undecodable, and an
    untrained tiny model of their classes."""
    from actionbert.data import load_split, make_synthetic_dataset, prepare_dataset

    root = tmp_path_factory.mktemp("eval_scale")
    raw = make_synthetic_dataset(root / "videos", num_classes=3, videos_per_class=4, num_frames=24, size=(48, 64),
                                 clip_len=8, seed=3)
    prepare_dataset(raw, root / "prepared", val_fraction=0.5, seed=0, workers=0)
    samples, classes = load_split(root / "prepared", "val")
    assert len(samples) == 6
    Path(samples[4].path).write_bytes(b"not a video" * 30)
    torch.manual_seed(0)
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=3, clip_len=8, input_size=32).eval()
    info = inference_config(model, classes=list(classes), resize=(36, 48), norm="torchvision")
    return {"root": root, "data": root / "prepared", "model": save_pretrained(model, root / "model", info=info),
            "ids": [s.video_id for s in samples]}


@pytest.fixture(scope="module")
def reference(setup) -> dict:
    """An evaluation that ran through: its report and the lines of its results file."""
    out = setup["root"] / "reference"
    report = evaluate(setup["model"], data=setup["data"], out=out, **EVAL)
    return {"out": out, "report": report, "lines": _lines(out / "videos.jsonl")}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _eval(setup, out: Path, *extra: str) -> int:
    return main(["eval", str(setup["model"]), "--data", str(setup["data"]), "--out", str(out), *CLI, *extra])


class _Killed(Exception):
    pass


def _killed_run(setup, out: Path, batches: int = 2) -> list[dict]:
    """An evaluation into `out` that dies after `batches` batches; returns the records it left on disk."""
    def kill(done, total):
        kill.calls += 1
        if kill.calls == batches:
            raise _Killed

    kill.calls = 0
    with pytest.raises(_Killed):
        evaluate(setup["model"], data=setup["data"], out=out, resume=True, on_batch=kill, **EVAL)
    assert not (out / "report.json").exists()
    return _lines(out / "videos.jsonl")[1:]


def test_the_results_file_has_one_line_per_video_in_split_order(setup, reference):
    head, records = reference["lines"][0], reference["lines"][1:]
    assert head["settings"]["views"] == {"clips": 0, "crops": 1} and head["settings"]["temporal_check"]
    assert [r["video"] for r in records] == setup["ids"] and [r["index"] for r in records] == list(range(6))
    assert records[4]["error"] and records[4]["failed_windows"] == 3 and records[4]["mean_logits"] is None
    good = [r for i, r in enumerate(records) if i != 4]
    assert all(r["windows"] == 3 and r["views"] == 3 and len(r["clip_predicted"]) == 3 for r in good)
    rows = {p["video_id"]: p for p in reference["report"]["predictions"]}
    for r in good:  # the report's per-video scores are those of the lines
        assert rows[r["video"]]["logits"] == r["mean_logits"] and rows[r["video"]]["predicted"] == r["predicted"]
    assert reference["report"]["evaluated_videos"] == 5 and reference["report"]["clip"]["num_clips"] == 15


def test_a_killed_evaluation_continues_with_every_video_once_and_the_same_report(setup, reference, tmp_path):
    out = tmp_path / "cut"
    left = _killed_run(setup, out)  # batches of 4 windows: 8 windows scored, the first 2 videos complete
    assert [r["video"] for r in left] == setup["ids"][:2]
    started = []
    report = evaluate(setup["model"], data=setup["data"], out=out, resume=True,
                      on_start=lambda skipped, total: started.append((skipped, total)), **{**EVAL, "workers": 1})
    assert started == [(2, 6)]
    assert report == reference["report"]  # every number, to the last bit
    assert _lines(out / "videos.jsonl") == reference["lines"]  # each video exactly once, in split order
    assert json.loads((out / "report.json").read_text()) == json.loads((reference["out"] / "report.json").read_text())
    assert (out / "predictions.csv").read_text() == (reference["out"] / "predictions.csv").read_text()


def test_a_torn_last_line_is_dropped_and_the_cli_says_what_it_skipped(setup, reference, tmp_path, capsys):
    out = tmp_path / "torn"
    out.mkdir()
    text = (reference["out"] / "videos.jsonl").read_text().splitlines(keepends=True)
    (out / "videos.jsonl").write_text("".join(text[:4]) + text[4][:40])  # 3 videos, and a 4th cut mid-write
    assert _eval(setup, out) == 1  # the undecodable video
    assert "3 of 6 videos already evaluated, skipped" in capsys.readouterr().out
    assert _lines(out / "videos.jsonl") == reference["lines"]
    assert json.loads((out / "report.json").read_text()) == json.loads((reference["out"] / "report.json").read_text())


def test_a_continuation_with_other_settings_is_refused_and_changes_nothing(setup, tmp_path, capsys):
    out = tmp_path / "other"
    _killed_run(setup, out)
    before = (out / "videos.jsonl").read_bytes()
    assert _eval(setup, out, "--views", "0x5") == 2  # the later --views wins
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "other settings (views differ)" in err and "--overwrite" in err
    assert (out / "videos.jsonl").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["videos.jsonl"]


def test_overwrite_starts_afresh(setup, tmp_path, capsys):
    out = tmp_path / "fresh"
    _killed_run(setup, out)
    assert _eval(setup, out, "--views", "1x1", "--overwrite") == 1
    assert "already evaluated" not in capsys.readouterr().out
    lines = _lines(out / "videos.jsonl")
    assert lines[0]["settings"]["views"] == {"clips": 1, "crops": 1}
    assert [r["video"] for r in lines[1:]] == setup["ids"] and all(r["windows"] <= 1 for r in lines[1:])
    assert json.loads((out / "report.json").read_text())["views"]["clips_per_video"] == 1


def test_a_finished_evaluation_is_refused_without_overwrite(setup, reference, tmp_path, capsys):
    out = tmp_path / "done"
    assert _eval(setup, out) == 1
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _eval(setup, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a finished evaluation" in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _eval(setup, out, "--overwrite") == 1
    assert json.loads((out / "report.json").read_text()) == json.loads((reference["out"] / "report.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_continue_a_killed_evaluation_into_the_same_file(setup, reference, tmp_path):
    out = tmp_path / "ddp"
    _killed_run(setup, out, batches=1)  # the first video only
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "actionbert",
           "eval", str(setup["model"]), "--data", str(setup["data"]), "--out", str(out), *CLI]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.stdout.count("1 of 6 videos already evaluated") == 1, proc.stdout + proc.stderr  # rank 0 only
    assert _lines(out / "videos.jsonl") == reference["lines"]  # the parts merged in split order, each video once
    assert not list(out.glob("videos.jsonl.*"))
    assert json.loads((out / "report.json").read_text()) == json.loads((reference["out"] / "report.json").read_text())
