"""`clips.csv`: the record `actionbert clips` keeps beside the clips it cuts, and `prepare` reads to keep the
clips of one source video in one split.

Columns `CLIP_COLUMNS`: clip (path relative to the csv's folder), source (absolute path of the video it was
cut from), start, end (seconds), start_frame, end_frame (exclusive), label, mode. One file per output folder
holds every clip ever cut into that folder: a later run adds its rows to the earlier ones (see
`clips.cut_clips`), so no clip in the folder loses its source.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

CLIPS_CSV = "clips.csv"
CLIP_COLUMNS = ("clip", "source", "start", "end", "start_frame", "end_frame", "label", "mode")


def read_clip_rows(file: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a clips.csv as dicts (missing cells are ""); [] when the file does not exist.

    Raises:
        ValueError: the file is not a clips.csv (no `clip` / `source` column, not UTF-8, not CSV); the
            message names the file.
    """
    file = Path(file)
    if not file.is_file():
        return []
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("clip", "source") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{file}: line 1: no column(s) {missing} (a clips.csv of `actionbert clips` has "
                                 f"{', '.join(CLIP_COLUMNS)})")
            return [{k: (row.get(k) or "").strip() for k in CLIP_COLUMNS} for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{file}: not a readable CSV ({e})") from None


def write_clip_rows(file: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Write a clips.csv atomically (a temporary file renamed into place: a kill never leaves half a record)."""
    file = Path(file)
    tmp = file.with_name(f".{file.name}.part")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CLIP_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def same_video(source: str) -> str:
    """A spelling of a source path that is equal for equal files: absolute, symbolic links resolved."""
    return os.path.realpath(source)
