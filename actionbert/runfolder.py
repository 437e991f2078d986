"""The run folder (`train.out`): who may write it, what a new run may replace, and the checkpoint pair.

- One process at a time: the training process (rank 0) holds an exclusive `flock` on `.actionbert.lock` in
  the folder for the whole run, with its pid written inside; a second process is refused with that pid. The
  lock dies with its process (also on kill -9), so it never goes stale.
- A new run never replaces a run: a folder holding any of the run's files is refused with a message naming
  `--resume` and `--overwrite`; `--overwrite` deletes exactly those files (checkpoints, metrics, curves,
  TensorBoard logs, `eval_*` folders, temporaries) and leaves anything else in the folder alone.
- Checkpoint pair: `last.pt` is the commit point. An epoch that improves writes `best.pt` first, keeping the
  previous `best.pt` as `.best.pt.prev` (a hard link) until `last.pt` is written. `repair` (on start and resume)
  removes temporaries of killed writes and rolls `best.pt` back to what `last.pt` records, so a kill at any
  moment leaves a consistent pair: `best.pt` is the epoch `last.pt` names as best.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from actionbert.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from actionbert.config import TrainConfig, apply_override
from actionbert.errors import MissingFileError, StorageError, UsageError
from actionbert.fileio import stale_temporaries

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no advisory locks
    fcntl = None

RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "config.yaml", "classes.txt", "curves.png")
RUN_DIRS = ("tensorboard",)
EVAL_GLOB = "eval_*"
LOCK_NAME = ".actionbert.lock"
PREV_BEST = ".best.pt.prev"


class RunFolderError(UsageError):
    """The run folder is in use or holds a run the command may not replace."""


def existing_run(run_dir: str | Path) -> list[str]:
    """Names of the run files and folders present in `run_dir` (empty: nothing a new run would replace)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [n for n in (*RUN_FILES, PREV_BEST) if (run_dir / n).is_file()]
    found += [n + "/" for n in RUN_DIRS if (run_dir / n).is_dir()]
    found += sorted(p.name + "/" for p in run_dir.glob(EVAL_GLOB) if p.is_dir())
    return found


def clear_run(run_dir: str | Path) -> list[str]:
    """Delete the run files and folders of `run_dir` (see `existing_run`) and stale temporaries; return them."""
    run_dir = Path(run_dir)
    removed = existing_run(run_dir)
    for name in removed:
        path = run_dir / name.rstrip("/")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for tmp in stale_temporaries(run_dir, list(RUN_FILES)):
        tmp.unlink(missing_ok=True)
    return removed


def resume_checkpoint(run_dir: str | Path) -> Path:
    """`run_dir/last.pt`, or a one-line error saying there is nothing to resume."""
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        raise MissingFileError(f"{last}: nothing to resume (no last checkpoint in the run folder); start a new "
                               "run without --resume")
    return last


def saved_config(overrides: list[str]) -> tuple[Path, dict[str, Any]]:
    """(last.pt, the config dict it holds) of the run folder the overrides name (`train.out`, else the default
    folder): the base of `train --resume` without a config file."""
    raw: dict[str, Any] = {}
    for item in overrides:
        raw = apply_override(raw, item)
    last = resume_checkpoint((raw.get("train") or {}).get("out") or TrainConfig.out)
    config = load_checkpoint(last).get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{last}: no run config inside; resume with the run's config file")
    return last, config


@contextmanager
def claim(run_dir: str | Path, *, resume: bool, overwrite: bool) -> Iterator[list[str]]:
    """Hold the run folder for the life of the `with` block; yields messages to show the user.

    Creates the folder when needed (and removes it again if the block fails before writing anything), takes
    the lock, then refuses (a new run into a folder that holds one, without `overwrite`) or clears it.
    """
    run_dir = Path(run_dir)
    if (run_dir / "prepare.json").is_file() or (run_dir / "train.csv").is_file():
        raise RunFolderError(f"{run_dir} is a prepared dataset folder, not a run folder; choose another folder "
                             "with --out")
    created = not run_dir.exists()
    notes: list[str] = []
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = _lock(run_dir, notes)
    except OSError as e:
        raise StorageError(f"{run_dir}: cannot use as the run folder ({e.strerror or e}); choose another folder "
                           "with --out") from None
    ok = False
    try:
        if not resume:
            found = existing_run(run_dir)
            if found and not overwrite:
                raise RunFolderError(
                    f"{run_dir} already holds a run ({', '.join(found[:6])}{', ...' if len(found) > 6 else ''}): "
                    "continue it with --resume, replace it with --overwrite (deletes its checkpoints, metrics, "
                    "TensorBoard logs and eval_* folders), or choose another folder with --out")
            if found:
                clear_run(run_dir)
                notes.append(f"--overwrite: removed the previous run's {', '.join(found)} from {run_dir}")
        yield notes
        ok = True
    finally:
        _unlock(run_dir, fd, remove_folder=created and not ok)


def _lock(run_dir: Path, notes: list[str]) -> int | None:
    if fcntl is None:
        notes.append(f"no file locking on this system: make sure no other process trains into {run_dir}")
        return None
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderError(f"{run_dir} is in use by another actionbert process (pid {holder}); wait for it to "
                             "end or choose another folder with --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _unlock(run_dir: Path, fd: int | None, *, remove_folder: bool) -> None:
    """Release the lock; a folder this run created and left empty (besides the lock) is removed again."""
    if remove_folder and {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
        run_dir.rmdir()
    if fd is not None:
        os.ftruncate(fd, 0)  # no pid left behind once the run has ended
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ------------------------------------------------------------------------------------- checkpoint pair
def save_epoch(run_dir: str | Path, state: dict[str, Any], *, improved: bool) -> None:
    """Write an epoch's checkpoints in commit order: `best.pt` (when `improved`) before `last.pt`.

    Until `last.pt` is written the previous `best.pt` stays as `.best.pt.prev`, so `repair` can roll back.
    """
    run_dir = Path(run_dir)
    best, prev = run_dir / "best.pt", run_dir / PREV_BEST
    if improved:
        if best.is_file():
            prev.unlink(missing_ok=True)
            try:
                os.link(best, prev)
            except OSError:  # a file system without hard links
                shutil.copy2(best, prev)
        save_checkpoint(best, state)
    save_checkpoint(run_dir / "last.pt", state)
    prev.unlink(missing_ok=True)


def repair(run_dir: str | Path, last: dict[str, Any] | None) -> tuple[list[str], bool]:
    """Bring `run_dir` back to a consistent state after a kill; returns (messages, best_lost).

    Removes temporaries of killed writes. With `last` (the `last.pt` being resumed): rolls `best.pt` back when
    it is newer than `last.pt` (a kill between the two writes), rewrites it from `last.pt` when that epoch is
    the recorded best, and reports `best_lost` when the recorded best epoch's weights are gone (the caller then
    starts the best selection afresh).
    """
    run_dir = Path(run_dir)
    notes: list[str] = []
    temps = stale_temporaries(run_dir, list(RUN_FILES))
    if temps:
        size = sum(p.stat().st_size for p in temps)
        for p in temps:
            p.unlink(missing_ok=True)
        notes.append(f"removed {len(temps)} temporary file(s) of interrupted writes ({size / 2**20:.1f} MiB) "
                     f"from {run_dir}")
    best, prev = run_dir / "best.pt", run_dir / PREV_BEST
    if last is None:
        prev.unlink(missing_ok=True)
        return notes, False
    epoch, best_epoch = last["epoch"], last["best_epoch"]
    best_at = _epoch_of(best)
    if best_at is not None and best_at > epoch:
        if prev.is_file():
            os.replace(prev, best)
            notes.append(f"best.pt rolled back to epoch {best_epoch}: the interrupted epoch {best_at} had replaced "
                         "it before last.pt recorded that epoch")
        else:
            best.unlink()
        best_at = _epoch_of(best)
    prev.unlink(missing_ok=True)
    if best_epoch < 0 or best_at == best_epoch:
        return notes, False
    if best_epoch == epoch:
        save_checkpoint(best, last)
        notes.append(f"best.pt {'was missing' if best_at is None else 'did not match last.pt'}: rewritten from "
                     f"last.pt (epoch {epoch}, the recorded best)")
        return notes, False
    notes.append(f"best.pt {'is missing' if best_at is None else f'holds epoch {best_at}'} but last.pt records "
                 f"epoch {best_epoch} as the best; those weights are gone, so the best of the epochs from now on "
                 "will be saved as best.pt")
    return notes, True


def _epoch_of(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        return int(load_checkpoint(path)["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None
