"""Input layouts of `prepare`: each reader turns a dataset description into a `Listing` of entries.

Layouts (`LAYOUTS`; `detect_layout` picks one for `layout="auto"`):

- "folder": `DATA/<class>/<clip>.<ext>` (deeper folders allowed; a folder of images is a frame-folder video).
  With `DATA/train/<class>/...` and `DATA/val/<class>/...` (or `test/`), those folders are the split.
  Symbolic links, loops and files reachable twice: see `walk.py` (a video's label is the class folder its
  path starts with, as laid out; links into the dataset or above it are not followed, and are reported).
- "list": a text file of `<path> <label>` lines (mmaction2 style); the label is a class index or a name; the
  path may contain spaces (the label is the last field).
- "frame_list": the reference's list of frame folders, `<dir> <num_frames> <label>`, frames `img_%05d.jpg`.
- "ucf101": `classInd.txt` and `trainlistNN.txt` / `testlistNN.txt` (split `split`); the test list becomes
  val.csv, as in the reference.
- "hmdb51": `<class>_test_split<k>.txt` files with `<video> <id>` lines (1 train, 2 test -> val, 0 unused).
- "kinetics": a CSV with a header; either `label, youtube_id, time_start, time_end[, split]` (files named
  `<youtube_id>_<start:06d>_<end:06d>.<ext>` found anywhere under the root) or `path, label[, split]`.

Text files are read line by line (`problems.text_lines`): a malformed line, or one that is not UTF-8, is
reported with its file and line number and the rest of the file is used. Each entry of a list or CSV
remembers its file and line (`Entry.where`) for later reports.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from actionbert.data.decode import VIDEO_EXTENSIONS
from actionbert.data.problems import Problem, csv_rows, malformed, text_lines
from actionbert.data.walk import ClassFolderWalk

SPLITS = ("train", "val", "test")

_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                "validation": "val", "test": "test", "testing": "test"}


@dataclass
class Entry:
    """A video listed by a layout reader, before probing."""

    path: Path
    video_id: str
    class_name: str | None
    split: str | None = None
    declared_frames: int | None = None
    where: str | None = None  # "<list file> line <n>" for entries of a list or CSV


@dataclass
class Listing:
    """What a layout reader found: entries, the declared class order (if any), listing problems."""

    entries: list[Entry]
    classes: list[str] | None = None
    problems: list[Problem] = field(default_factory=list)


def read_folder_layout(data: Path, root: Path, classes: list[str] | None) -> Listing:
    """`DATA/<class>/...` (optionally under `DATA/train`, `DATA/val`, `DATA/test`)."""
    listing = Listing(entries=[], classes=classes)
    subdirs = _subdirs(data)
    split_dirs = {d.name.lower(): d for d in subdirs if d.name.lower() in _SPLIT_NAMES}
    if split_dirs and len(split_dirs) == len(subdirs):
        tops = [(d, _SPLIT_NAMES[name]) for name, d in sorted(split_dirs.items())]
    else:
        tops = [(data, None)]
    walk = ClassFolderWalk(data, listing.problems)
    for top, split in tops:
        for item in sorted(top.iterdir(), key=lambda p: p.name):
            if item.name.startswith("."):
                continue
            if item.is_dir():
                for path in walk.class_files(item, () if top == data else (top,)):
                    listing.entries.append(Entry(path, _rel(path, root), item.name, split))
            elif item.suffix.lower() in VIDEO_EXTENSIONS:
                listing.problems.append(Problem(str(item), "no_class", "video outside any class folder"))
    return listing


def read_list_layout(data: Path, root: Path, classes: list[str] | None) -> Listing:
    """`<path> <label>` lines (mmaction2 style)."""
    return _read_lines(data, root, classes, frame_list=False)


def read_frame_list_layout(data: Path, root: Path, classes: list[str] | None) -> Listing:
    """`<frame folder> <num_frames> <label>` lines (the reference's format)."""
    return _read_lines(data, root, classes, frame_list=True)


def read_ucf101_layout(data: Path, root: Path, classes: list[str] | None, *, annotations: Path,
                       split: int = 1) -> Listing:
    """UCF101: `classInd.txt` ("1 ApplyEyeMakeup"), `trainlist0K.txt` ("Class/v_x.avi 1"),
    `testlist0K.txt` ("Class/v_x.avi"); the test list becomes the val split."""
    ind = _find_file(annotations, "classInd.txt")
    listing = Listing(entries=[])
    names: dict[int, str] = {}
    for number, line in text_lines(ind, listing.problems):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            listing.problems.append(malformed(ind, number, line, "'<index> <class>'"))
            continue
        names[int(parts[0])] = parts[1]
    listing.classes = [names[k] for k in sorted(names)]
    for kind, target in (("train", "train"), ("test", "val")):
        list_file = _find_file(annotations, f"{kind}list{split:02d}.txt")
        for number, line in text_lines(list_file, listing.problems):
            parts = line.split()
            if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
                listing.problems.append(malformed(list_file, number, line, "'<class>/<video> [<class index>]'"))
                continue
            rel = parts[0]
            if len(parts) == 2:
                class_name = names.get(int(parts[1]))
                if class_name is None:
                    listing.problems.append(Problem(str(root / rel), "unknown_class",
                                                    f"class index {parts[1]} not in {ind} "
                                                    f"({list_file.name} line {number})"))
                    continue
            else:
                class_name = Path(rel).parts[0] if len(Path(rel).parts) > 1 else None
                if class_name is None:
                    listing.problems.append(malformed(list_file, number, line, "'<class>/<video>'"))
                    continue
            listing.entries.append(Entry(root / rel, rel, class_name, target))
    return listing


def read_hmdb51_layout(data: Path, root: Path, classes: list[str] | None, *, annotations: Path,
                       split: int = 1) -> Listing:
    """HMDB51: `<class>_test_split<k>.txt` with `<video> <id>` lines; id 1 train, 2 test (-> val), 0 unused;
    videos at `DATA/<class>/<video>`."""
    pattern = re.compile(rf"^(.*)_test_split{split}\.txt$")
    files = sorted(f for f in _files_within(annotations, 2) if pattern.match(f.name))
    if not files:
        raise FileNotFoundError(f"{annotations}: no HMDB51 split files '*_test_split{split}.txt'")
    listing = Listing(entries=[], classes=sorted(pattern.match(f.name).group(1) for f in files))
    for list_file in files:
        class_name = pattern.match(list_file.name).group(1)
        for number, line in text_lines(list_file, listing.problems):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                listing.problems.append(malformed(list_file, number, line, "'<video> <0|1|2>'"))
                continue
            if parts[1] == "0":
                continue
            rel = f"{class_name}/{parts[0]}"
            listing.entries.append(Entry(root / rel, rel, class_name, "train" if parts[1] == "1" else "val"))
    return listing


def read_kinetics_layout(data: Path, root: Path, classes: list[str] | None) -> Listing:
    """Kinetics-style CSV with a header: `label,youtube_id,time_start,time_end[,split]` or `path,label[,split]`."""
    listing = Listing(entries=[], classes=classes)
    rows = csv_rows(data, listing.problems)
    header = next(([h.strip().lower() for h in row] for _, row in rows if "".join(row).strip()), [])
    has_path = "path" in header
    needed = ("path", "label") if has_path else ("label", "youtube_id", "time_start", "time_end")
    missing = [c for c in needed if c not in header]
    if missing:
        raise ValueError(f"{data}: line 1: CSV header lacks column(s) {missing}; expected {list(needed)} "
                         f"(optionally 'split')")
    col = {name: header.index(name) for name in header}
    finder = _StemIndex(root)
    for number, row in rows:
        if not "".join(row).strip():
            continue
        if len(row) < len(header):
            listing.problems.append(malformed(data, number, ",".join(row), f"{len(header)} columns"))
            continue
        split = _SPLIT_NAMES.get(row[col["split"]].strip().lower()) if "split" in col else None
        if "split" in col and split is None:
            listing.problems.append(malformed(data, number, ",".join(row), "split train|val|test"))
            continue
        where = f"{data.name} line {number}"
        path = root / row[col["path"]].strip() if has_path else finder.find(row, col, data, number, listing)
        if path is not None:
            listing.entries.append(Entry(path, _rel(path, root), row[col["label"]].strip() or None, split,
                                         where=where))
    return listing


class _StemIndex:
    """Finds the file of a `youtube_id, time_start, time_end` row by its name, anywhere under the root."""

    def __init__(self, root: Path):
        self.root = root
        self.by_stem: dict[str, list[Path]] | None = None

    def find(self, row: list[str], col: dict[str, int], data: Path, number: int, listing: Listing) -> Path | None:
        try:
            start, end = int(float(row[col["time_start"]])), int(float(row[col["time_end"]]))
        except ValueError:
            listing.problems.append(malformed(data, number, ",".join(row), "numeric time_start/time_end"))
            return None
        if self.by_stem is None:
            self.by_stem = _index_by_stem(self.root)
        youtube_id = row[col["youtube_id"]].strip()
        stem = f"{youtube_id}_{start:06d}_{end:06d}"
        found = self.by_stem.get(stem) or self.by_stem.get(youtube_id) or []
        if len(found) != 1:
            why = "no video file" if not found else f"{len(found)} video files"
            listing.problems.append(Problem(str(self.root / stem), "missing", f"{why} named '{stem}.*' under "
                                                                              f"{self.root} ({data.name} line "
                                                                              f"{number})"))
            return None
        return found[0]


LAYOUTS: dict[str, Callable[..., Listing]] = {
    "folder": read_folder_layout,
    "list": read_list_layout,
    "frame_list": read_frame_list_layout,
    "ucf101": read_ucf101_layout,
    "hmdb51": read_hmdb51_layout,
    "kinetics": read_kinetics_layout,
}


def detect_layout(data: str | os.PathLike, *, root: str | os.PathLike | None = None) -> str:
    """Guess the layout of `data` (see the module docstring); `root` resolves paths inside list files."""
    data = Path(data)
    if data.is_file():
        if data.suffix.lower() == ".csv":
            return "kinetics"
        base = Path(root) if root is not None else data.parent
        for _, line in text_lines(data, []):
            parts = line.rsplit(maxsplit=2)
            if len(parts) == 3 and parts[1].isdigit() and (base / parts[0]).is_dir():
                return "frame_list"
            break
        return "list"
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such file or folder")
    names = {f.name for f in _files_within(data, 2)}
    if "classInd.txt" in names:
        return "ucf101"
    if any(re.match(r".*_test_split\d\.txt$", n) for n in names):
        return "hmdb51"
    return "folder"


def list_entries(layout, data, root, declared, split_files, split, annotations) -> Listing:
    reader = LAYOUTS[layout]
    if layout in ("ucf101", "hmdb51"):
        if split_files:
            raise ValueError(f"layout {layout} takes its official split files; use split=1..3, not split_files")
        return reader(data, root, declared, annotations=annotations, split=split)
    if not split_files:
        if layout != "folder" and not data.is_file():
            raise ValueError(f"{data}: layout {layout} reads a list file; pass the file (or split files)")
        return reader(data, root, declared)
    unknown = [k for k in split_files if k not in SPLITS]
    if unknown:
        raise ValueError(f"split_files keys must be among {SPLITS}, got {unknown}")
    if layout == "folder":
        listing = reader(data, root, declared)
        member: dict[str, str] = {}
        for split_name, file in split_files.items():
            for number, line in text_lines(Path(file), listing.problems):
                rel = line if (data / line).exists() or len(line.split()) == 1 else line.rsplit(maxsplit=1)[0]
                member[rel.replace("\\", "/")] = split_name
        kept = []
        for entry in listing.entries:
            entry.split = member.pop(entry.video_id, None)
            if entry.split is not None:
                kept.append(entry)
        for rel, split_name in member.items():
            listing.problems.append(Problem(str(data / rel), "missing",
                                            f"listed in the {split_name} split file but not found under {data}"))
        listing.entries = kept
        return listing
    merged = Listing(entries=[], classes=declared)
    for split_name, file in split_files.items():
        part = reader(Path(file), root, declared)
        for entry in part.entries:
            entry.split = entry.split or split_name
        merged.entries += part.entries
        merged.problems += part.problems
    return merged


def _read_lines(data: Path, root: Path, classes: list[str] | None, *, frame_list: bool) -> Listing:
    listing = Listing(entries=[], classes=classes)
    expected = "'<frame folder> <num_frames> <label>'" if frame_list else "'<path> <label>'"
    for number, line in text_lines(data, listing.problems):
        parts = line.rsplit(maxsplit=2 if frame_list else 1)
        if len(parts) != (3 if frame_list else 2) or (frame_list and not parts[1].isdigit()):
            listing.problems.append(malformed(data, number, line, expected))
            continue
        rel, label = parts[0], parts[-1]
        class_name = label
        if classes is not None and label.lstrip("-").isdigit():
            index = int(label)
            if not 0 <= index < len(classes):
                listing.problems.append(Problem(str(root / rel), "unknown_class",
                                                f"class index {index} out of range 0..{len(classes) - 1} "
                                                f"({data.name} line {number})"))
                continue
            class_name = classes[index]
        elif label.startswith("-") and label[1:].isdigit():
            listing.problems.append(malformed(data, number, line, "a class index >= 0"))
            continue
        entry = Entry(root / rel, rel.replace("\\", "/"), class_name,
                      declared_frames=int(parts[1]) if frame_list else None, where=f"{data.name} line {number}")
        listing.entries.append(entry)
    return listing


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _files_within(folder: Path, depth: int):
    try:
        items = list(folder.iterdir())
    except OSError:
        return
    for item in items:
        if item.is_file():
            yield item
        elif item.is_dir() and depth > 1:
            yield from _files_within(item, depth - 1)


def _find_file(folder: Path, name: str) -> Path:
    for f in _files_within(folder, 3):
        if f.name.lower() == name.lower():
            return f
    raise FileNotFoundError(f"{folder}: no {name} found (pass the folder holding the split files)")


def _index_by_stem(root: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if p.suffix.lower() in VIDEO_EXTENSIONS:
                index.setdefault(p.stem, []).append(p)
    return index


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
