"""Resumable per-video results: a JSON-lines file, one line per video, written as each video completes.

```
line 1:  {"actionbert_results": 1, "settings": {model, inputs (count + sha256 of the list), topk, hop, ...}}
line 2+: {"index": i, "video": path, ...the video's result, "mean_logits": [...]}
         (appended, flushed and fsync'ed one by one)
```

A run that is killed loses at most the videos in flight: every finished line is on disk, and a torn last line
(no newline, or not JSON) is dropped when the file is opened again. Several processes (torchrun) each append to
their own part file `<out>.part<rank>`; `merge` folds the parts into the main file, keeps the first line of each
(index, video), orders them by input index and replaces the file atomically. Re-running the same command skips
the videos already in the file; a file written with other settings is refused (`ResultsError`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT_KEY = "actionbert_results"
FORMAT_VERSION = 1
_HEADER_START = b'{"' + FORMAT_KEY.encode() + b'": '


class ResultsError(Exception):
    """The results file cannot be continued (other settings, not a results file, a damaged line)."""


def inputs_digest(videos: list[str]) -> str:
    """sha256 of the input list (order matters: a line's index refers to it)."""
    return hashlib.sha256("\n".join(videos).encode()).hexdigest()


def header(settings: dict) -> dict:
    return {FORMAT_KEY: FORMAT_VERSION, "settings": settings}


def part_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.part{rank}")


def part_files(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.part*"))


def read_lines(path: Path) -> tuple[dict | None, list[dict], int]:
    """(header, records, bytes of the intact lines) of a results file; a torn last line is left out.

    Raises:
        ResultsError: a damaged line before the last, or a first line that is not a results header.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, good = lines[:-1], 0  # the piece after the last newline is torn (or empty)
    parsed = []
    if data and not data.startswith(_HEADER_START) and not _HEADER_START.startswith(data):
        raise _not_results(path)  # only a header torn by a kill may be shorter than its start
    for n, raw in enumerate(complete):
        try:
            parsed.append(json.loads(raw))
        except json.JSONDecodeError:
            if n == len(complete) - 1 and n > 0:  # a last line cut inside a multi-byte write: dropped as torn
                break
            raise ResultsError(f"{path}: line {n + 1} is not JSON; the file is damaged (use --overwrite to "
                               "start afresh)") from None
        good += len(raw) + 1
    if not parsed:
        return None, [], good
    if not isinstance(parsed[0], dict) or parsed[0].get(FORMAT_KEY) != FORMAT_VERSION:
        raise _not_results(path)
    return parsed[0], parsed[1:], good


def _not_results(path: Path) -> ResultsError:
    return ResultsError(f"{path} exists and is not an actionbert results file; choose another --out or pass "
                        "--overwrite to replace it")


def check_settings(path: Path, head: dict | None, settings: dict) -> None:
    if head is not None and head.get("settings") != settings:
        differ = sorted(k for k in set(settings) | set(head["settings"])
                        if settings.get(k) != head["settings"].get(k))
        raise ResultsError(f"{path} holds results of other settings ({', '.join(differ)} differ); use the same "
                           "command to continue it, another --out, or --overwrite")


def collect(out: Path, settings: dict) -> list[dict]:
    """Every intact record of `out` and its part files (after checking their settings)."""
    records = []
    for path in ([out] if out.exists() else []) + part_files(out):
        head, recs, _ = read_lines(path)
        check_settings(path, head, settings)
        records.extend(recs)
    return records


def merge(out: Path, settings: dict) -> list[dict]:
    """Fold the part files into `out`: one line per (index, video), in input order, written atomically; the parts
    are removed afterwards. Returns the records."""
    seen, records = set(), []
    for rec in collect(out, settings):
        key = (rec["index"], rec["video"])
        if key not in seen:
            seen.add(key)
            records.append(rec)
    records.sort(key=lambda r: r["index"])
    tmp = out.with_name(f"{out.name}.tmp")
    with open(tmp, "w") as f:
        for obj in [header(settings), *records]:
            f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    for part in part_files(out):
        part.unlink()
    return records


def remove(out: Path) -> None:
    """Remove a results file and its parts (--overwrite)."""
    for path in [out, *part_files(out), out.with_name(f"{out.name}.tmp")]:
        path.unlink(missing_ok=True)


class Appender:
    """Appends one record per line to a results file, each flushed and fsync'ed (a killed run keeps every
    finished line). A file without a header gets one; a torn last line is cut off first."""

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = path
        head, _, good = read_lines(path) if path.exists() else (None, [], 0)
        check_settings(path, head, settings)
        self._file = open(path, "ab")
        self._file.truncate(good)
        if head is None:
            self.write(header(settings))

    def write(self, obj: dict) -> None:
        self._file.write((json.dumps(obj) + "\n").encode())
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
