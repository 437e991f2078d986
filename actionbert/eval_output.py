"""Where an evaluation writes (`eval --out FOLDER`): the per-video results file, the folder rules, the settings.

```
FOLDER/videos.jsonl   one line per video as soon as all its views are scored (the `results` format: a header with
                      the settings, then `eval_records` records); under torchrun each process appends to its own
                      videos.jsonl.part<rank> and rank 0 merges the parts in split order at the end
FOLDER/report.json    written last (after report.html, confusion.csv/png, predictions.csv): a folder holding it
                      holds a finished evaluation
```

- Resuming (`eval` without `--overwrite`): a folder with a finished evaluation is refused; an unfinished one
  (videos.jsonl, no report.json) is continued, its videos skipped, provided it was made with the same settings
  (model file, split, views, temporal check, precision, ...); other settings are refused.
- Starting afresh (`--overwrite`, and library calls without `resume`) deletes exactly the evaluation's files,
  nothing else in the folder.

A killed evaluation loses at most the videos in flight; the report of a resumed one is computed from every line of
the file, so it is the report of an evaluation that ran through.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from actionbert import results, runtime
from actionbert.errors import ActionbertError, StorageError, UsageError

VIDEOS_FILE = "videos.jsonl"
REPORT_FILES = ("report.json", "report.html", "confusion.csv", "confusion.png", "predictions.csv")


class EvalFolderError(UsageError):
    """The output folder holds a finished evaluation (and the caller did not ask to start afresh)."""


def settings_of(model_path, *, split: str, samples, classes: list[str], views: dict, temporal_check: bool,
                precision: str, fast: bool, seed: int) -> dict:
    """What the scores in a results file depend on (a continuation must match): the model file's content, the
    split's videos and labels, the views and the options. Not the batch size, workers, device or process count."""
    listing = [f"{s.video_id}\t{s.label}\t{s.num_frames}" for s in samples]
    return {"model_sha256": model_identity(model_path), "split": split, "videos": len(samples),
            "videos_sha256": results.inputs_digest(listing), "classes": list(classes), "views": dict(views),
            "temporal_check": bool(temporal_check), "precision": precision, "fast": bool(fast), "seed": int(seed)}


def model_identity(path: str | Path) -> str:
    """sha256 of a checkpoint file, or of a model folder's files (names and contents, in name order)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name if path.is_dir() else ''}\0".encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class EvalOutput:
    """The results file of one evaluation run in this process: what is already done, and an appender."""

    def __init__(self, folder: Path, settings: dict, info: runtime.DistInfo) -> None:
        self.folder, self.settings, self.info = folder, settings, info
        self.file = folder / VIDEOS_FILE
        self.done = {(r["index"], r["video"]) for r in results.collect(self.file, settings)}
        self._appender: results.Appender | None = None

    @classmethod
    def open(cls, folder: str | Path, settings: Callable[[], dict], *, resume: bool,
             info: runtime.DistInfo) -> "EvalOutput":
        """Check and prepare `folder` on rank 0 (settings computed there), then open it on every process.

        Raises:
            EvalFolderError: a finished evaluation without starting afresh, a results file of other settings or
                damaged, a folder that cannot be written (on every process).
        """
        folder, made, error = Path(folder), None, None
        if info.is_main:
            try:
                made = settings()
                _prepare(folder, made, resume=resume)
            except (ActionbertError, results.ResultsError) as e:
                error = str(e)
        made, error = runtime.broadcast_object((made, error), info)
        if error:
            raise EvalFolderError(error)
        return cls(folder, made, info)

    def write(self, record: dict) -> None:
        if self._appender is None:
            path = results.part_path(self.file, self.info.rank) if self.info.enabled else self.file
            self._appender = results.Appender(path, self.settings)
        self._appender.write(record)

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None

    def finish(self) -> list[dict] | None:
        """After every process scored its share: (rank 0) every record of the file, merged in split order; None
        on the other processes."""
        self.close()
        runtime.barrier(self.info)
        return results.merge(self.file, self.settings) if self.info.is_main else None


def _prepare(folder: Path, settings: dict, *, resume: bool) -> None:
    file = folder / VIDEOS_FILE
    if not resume:
        for name in REPORT_FILES:
            (folder / name).unlink(missing_ok=True)
        results.remove(file)
    elif (folder / "report.json").is_file():
        raise EvalFolderError(f"{folder} holds a finished evaluation (report.json): pass --overwrite to evaluate "
                              "into it afresh, or choose another --out")
    elif file.exists() or results.part_files(file):
        results.merge(file, settings)  # checks the settings, folds parts of a killed run in, drops a torn line
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{folder}: cannot write the evaluation there ({e.strerror or e}); choose another "
                           "--out") from None
