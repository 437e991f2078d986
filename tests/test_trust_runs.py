"""Issue 11: nothing a training run leaves behind is lost, mixed up or misreported.

Run folders are never replaced without --overwrite and are locked while in use; every kill leaves a
consistent best.pt / last.pt pair; full disks, missing validation data, undecodable epochs, resumes with
another config, one-class datasets and missing test splits all end in one clear error or a defined result.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from actionbert.checkpoint import load_checkpoint
from actionbert.config import DataConfig, ModelConfig, RunConfig, TrainConfig, config_to_dict
from actionbert.data import make_synthetic_dataset, prepare_dataset
from actionbert.preprocessing import Resize
from actionbert.train import TrainHooks, train

BROKEN = b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50  # not a decodable video


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trust")
    raw = make_synthetic_dataset(root / "videos", num_classes=2, videos_per_class=3, num_frames=20, size=(48, 64),
                                 clip_len=16, seed=3)
    prepare_dataset(raw, root / "prepared", val_fraction=1 / 3, seed=0, cache=True, cache_resize=Resize(36, 48))
    return root / "prepared"


def tiny(prepared: Path, out: Path, **train_kw) -> RunConfig:
    return RunConfig(
        model=ModelConfig(backbone="r2plus1d_tiny", head="tgap", num_classes=0, clip_len=16, input_size=32),
        data=DataConfig(root=str(prepared), resize=(36, 48), num_workers=0),
        train=TrainConfig(out=str(out), **{"epochs": 1, "batch_size": 2, "lr": 1e-3, **train_kw}),
    )


def with_epochs(cfg: RunConfig, epochs: int) -> RunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))


def scripted_validation(monkeypatch, top1_by_epoch: list[float]) -> None:
    """Validation top-1 of each epoch as given (so which epoch improves is known); the real loop still trains."""
    calls = iter(top1_by_epoch)

    def fake(model, loader, **kw):
        return {"loss": 1.0, "top1": next(calls), "failures": 0, "count": 2}

    monkeypatch.setattr("actionbert.train.evaluate_loader", fake)


def epoch_of(path: Path) -> int:
    return load_checkpoint(path)["epoch"]


def break_videos(prepared: Path, dest: Path, split: str, *, num_frames: int | None = None) -> Path:
    """A copy of the prepared folder (without cache) whose `split` videos are all undecodable."""
    shutil.copytree(prepared, dest, ignore=shutil.ignore_patterns("cache"))
    broken = dest / "broken.mp4"
    broken.write_bytes(BROKEN)
    rows = list(csv.DictReader(open(dest / f"{split}.csv")))
    for r in rows:
        r["path"] = str(broken)
        if num_frames:
            r["num_frames"] = str(num_frames)
    with open(dest / f"{split}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dest


# ------------------------------------------------------------------------------------ 1: run folders
def test_a_second_train_never_replaces_a_run_and_overwrite_clears_all_of_it(prepared, tmp_path):
    from actionbert.errors import UsageError

    run = tmp_path / "run"
    cfg = tiny(prepared, run)
    train(cfg)
    (run / "eval_val").mkdir()
    (run / "eval_val" / "report.json").write_text("{}")
    (run / "my_notes.txt").write_text("mine")
    old_last = (run / "last.pt").read_bytes()
    old_events = sorted((run / "tensorboard").iterdir())
    with pytest.raises(UsageError, match=r"already holds a run.*--resume.*--overwrite"):
        train(cfg)
    assert (run / "last.pt").read_bytes() == old_last and (run / "eval_val").is_dir()

    notes = []
    train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1)), overwrite=True,
          hooks=TrainHooks(on_message=notes.append))
    assert any("--overwrite: removed" in n for n in notes)
    assert not (run / "eval_val").exists()  # nothing of the old run stays beside the new model
    assert not set(old_events) & set((run / "tensorboard").iterdir())
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 1
    assert load_checkpoint(run / "last.pt")["config"]["train"]["seed"] == 1
    assert load_checkpoint(run / "best.pt")["config"]["train"]["seed"] == 1
    assert (run / "my_notes.txt").read_text() == "mine"  # not a run file: left alone
    with pytest.raises(UsageError, match="is a prepared dataset folder, not a run folder"):
        train(tiny(prepared, prepared), overwrite=True)  # --out pointing at the data is never cleared
    assert (prepared / "classes.txt").is_file()


# holds the lock as a training process does: an exclusive flock on the lock file, with its pid inside
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, f"{os.getpid()}\\n".encode())
print("ready", flush=True)
time.sleep(120)
"""


def test_a_run_folder_in_use_by_another_process_is_refused_with_its_pid(prepared, tmp_path):
    from actionbert.errors import UsageError
    from actionbert.runfolder import LOCK_NAME, claim

    run = tmp_path / "busy"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / LOCK_NAME)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(UsageError, match=rf"in use by another actionbert process \(pid {holder.pid}\)"):
            train(tiny(prepared, run))
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    with claim(run, resume=False, overwrite=False):  # the lock went with its process; now this one holds it
        with pytest.raises(UsageError, match=rf"pid {os.getpid()}"):
            train(tiny(prepared, run))


# ------------------------------------------------------------------------------------ 2: kill-safe pair
class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing catches it on the way out."""


@pytest.mark.parametrize("kill_at", [3, 4])  # the 1st or 2nd checkpoint write of epoch 1 (epoch 0 wrote 1, 2)
def test_a_kill_between_checkpoint_writes_leaves_a_consistent_pair(prepared, tmp_path, monkeypatch, kill_at):
    cfg = tiny(prepared, tmp_path / "run", epochs=2)
    scripted_validation(monkeypatch, [50.0, 75.0])  # epoch 1 improves: both files are written
    real_save, calls = torch.save, []

    def save(obj, f, *a, **kw):
        calls.append(Path(f).name)
        if len(calls) == kill_at:
            Path(f).write_bytes(b"half a checkpoint")
            raise Killed
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(Killed):
        train(cfg)
    monkeypatch.setattr(torch, "save", real_save)
    run = tmp_path / "run"
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"x" * 100_000)  # what a SIGKILL mid-write leaves
    last = load_checkpoint(run / "last.pt")
    notes = []
    train(with_epochs(cfg, last["epoch"] + 1), resume=True, hooks=TrainHooks(on_message=notes.append))
    last = load_checkpoint(run / "last.pt")
    assert epoch_of(run / "best.pt") == last["best_epoch"]  # best.pt is what last.pt records
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".actionbert.lock"]
    assert any("temporary file(s) of interrupted writes" in n for n in notes)
    scripted_validation(monkeypatch, [75.0])
    train(with_epochs(cfg, 2), resume=True)  # and the run goes on to the end, still consistent
    assert epoch_of(run / "best.pt") == load_checkpoint(run / "last.pt")["best_epoch"] == 1


def test_a_missing_best_pt_is_rewritten_or_said(prepared, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = tiny(prepared, run, epochs=2)
    scripted_validation(monkeypatch, [50.0, 75.0])
    train(cfg)
    (run / "best.pt").unlink()  # the best is the last epoch: it can be rewritten from last.pt
    notes = []
    train(cfg, resume=True, hooks=TrainHooks(on_message=notes.append))
    assert epoch_of(run / "best.pt") == 1 and any("rewritten from last.pt" in n for n in notes)

    scripted_validation(monkeypatch, [10.0])  # worse than the recorded best (75% at epoch 1)
    (run / "best.pt").unlink()
    ckpt = load_checkpoint(run / "last.pt")
    torch.save({**ckpt, "epoch": 2, "best_epoch": 1}, run / "last.pt")  # best epoch 1 < last epoch 2: weights lost
    notes.clear()
    train(with_epochs(cfg, 4), resume=True, hooks=TrainHooks(on_message=notes.append))
    assert any("those weights are gone" in n for n in notes)
    assert epoch_of(run / "best.pt") == load_checkpoint(run / "last.pt")["best_epoch"] == 3


# ------------------------------------------------------------------------------------ 4: full disk
def test_a_full_disk_is_named_with_the_file_and_leaves_nothing_half_written(prepared, tmp_path, monkeypatch,
                                                                         capsys):
    from actionbert.cli import main

    def no_room(obj, f, *a, **kw):
        Path(f).write_bytes(b"\x00" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", no_room)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(free=0))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps(config_to_dict(tiny(prepared, tmp_path / "run"))))
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"run/(best|last)\.pt: cannot write: no space left on device", err[0])
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert (tmp_path / "run" / "classes.txt").read_text().split() == ["blue_then_red", "red_then_blue"]


def test_text_files_are_replaced_atomically_and_errors_name_them(tmp_path):
    import errno

    from actionbert.errors import StorageError
    from actionbert.fileio import atomic_write, atomic_write_text

    target = atomic_write_text(tmp_path / "classes.txt", "a\nb\n")

    def full(tmp):
        Path(tmp).write_text("a\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError, match=r"classes.txt: cannot write: no space left on device"):
        atomic_write(target, full)
    assert target.read_text() == "a\nb\n" and [p.name for p in tmp_path.iterdir()] == ["classes.txt"]


# --------------------------------------------------------------------------------- 10: no validation
def test_without_validation_videos_best_pt_is_the_last_epoch_and_no_number_is_invented(tmp_path, capsys):
    from actionbert.cli import main

    raw = make_synthetic_dataset(tmp_path / "videos", num_classes=2, videos_per_class=2, num_frames=20,
                                 size=(48, 64), clip_len=16, seed=4)
    prepare_dataset(raw, tmp_path / "prepared", val_fraction=0.0, cache=True, cache_resize=Resize(36, 48))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps(config_to_dict(tiny(tmp_path / "prepared", tmp_path / "run", epochs=2))))
    assert main(["train", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count("no validation videos") == 1 and "no validation data: best.pt is the last epoch (1)" in out
    assert "nan" not in out.lower() and "0.00%" not in out
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == 1 and best["selected_by"] == "last epoch (no validation data)"
    assert best["best_top1"] is None
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [(r["val_loss"], r["val_top1"]) for r in rows] == [("", ""), ("", "")]


# --------------------------------------------------------------------------------- 11: all clips fail
def test_an_epoch_where_every_clip_fails_stops_training_without_checkpoints(prepared, tmp_path, capsys):
    from actionbert.cli import main

    data = break_videos(prepared, tmp_path / "broken", "train")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps(config_to_dict(tiny(data, tmp_path / "run"))))
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: epoch 0: none of the training clips could be decoded" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / "last.pt").exists()


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    train(tiny(prepared, out))
    return out / "best.pt"


def test_eval_counts_failed_videos_not_windows_and_writes_valid_json(prepared, trained, tmp_path, capsys):
    from actionbert.cli import main

    data = break_videos(prepared, tmp_path / "broken", "val", num_frames=48)  # 3 test windows per video
    assert main(["eval", str(trained), "--data", str(data), "--out", str(tmp_path / "eval"), "--views",
                 "0x1"]) == 1  # some inputs failed
    out = capsys.readouterr().out
    assert "2 video(s) failed to decode" in out and "no video could be evaluated" in out

    def no_nan(token):
        raise AssertionError(f"invalid JSON token {token}")

    report = json.loads((tmp_path / "eval" / "report.json").read_text(), parse_constant=no_nan)
    assert [f["windows"] for f in report["failures"]] == [3, 3]
    assert report["video"]["top1"] is None and report["evaluated_videos"] == 0


# ---------------------------------------------------------------------------- 12: resume, other config
def test_resume_with_another_config_refuses_model_changes_and_applies_epochs(prepared, tmp_path):
    from actionbert.errors import UsageError

    cfg = tiny(prepared, tmp_path / "run")
    train(cfg)
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, head="bert"),
                                train=dataclasses.replace(cfg.train, lr=0.5))
    with pytest.raises(UsageError, match=r"--resume cannot change model.head 'tgap' -> 'bert', train.lr 0.001 -> 0.5"):
        train(other, resume=True)
    notes = []
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2, pretrained="other.pt"))
    result = train(more, resume=True, hooks=TrainHooks(on_message=notes.append))
    assert notes == ["resume: applying train.epochs 1 -> 2; keeping the run's train.pretrained None (weights come "
                     "from last.pt)"]
    assert [r["epoch"] for r in result.history] == [0, 1]


# ---------------------------------------------------------------------------------- 13: one class
def test_a_one_class_dataset_is_refused_at_prepare_and_train(prepared, tmp_path):
    from actionbert.errors import DataError

    raw = make_synthetic_dataset(tmp_path / "videos", num_classes=2, videos_per_class=2, num_frames=20,
                                 size=(48, 64), clip_len=16, seed=5)
    shutil.rmtree(raw / "red_then_blue")
    with pytest.raises(DataError, match=r"only one class \(blue_then_red\).*at least 2 classes"):
        prepare_dataset(raw, tmp_path / "p1", cache=True)
    assert not (tmp_path / "p1").exists()  # nothing written

    one = tmp_path / "one"
    shutil.copytree(prepared, one)
    (one / "classes.txt").write_text("blue_then_red\n")
    with pytest.raises(DataError, match="at least 2 classes"):
        train(tiny(one, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- 14: test split
def test_eval_of_a_missing_test_split_is_an_error_never_val(prepared, trained, tmp_path, capsys):
    from actionbert.cli import main

    assert main(["eval", str(trained), "--data", str(prepared), "--split", "test", "--out",
                 str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no test split" in err[0] and "--split val" in err[0]
    assert not (tmp_path / "e").exists()
