"""problems.csv rows, and reading the text files users hand to `prepare` line by line.

A list file, class list or CSV is read one line at a time: a line that is not UTF-8 is reported (file, line
number, the byte at fault) and the rest of the file is used, instead of rejecting the whole file for one byte.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class Problem:
    """One row of problems.csv.

    Attributes:
        path: the file (or list file) concerned.
        kind: short category, e.g. "missing", "empty", "not_video", "audio_only", "corrupt", "truncated",
            "too_short", "frame_count_mismatch", "unknown_class", "suspicious_label", "malformed_line",
            "not_utf8", "duplicate", "symlink_skipped".
        reason: what is wrong, in words.
        action: "skipped" (not used) or "kept" (used; the reason is a caveat).
    """

    path: str
    kind: str
    reason: str
    action: str = "skipped"


def write_problems(file: Path, problems: list[Problem]) -> None:
    with open(file, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "kind", "reason", "action"])
        for p in problems:
            writer.writerow([p.path, p.kind, p.reason, p.action])


def read_problems(file: str | os.PathLike) -> list[Problem]:
    """Read a problems.csv back."""
    with open(file, newline="", encoding="utf-8") as f:
        return [Problem(**row) for row in csv.DictReader(f)]


def malformed(file: Path, number: int, line: str, expected: str) -> Problem:
    """The problem of a list line that does not parse (names the file and the line)."""
    shown = line if len(line) <= 80 else line[:77] + "..."
    return Problem(str(file), "malformed_line", f"{Path(file).name} line {number}: expected {expected}, "
                                                f"got '{shown}'")


def decoded_lines(file: str | os.PathLike, problems: list[Problem] | None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) of every line of a UTF-8 text file (a BOM is dropped).

    A line that is not UTF-8 is appended to `problems` as "not_utf8" (file, line, offending byte) and left
    out; with `problems=None` it raises ValueError instead (for files that must be read whole, e.g. a class
    list, whose line order is the label order).

    Raises:
        OSError: the file cannot be read.
    """
    data = Path(file).read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            where = f"{Path(file).name} line {number}"
            reason = (f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); line not "
                      f"used, save the file as UTF-8")
            if problems is None:
                raise ValueError(f"{file}: line {number}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                 f"{e.start + 1}); save the file as UTF-8") from None
            problems.append(Problem(str(file), "not_utf8", reason))


def text_lines(file: str | os.PathLike, problems: list[Problem] | None = None) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of the non-empty, non-comment (#) lines; see `decoded_lines`."""
    for number, line in decoded_lines(file, problems):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def csv_rows(file: str | os.PathLike, problems: list[Problem]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of a CSV file, one line at a time (a quoted cell may not span lines); a line
    that is not UTF-8 or not valid CSV is reported in `problems` and left out."""
    for number, line in decoded_lines(file, problems):
        try:
            rows = list(csv.reader(io.StringIO(line)))
        except csv.Error as e:
            problems.append(Problem(str(file), "malformed_line", f"{Path(file).name} line {number}: not valid "
                                                                 f"CSV ({e})"))
            continue
        yield number, (rows[0] if rows else [])
