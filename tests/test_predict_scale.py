"""Prediction at scale (issue 13): decoding workers, batches across videos, torchrun shards, resumable JSON lines,
bounded memory on a long video."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actionbert.checkpoint import load_model
from actionbert.cli import main
from conftest import TINY_CLASSES
from actionbert.predict import Predictor
from actionbert.predict_batch import BatchStats, predict_many, predict_to_file, record, settings_of

CLASSES = TINY_CLASSES


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="module")
def videos(tmp_path_factory, video_tools) -> list[str]:
    """Seven inputs of several lengths (1 to 7 windows, one shorter than a clip), a corrupt one third."""
    d = tmp_path_factory.mktemp("scale_videos")
    w = video_tools.write_coded
    bad = d / "bad.mp4"
    bad.write_bytes(b"not a video" * 20)
    paths = [w(d / "a.mp4", 20), w(d / "b.mp4", 5), bad, w(d / "c.mp4", 60, codec="mpeg4"), w(d / "d.mp4", 24),
             w(d / "e.avi", 33, codec="mjpeg"), w(d / "f.mp4", 9)]
    return [str(p) for p in paths]


def _predict(out: Path, videos, model_dir, *extra) -> int:
    return main(["predict", str(model_dir), *videos, "--out", str(out), "--eager", "--batch-size", "3",
                 *map(str, extra)])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(model_dir, videos, tmp_path_factory) -> list[dict]:
    """One process, decoding in the main process (--workers 0)."""
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    assert _predict(out, videos, model_dir, "--workers", "0") == 1  # the corrupt video
    return _lines(out)


def test_results_file_keeps_input_order_and_reports_the_corrupt_video(reference, videos):
    head, records = reference[0], reference[1:]
    assert head["settings"]["inputs"] == len(videos)
    assert [r["index"] for r in records] == list(range(len(videos)))
    assert [r["video"] for r in records] == videos
    assert "cannot open" in records[2]["error"] and not records[2]["topk"]
    for r in records[:2] + records[3:]:
        assert r["error"] is None and len(r["topk"]) == 3 and r["segments"]
    assert records[3]["num_frames"] == 60 and len(records[3]["segments"]) == 8  # 7 windows + one flush with the end
    assert "short" in records[1]["warning"]


def test_two_decoding_workers_give_exactly_the_results_of_none(reference, model_dir, videos, tmp_path, capsys):
    out = tmp_path / "w2.jsonl"
    assert _predict(out, videos, model_dir, "--workers", "2") == 1
    assert _lines(out) == reference
    assert "1 of 7 video(s) failed" in capsys.readouterr().err


def test_batches_across_videos_match_one_video_at_a_time(model_dir, videos):
    """A window's scores do not depend on which windows of which videos share its model batch (compared at full
    precision: the mean window logits, where a one-window batch alone would differ in the last bits)."""
    model, info = load_model(model_dir)
    predictor = Predictor(model, info, batch_size=3, fast=False)
    together: dict = {}
    predict_many(predictor, list(enumerate(videos)), on_video=lambda i, p: together.__setitem__(i, record(i, p)))
    for i, v in enumerate(videos):
        alone: dict = {}
        predict_many(predictor, [(i, v)], on_video=lambda j, p: alone.__setitem__(j, record(j, p)))
        assert alone[i] == together[i]


@pytest.mark.slow
def test_two_gloo_processes_give_the_results_of_one(reference, model_dir, videos, tmp_path):
    out = tmp_path / "ddp.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "actionbert", "predict", str(model_dir), *videos, "--out", str(out), "--eager", "--batch-size", "3",
           "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "1 of 7 video(s) failed" in proc.stderr  # exit 1 of rank 0: the corrupt video
    assert _lines(out) == reference
    assert not list(tmp_path.glob("ddp.jsonl.*"))  # the part files were merged and removed


class _Killed(Exception):
    pass


def test_a_killed_run_continues_with_every_video_exactly_once(reference, model_dir, videos, tmp_path, capsys):
    out = tmp_path / "resume.jsonl"
    model, info = load_model(model_dir)
    predictor = Predictor(model, info, batch_size=3, fast=False)
    settings = settings_of(model_dir, predictor, videos, topk=5)
    seen = []

    def kill_after_three(index, pred):
        seen.append(index)
        if len(seen) == 3:
            raise _Killed

    with pytest.raises(_Killed):
        predict_to_file(predictor, videos, out, settings, on_video=kill_after_three)
    assert len(_lines(out)) == 1 + 3  # header + the three finished videos, on disk as they completed
    with open(out, "a") as f:
        f.write('{"index": 6, "video": "' + videos[6] + '", "topk": [{"lab')  # a line torn by the kill
    capsys.readouterr()
    assert _predict(out, videos, model_dir, "--workers", "2") == 1
    assert "3 video(s) already in the results file: skipped" in capsys.readouterr().err
    assert _lines(out) == reference


def test_an_other_settings_file_is_refused_and_overwrite_starts_afresh(reference, model_dir, videos, tmp_path,
                                                                       capsys):
    out = tmp_path / "r.jsonl"
    out.write_text("my notes\n")
    assert _predict(out, videos, model_dir) == 2
    assert "not an actionbert results file" in capsys.readouterr().err
    assert out.read_text() == "my notes\n"
    assert _predict(out, videos, model_dir, "--overwrite") == 1
    before = out.read_text()
    assert _predict(out, videos, model_dir, "--topk", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "other settings (topk differ)" in err[-1]
    assert out.read_text() == before
    assert _lines(out) == reference


def test_a_long_video_is_streamed_in_chunks_with_bounded_memory(model_dir, video_tools, tmp_path):
    """A 400-frame video (50 windows) with 2 workers: the main process never holds more than
    batch + chunk - 1 windows, and the video arrives in chunks of at most one batch."""
    long = video_tools.write_coded(tmp_path / "long.mp4", 400)
    short = [video_tools.write_coded(tmp_path / f"s{i}.mp4", 12) for i in range(3)]
    model, info = load_model(model_dir)
    predictor = Predictor(model, info, batch_size=2, fast=False)
    stats = BatchStats()
    done: dict = {}
    inputs = list(enumerate([str(long), *map(str, short)]))
    predict_many(predictor, inputs, workers=2, stats=stats, on_video=lambda i, p: done.__setitem__(i, p))
    assert len(done[0].segments) == 50 and all(done[i].topk for i in range(4))
    assert stats.windows == 50 + 3 * 2
    assert stats.chunks >= 25 + 3  # 50 windows in chunks of <= 2
    assert stats.max_windows_held <= 2 + 2 - 1
    assert stats.max_open_videos <= 2 + 3  # one per worker plus those whose last windows wait for the model


def test_a_cpu_model_leaves_the_decoding_workers_their_cores(monkeypatch):
    """On 4 cores, k workers leave 4 - k threads (at least 1), a torchrun process its share of the cores less its
    workers; nothing changes on a GPU, without workers, or where torch already runs that few threads."""
    from actionbert import runtime

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cpu = torch.device("cpu")
    assert [runtime.threads_beside_workers(cpu, k) for k in (0, 1, 3, 8)] == [None, 3, 1, 1]
    assert runtime.threads_beside_workers(torch.device("cuda"), 2) is None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert runtime.threads_beside_workers(cpu, 1) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert runtime.threads_beside_workers(cpu, 1) is None


def test_predict_many_runs_the_model_on_the_threads_the_workers_leave(model_dir, videos, monkeypatch):
    """Every model call of a 2-worker run on a 2-core process runs at 1 intra-op thread; the count is restored."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    model, info = load_model(model_dir)
    predictor = Predictor(model, info, batch_size=3, fast=False)
    seen, run = [], predictor._run
    monkeypatch.setattr(predictor, "_run", lambda batch: (seen.append(torch.get_num_threads()), run(batch))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        predict_many(predictor, list(enumerate(videos[:2])), workers=2)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
