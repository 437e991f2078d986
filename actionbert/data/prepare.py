"""`actionbert prepare`: index a dataset, check every video, split it, optionally cache its frames.

Output folder (`out`):

- `classes.txt`: one class name per line; line i is label i.
- `train.csv`, `val.csv` (and `test.csv` when the input names a separate test set): one usable video per row,
  columns `dataset.SPLIT_COLUMNS` (video_id, path, label, class_name, num_frames, fps, width, height,
  rotation) and then `group` (the split group, see "Split" below); read back with `dataset.load_split`.
- `problems.csv`: `path, kind, reason, action`: every file that cannot be used (`action` "skipped") or is used
  with a caveat (`action` "kept"), with the reason in words. A list line that cannot be parsed names its list
  file and line number.
- `prepare.json`: the options and counts of the run (`groups`: split groups among the usable videos).
- `cache/` with `--cache` (see `cache.py`), `frames/` plus `frames_<split>.txt` with `--frames`.

Input layouts (`LAYOUTS`; `layout="auto"` picks one with `detect_layout`):

- "folder": `DATA/<class>/<clip>.<ext>` (deeper folders allowed; a folder of images is a frame-folder video).
  With `DATA/train/<class>/...` and `DATA/val/<class>/...` (or `test/`), those folders are the split.
- "list": a text file of `<path> <label>` lines (mmaction2 style); the label is a class index or a name; the
  path may contain spaces (the label is the last field).
- "frame_list": the reference's list of frame folders, `<dir> <num_frames> <label>`, frames `img_%05d.jpg`.
- "ucf101": `classInd.txt` and `trainlistNN.txt` / `testlistNN.txt` (split `split`); the test list becomes
  val.csv, as in the reference.
- "hmdb51": `<class>_test_split<k>.txt` files with `<video> <id>` lines (1 train, 2 test -> val, 0 unused).
- "kinetics": a CSV with a header; either `label, youtube_id, time_start, time_end[, split]` (files named
  `<youtube_id>_<start:06d>_<end:06d>.<ext>` found anywhere under the root) or `path, label[, split]`.

Decisions on bad input (each case lands in problems.csv and the run goes on):

- missing / unreadable path, zero-byte file, non-video file, audio-only file, file FFmpeg cannot open:
  skipped.
- a decoder error part-way (truncated or corrupt stream): kept with the frames decoded before the error
  (indexing is by decoded order, so nothing beyond them is ever asked for), reported.
- a header frame count that disagrees with the decoded count by more than one frame and 1%: kept with the
  decoded count, reported. A frame list's declared count is checked the same way.
- fewer decodable frames than `min_frames` (default 2): skipped. One frame is a still image: circular
  padding would turn it into a clip without motion, which teaches an action model nothing, and in practice
  it means a broken export or a thumbnail. Pass `min_frames=1` to keep such videos.
- an unknown class (not in the declared class list: classInd.txt, or `classes`), a malformed list line (with
  file name and line number), a duplicate entry: skipped.
- non-ASCII paths and class names work (all files are UTF-8).

Split: when the input does not say, a stratified split per class with `val_fraction`, seeded and
independent of listing order (`stratified_split`). Clips cut from one long video are near duplicates, so
with `group_by="auto"` (the default) they are kept in one split: a video listed in a `clips.csv` written by
`actionbert clips` (looked for in the video's folder and its parents up to the data root; its `clip` column
is relative to its own folder) belongs to the group of its `source` video; every other video is a group of
its own. Groups go to val whole: visited in a seeded order, a group goes to val while every class it holds
stays at or below its target of round(n * val_fraction) val videos (at least 1, at most n - 1) and keeps a
train video; then each class with two or more groups but no val video yet gets its smallest group that can
go (which may exceed the target). A class whose videos all come from one source stays in train. Without any
clips.csv this is exactly the plain per-video split (at least one val video for classes with two or more
videos), which `group_by="none"` always uses. A `clips.csv` in a class folder is not reported as a
non-video file; one that cannot be read is reported (`bad_clips_csv`) and ignored.
"""

from __future__ import annotations

import csv
import os
import random
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from actionbert.data.cache import (CACHE_DIRNAME, CACHE_SHORT_SIDE, FRAMES_DIRNAME, cache_file, cache_video,
                                   write_frame_folder)
from actionbert.data.dataset import write_split
from actionbert.data.decode import VIDEO_EXTENSIONS, VideoDecodeError, VideoInfo, is_frame_folder, probe
from actionbert.errors import DataError
from actionbert.fileio import atomic_write_text, to_json

#: `progress(stage, done, total)`: stage is "probe" ("probe+cache" with the cache) or "frames".
Progress = Callable[[str, int, int], None]

SPLITS = ("train", "val", "test")
#: `group_by` choices: "auto" groups clips by the source video named in a `clips.csv`; "none" splits per video.
GROUP_BY = ("auto", "none")
#: The record `clips.cut_clips` writes beside its clips; its columns `clip` and `source` give the groups.
CLIPS_CSV = "clips.csv"
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class Problem:
    """One row of problems.csv.

    Attributes:
        path: the file (or list file) concerned.
        kind: short category, e.g. "missing", "empty", "not_video", "audio_only", "corrupt", "too_short",
            "frame_count_mismatch", "unknown_class", "malformed_line", "duplicate".
        reason: what is wrong, in words.
        action: "skipped" (not used) or "kept" (used; the reason is a caveat).
    """

    path: str
    kind: str
    reason: str
    action: str = "skipped"


@dataclass
class Entry:
    """A video listed by a layout reader, before probing."""

    path: Path
    video_id: str
    class_name: str | None
    split: str | None = None
    declared_frames: int | None = None


@dataclass
class Listing:
    """What a layout reader found: entries, the declared class order (if any), listing problems."""

    entries: list[Entry]
    classes: list[str] | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class PrepareReport:
    """Summary of a `prepare_dataset` run.

    Attributes:
        out: the output folder.
        layout: the layout used.
        classes: class names in label order.
        counts: usable videos per split ("train", "val", "test").
        problems: every problems.csv row.
        cache_bytes: bytes of cache files written (0 without `cache`).
        seconds: wall time of the run.
        groups: split groups among the usable videos (source videos of cut clips, plus every other video);
            equal to the number of usable videos with `group_by="none"` or when no clips.csv lists them.
    """

    out: Path
    layout: str
    classes: list[str]
    counts: dict[str, int]
    problems: list[Problem]
    cache_bytes: int = 0
    seconds: float = 0.0
    groups: int = 0

    @property
    def skipped(self) -> int:
        return sum(p.action == "skipped" for p in self.problems)


# --------------------------------------------------------------------------------------------- layouts
def read_folder_layout(data: Path, root: Path, classes: list[str] | None) -> Listing:
    """`DATA/<class>/...` (optionally under `DATA/train`, `DATA/val`, `DATA/test`)."""
    listing = Listing(entries=[], classes=classes)
    subdirs = _subdirs(data)
    split_dirs = {d.name.lower(): d for d in subdirs if d.name.lower() in _SPLIT_NAMES}
    if split_dirs and len(split_dirs) == len(subdirs):
        tops = [(d, _SPLIT_NAMES[name]) for name, d in sorted(split_dirs.items())]
    else:
        tops = [(data, None)]
    for top, split in tops:
        for item in sorted(top.iterdir(), key=lambda p: p.name):
            if item.name.startswith("."):
                continue
            if item.is_dir():
                for path in _walk_videos(item):
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
    for number, line in _lines(ind):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            listing.problems.append(_malformed(ind, number, line, "'<index> <class>'"))
            continue
        names[int(parts[0])] = parts[1]
    listing.classes = [names[k] for k in sorted(names)]
    for kind, target in (("train", "train"), ("test", "val")):
        list_file = _find_file(annotations, f"{kind}list{split:02d}.txt")
        for number, line in _lines(list_file):
            parts = line.split()
            if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
                listing.problems.append(_malformed(list_file, number, line, "'<class>/<video> [<class index>]'"))
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
                    listing.problems.append(_malformed(list_file, number, line, "'<class>/<video>'"))
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
        for number, line in _lines(list_file):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                listing.problems.append(_malformed(list_file, number, line, "'<video> <0|1|2>'"))
                continue
            if parts[1] == "0":
                continue
            rel = f"{class_name}/{parts[0]}"
            listing.entries.append(Entry(root / rel, rel, class_name, "train" if parts[1] == "1" else "val"))
    return listing


def read_kinetics_layout(data: Path, root: Path, classes: list[str] | None) -> Listing:
    """Kinetics-style CSV with a header: `label,youtube_id,time_start,time_end[,split]` or `path,label[,split]`."""
    listing = Listing(entries=[], classes=classes)
    by_stem: dict[str, list[Path]] | None = None
    with open(data, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        has_path = "path" in header
        needed = ("path", "label") if has_path else ("label", "youtube_id", "time_start", "time_end")
        missing = [c for c in needed if c not in header]
        if missing:
            raise ValueError(f"{data}: line 1: CSV header lacks column(s) {missing}; expected {list(needed)} "
                             f"(optionally 'split')")
        col = {name: header.index(name) for name in header}
        for number, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < len(header):
                listing.problems.append(_malformed(data, number, ",".join(row), f"{len(header)} columns"))
                continue
            label = row[col["label"]].strip() or None
            split = _SPLIT_NAMES.get(row[col["split"]].strip().lower()) if "split" in col else None
            if "split" in col and split is None:
                listing.problems.append(_malformed(data, number, ",".join(row), "split train|val|test"))
                continue
            if has_path:
                rel = row[col["path"]].strip()
                path = root / rel
            else:
                try:
                    start, end = int(float(row[col["time_start"]])), int(float(row[col["time_end"]]))
                except ValueError:
                    listing.problems.append(_malformed(data, number, ",".join(row), "numeric time_start/time_end"))
                    continue
                youtube_id = row[col["youtube_id"]].strip()
                if by_stem is None:
                    by_stem = _index_by_stem(root)
                stem = f"{youtube_id}_{start:06d}_{end:06d}"
                found = by_stem.get(stem) or by_stem.get(youtube_id) or []
                if len(found) != 1:
                    why = "no video file" if not found else f"{len(found)} video files"
                    listing.problems.append(Problem(str(root / stem), "missing",
                                                    f"{why} named '{stem}.*' under {root} ({data.name} line "
                                                    f"{number})"))
                    continue
                path = found[0]
            listing.entries.append(Entry(path, _rel(path, root), label, split))
    return listing


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
        for _, line in _lines(data):
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


# --------------------------------------------------------------------------------------------- prepare
def prepare_dataset(data: str | os.PathLike, out: str | os.PathLike, *, layout: str = "auto",
                    root: str | os.PathLike | None = None, classes: str | os.PathLike | Sequence[str] | None = None,
                    split_files: Mapping[str, str | os.PathLike] | None = None, split: int = 1,
                    annotations: str | os.PathLike | None = None, val_fraction: float = 0.2, seed: int = 0,
                    min_frames: int = 2, cache: bool = False, frames: bool = False,
                    cache_short_side: int = CACHE_SHORT_SIDE, workers: int = 2, group_by: str = "auto",
                    progress: Progress | None = None) -> PrepareReport:
    """Index, check, split and optionally cache a dataset (see the module docstring for files and rules).

    Args:
        data: the dataset: a folder (folder, ucf101, hmdb51 layouts) or a list/CSV file.
        out: output folder (created).
        layout: a key of `LAYOUTS`, or "auto".
        root: folder that relative paths in list files resolve against; default: the list file's folder
            (for folder-like layouts, `data` itself).
        classes: declared class names in label order: a file (one name per line, or "<index> <name>" lines
            like classInd.txt) or a list. Entries with other classes are reported as unknown. Default: the
            layout's own list (UCF101, HMDB51) or every class seen, sorted (integer labels keep their value).
        split_files: the user's own split, {"train": file, "val": file[, "test": file]}. For list layouts
            each file is a list in that layout's format; for the folder layout each line names a video by
            its path relative to `data` (anything after the path is ignored) and unlisted videos are left
            out.
        split: official split number for ucf101 / hmdb51 (1..3).
        annotations: folder with the ucf101 / hmdb51 split files; default `data`.
        val_fraction: share of each class moved to val when the input does not define a val split.
        seed: seed of that split.
        min_frames: fewest decodable frames a usable video needs.
        cache: also write the decoded-frame cache (`out/cache`).
        frames: also write reference-style JPEG frame folders (`out/frames`) and their lists.
        cache_short_side: short side in pixels of cached and exported frames.
        workers: threads probing (and caching) videos in parallel.
        group_by: "auto": a video listed in a clips.csv written by `clips.cut_clips` (in its folder or a
            parent folder up to `root`) is grouped with the other clips of its source video, and groups are
            never split between train and val; "none": every video alone (the plain per-video split).
        progress: `progress(stage, done, total)` callback; no printing happens here.

    Returns:
        A `PrepareReport`.
    """
    started = time.time()
    if group_by not in GROUP_BY:
        raise ValueError(f"unknown group_by {group_by!r}; choose one of {GROUP_BY}")
    data, out = Path(data), Path(out)
    root = Path(root) if root is not None else (data if data.is_dir() else data.parent)
    if split_files and not data.is_dir():
        raise ValueError(f"{data}: with split files, pass the folder the listed paths are relative to")
    if layout == "auto":
        layout = detect_layout(data)
        if split_files and layout == "folder" and not _subdirs(data):
            layout = detect_layout(next(iter(split_files.values())), root=root)  # lists of flat files
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)} or 'auto'")
    declared = _declared_classes(classes)
    listing = _list_entries(layout, data, root, declared, split_files, split, Path(annotations or data))
    problems = list(listing.problems)
    if declared is not None:
        listing.classes = declared

    entries = _checked_entries(listing, problems)
    _require_two_classes(_class_list(listing.classes, entries), data)
    # one decoding pass per video measures it and, with `cache`, writes its cache file at the same time
    cache_dir = out / CACHE_DIRNAME if cache else None
    infos = _probe_all(entries, workers, progress, cache_dir, cache_short_side)
    usable: list[tuple[Entry, VideoInfo]] = []
    cache_bytes = 0
    for entry in entries:
        result, cached_bytes, cache_error = infos[id(entry)]
        if isinstance(result, VideoDecodeError):
            problems.append(Problem(str(entry.path), result.kind, result.problem))
            continue
        keep, notes = _judge(entry, result, min_frames)
        problems.extend(notes)
        if keep:
            usable.append((entry, result))
            cache_bytes += cached_bytes
            if cache_error is not None:
                problems.append(Problem(str(entry.path), "cache_failed", f"not cached ({cache_error}); it will "
                                                                         "be decoded at training time", "kept"))
        elif cache_dir is not None:
            cache_file(cache_dir, entry.video_id).unlink(missing_ok=True)  # an unusable video needs no cache

    class_names = _class_list(listing.classes, [e for e, _ in usable])
    groups = [_own_group(e.path) for e, _ in usable]
    if group_by == "auto":
        groups = _clip_groups([e.path for e, _ in usable], root, problems)
    assigned = _assign_splits([e for e, _ in usable], val_fraction, seed,
                              groups if group_by == "auto" else None)
    label_of = {name: i for i, name in enumerate(class_names)}
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for (entry, info), split_name, group in zip(usable, assigned, groups):
        rows[split_name].append({
            "video_id": entry.video_id, "path": os.path.abspath(entry.path),
            "label": label_of.get(entry.class_name, -1), "class_name": entry.class_name or "",
            "num_frames": info.num_frames, "fps": info.fps, "width": info.width, "height": info.height,
            "rotation": info.rotation, "group": group,
        })
    for split_name in SPLITS:
        rows[split_name].sort(key=lambda r: r["video_id"])

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in class_names))
    for split_name in SPLITS:
        if split_name != "test" or rows["test"]:
            write_split(out / f"{split_name}.csv", rows[split_name], extra_columns=("group",))
    if not rows["test"] and (out / "test.csv").exists():
        (out / "test.csv").unlink()  # a stale test list from an earlier run would be read by load_split

    info_of = {entry.video_id: info for entry, info in usable}
    if frames:
        _write_frames(rows, info_of, out, cache_short_side, workers, progress, problems)

    _write_problems(out / "problems.csv", problems)
    counts = {s: len(rows[s]) for s in SPLITS}
    report = PrepareReport(out=out, layout=layout, classes=class_names, counts=counts, problems=problems,
                           cache_bytes=cache_bytes, seconds=round(time.time() - started, 3),
                           groups=len(set(groups)))
    meta = {"data": os.path.abspath(data), "layout": layout, "root": os.path.abspath(root), "split": split,
            "val_fraction": val_fraction, "seed": seed, "group_by": group_by, "min_frames": min_frames,
            "cache": cache, "frames": frames, "cache_short_side": cache_short_side, "counts": counts,
            "groups": report.groups,
            "problems": len(problems), "skipped": report.skipped, "cache_bytes": cache_bytes,
            "seconds": report.seconds}
    atomic_write_text(out / "prepare.json", to_json(meta))
    return report


def stratified_split(class_names: Sequence[str | None], val_fraction: float, seed: int,
                     keys: Sequence[str] | None = None, groups: Sequence[str] | None = None) -> list[str]:
    """Assign "train" or "val" to each item so every class gets about `round(n * val_fraction)` val items.

    Without `groups`, each class gets exactly that many val items, but at least one val and one train item
    when it has n >= 2 items (and `val_fraction` > 0); a class with one item stays in train. Items are
    ordered by `keys` (e.g. video ids) before a seeded shuffle, so the result does not depend on listing order.

    With `groups` (e.g. the long video each clip was cut from), the items of a group always share a split;
    this is what keeps near-duplicate clips of one source out of both train and val. Rule, per class c with
    n_c items: the target is t_c = round(n_c * val_fraction), raised to 1 and capped at n_c - 1 when
    n_c >= 2 (the no-groups count); then

    1. fill: the groups, sorted by name and shuffled with `seed`, are visited once; a group goes to val when,
       for every class it contains, the class's val items stay at or below t_c and at least one of its items
       stays in train;
    2. guarantee: each class (by name) with items in two or more groups but no val item yet moves one train
       group to val: the one with the fewest items of that class (first in the visiting order on ties) among
       those whose move leaves every class they contain at least one train item (none: the class stays
       without val).

    So a class's val count never exceeds t_c except through step 2 (it then receives one whole group), a
    class with one group, or one item, stays in train, and a class that has items in at least two groups
    always keeps a train item. Groups are identified by `str(group)`; when no two items share a group the
    result is exactly that of `groups=None`.

    Args:
        class_names: class of each item.
        val_fraction: share of each class for val, in [0, 1).
        seed: shuffle seed.
        keys: sort keys of the items (used without groups); default their positions.
        groups: group of each item; default every item alone.

    Returns:
        "train" / "val" per item, in input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if groups is not None:
        if len(groups) != len(class_names):
            raise ValueError(f"groups has {len(groups)} entries for {len(class_names)} items")
        names = [str(g) for g in groups]
        if len(set(names)) < len(names):
            return _grouped_split([str(c) for c in class_names], names, val_fraction, seed)
    keys = list(keys) if keys is not None else [f"{i:012d}" for i in range(len(class_names))]
    by_class: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        by_class.setdefault(str(name), []).append(i)
    result = ["train"] * len(class_names)
    rng = random.Random(seed)
    for name in sorted(by_class):
        members = sorted(by_class[name], key=lambda i: keys[i])
        rng.shuffle(members)
        n = len(members)
        n_val = _val_target(n, val_fraction)
        for i in members[:n_val]:
            result[i] = "val"
    return result


def _val_target(n: int, val_fraction: float) -> int:
    """Val items wanted for a class of n items: round(n * val_fraction), within [1, n - 1] when n >= 2."""
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return n_val


def _grouped_split(class_names: list[str], groups: list[str], val_fraction: float, seed: int) -> list[str]:
    """The group-aware rule of `stratified_split` (see there); returns "train" / "val" per item."""
    count: dict[str, dict[str, int]] = {}  # group -> class -> items
    for c, g in zip(class_names, groups):
        count.setdefault(g, {}).setdefault(c, 0)
        count[g][c] += 1
    n = Counter(class_names)
    target = {c: _val_target(k, val_fraction) for c, k in n.items()}
    order = sorted(count)
    random.Random(seed).shuffle(order)
    in_val: set[str] = set()
    val = dict.fromkeys(n, 0)

    def keeps_train(g: str) -> bool:
        return all(val[c] + k < n[c] for c, k in count[g].items())

    for g in order:
        if all(val[c] + k <= target[c] for c, k in count[g].items()) and keeps_train(g):
            in_val.add(g)
            for c, k in count[g].items():
                val[c] += k
    if val_fraction > 0:
        for c in sorted(n):
            candidates = [g for g in order if c in count[g]]
            if val[c] or len(candidates) < 2:
                continue
            movable = [g for g in candidates if g not in in_val and keeps_train(g)]
            if movable:
                g = min(movable, key=lambda g: count[g][c])  # min keeps the first of equals: visiting order
                in_val.add(g)
                for d, k in count[g].items():
                    val[d] += k
    return ["val" if g in in_val else "train" for g in groups]


# --------------------------------------------------------------------------------------------- helpers
def _list_entries(layout, data, root, declared, split_files, split, annotations) -> Listing:
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
            for number, line in _lines(Path(file)):
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
    for number, line in _lines(data):
        parts = line.rsplit(maxsplit=2 if frame_list else 1)
        if len(parts) != (3 if frame_list else 2) or (frame_list and not parts[1].isdigit()):
            listing.problems.append(_malformed(data, number, line, expected))
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
            listing.problems.append(_malformed(data, number, line, "a class index >= 0"))
            continue
        entry = Entry(root / rel, rel.replace("\\", "/"), class_name,
                      declared_frames=int(parts[1]) if frame_list else None)
        listing.entries.append(entry)
    return listing


def _checked_entries(listing: Listing, problems: list[Problem]) -> list[Entry]:
    """Drop duplicates and entries of unknown classes (when classes are declared); report them."""
    known = set(listing.classes) if listing.classes is not None else None
    seen: dict[str, Entry] = {}
    kept = []
    for entry in listing.entries:
        key = os.path.abspath(entry.path)
        if key in seen:
            problems.append(Problem(str(entry.path), "duplicate",
                                    f"listed more than once (also as '{seen[key].video_id}'"
                                    f"{' in ' + seen[key].split if seen[key].split else ''})"))
            continue
        seen[key] = entry
        if entry.class_name is None and entry.split != "test":
            problems.append(Problem(str(entry.path), "unknown_class", "no class label"))
            continue
        if known is not None and entry.class_name is not None and entry.class_name not in known:
            problems.append(Problem(str(entry.path), "unknown_class",
                                    f"class '{entry.class_name}' is not in the class list"))
            continue
        kept.append(entry)
    return kept


def _probe_all(entries: list[Entry], workers: int, progress: Progress | None, cache_dir: Path | None,
               short_side: int) -> dict[int, tuple[VideoInfo | VideoDecodeError, int, OSError | None]]:
    """Probe every entry, in parallel; with `cache_dir`, the same decoding pass writes its cache file.

    Returns: id(entry) -> (its VideoInfo or the VideoDecodeError, bytes of its cache file or 0, the error that
    kept the cache from being written, if any: the video is then probed instead).
    """
    def one(entry: Entry):
        try:
            if cache_dir is None:
                return entry, (probe(entry.path), 0, None)
            try:
                info, size = cache_video(entry.path, cache_file(cache_dir, entry.video_id), short_side=short_side)
                return entry, (info, size, None)
            except OSError as e:  # disk full, permissions, ...: the video itself may be fine
                return entry, (probe(entry.path), 0, e)
        except VideoDecodeError as e:
            return entry, (e, 0, None)

    results = {}
    total, stage = len(entries), "probe" if cache_dir is None else "probe+cache"
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (entry, result) in enumerate(pool.map(one, entries), start=1):
            results[id(entry)] = result
            if progress is not None:
                progress(stage, done, total)
    return results


def _judge(entry: Entry, info: VideoInfo, min_frames: int) -> tuple[bool, list[Problem]]:
    """Whether a probed video is usable, and the problems.csv notes about it."""
    path, n = str(entry.path), info.num_frames
    if n < min_frames:
        return False, [Problem(path, "too_short", f"only {n} decodable frame{'s' * (n != 1)}; at least "
                                                  f"{min_frames} needed (min_frames)")]
    notes = []
    if info.decode_error:
        notes.append(Problem(path, "corrupt", f"truncated or corrupt: {info.decode_error}; using the {n} frames "
                                              f"before it", "kept"))
    for source, claimed in (("header", info.header_frames), ("list", entry.declared_frames)):
        if source == "header" and info.decode_error:
            continue  # a header describes the whole file; a truncated one is already reported above
        if claimed is not None and abs(claimed - n) > max(1, 0.01 * n):
            notes.append(Problem(path, "frame_count_mismatch", f"{source} claims {claimed} frames but {n} "
                                                                f"decode; using {n}", "kept"))
    return True, notes


def _assign_splits(entries: list[Entry], val_fraction: float, seed: int,
                   groups: list[str] | None = None) -> list[str]:
    """Keep the splits the input gave; split the rest by class (whole `groups` at a time, when given). When
    the input names no val video at all, its train videos are split too (e.g. `DATA/train` + `DATA/test`, or
    a Kinetics CSV of train rows)."""
    splits = [e.split for e in entries]
    splittable = (None,) if "val" in splits else (None, "train")
    open_items = [i for i, s in enumerate(splits) if s in splittable]
    chosen = stratified_split([entries[i].class_name for i in open_items], val_fraction, seed,
                              keys=[entries[i].video_id for i in open_items],
                              groups=None if groups is None else [groups[i] for i in open_items])
    for i, s in zip(open_items, chosen):
        splits[i] = s
    return splits


def _own_group(path: Path) -> str:
    """The group of a video cut from nothing we know of: its own absolute path (symbolic links of its folders
    resolved, the same spelling `_clip_groups` gives the source videos of clips)."""
    return os.path.join(os.path.realpath(Path(path).parent), Path(path).name)


def _clip_groups(paths: Sequence[Path], root: Path, problems: list[Problem]) -> list[str]:
    """The split group of each video: the `source` of the row naming it in a clips.csv, else `_own_group`.

    The clips.csv files looked at are those in the video's folder and its parents up to `root` (for a video
    outside `root`, its folder and the one above, where `cut_clips` puts the record of labelled clips); each
    is read once. A `clip` cell is relative to its csv's folder. An absolute `source` is resolved like
    `_own_group` (so a source video that is itself in the dataset shares its clips' group); a relative one is
    kept as written (it was relative to where `cut_clips` ran). A clips.csv that cannot be read is reported
    in `problems` and ignored.
    """
    root_real = os.path.realpath(root)
    tables: dict[str, dict[str, str]] = {}  # folder (resolved) -> {clip path: group}, {} without clips.csv
    groups = []
    for path in paths:
        folder = os.path.realpath(Path(path).parent)
        key = os.path.join(folder, Path(path).name)
        group = None
        for candidate in _folders_up(folder, root_real):
            if candidate not in tables:
                tables[candidate] = _read_clips_csv(Path(candidate) / CLIPS_CSV, problems)
            group = tables[candidate].get(key)
            if group is not None:
                break
        groups.append(group if group is not None else key)
    return groups


def _folders_up(folder: str, root: str) -> list[str]:
    """`folder` and its parents up to `root` (both resolved); `folder` and its parent when outside `root`."""
    if os.path.commonpath([folder, root]) != root:
        return [folder, os.path.dirname(folder)]
    chain = [folder]
    while chain[-1] != root:
        chain.append(os.path.dirname(chain[-1]))
    return chain


def _read_clips_csv(file: Path, problems: list[Problem]) -> dict[str, str]:
    """{resolved clip path: group of its source} from a clips.csv of `cut_clips`; {} when there is none."""
    if not file.is_file():
        return {}
    folder = os.path.realpath(file.parent)
    table = {}
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("clip", "source") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"line 1: no column(s) {missing} (a clips.csv of `actionbert clips` has "
                                 f"clip, source, start, end, ...)")
            for row in reader:
                clip, source = (row["clip"] or "").strip(), (row["source"] or "").strip()
                if clip and source:
                    group = _own_group(Path(source)) if os.path.isabs(source) else source
                    table[os.path.normpath(os.path.join(folder, clip))] = group
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        problems.append(Problem(str(file), "bad_clips_csv", f"not used to group clips by source video: {e}"))
        return {}
    return table


def _require_two_classes(class_names: list[str], data: Path) -> None:
    """Refuse a one-class dataset before anything is written: a classifier needs at least two classes."""
    if len(class_names) == 1:
        raise DataError(f"{data}: only one class ({class_names[0]}); classification needs at least 2 classes: add "
                        "videos of another class (a folder per class), or declare the classes with --classes")


def _class_list(declared: list[str] | None, entries: list[Entry]) -> list[str]:
    if declared is not None:
        return list(declared)
    names = {e.class_name for e in entries if e.class_name is not None}
    if names and all(n.isdigit() for n in names):
        return [str(i) for i in range(max(int(n) for n in names) + 1)]  # integer labels keep their value
    return sorted(names)


def _declared_classes(classes) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        names = []
        for number, line in _lines(Path(classes)):
            parts = line.split(maxsplit=1)
            names.append(parts[1] if len(parts) == 2 and parts[0].isdigit() else line)
        return names
    return [str(c) for c in classes]


def _write_frames(rows, info_of, out, short_side, workers, progress, problems) -> None:
    frames_dir = out / FRAMES_DIRNAME
    jobs = [(s, r) for s in SPLITS for r in rows[s]]

    def one(job):
        split_name, row = job
        rel = str(Path(row["video_id"]).with_suffix("")) if Path(row["video_id"]).suffix.lower() in \
            VIDEO_EXTENSIONS else row["video_id"]
        try:
            count = write_frame_folder(row["path"], frames_dir / rel, short_side=short_side,
                                       info=info_of[row["video_id"]])
            return job, rel, count
        except (VideoDecodeError, OSError) as e:
            return job, rel, e

    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, ((split_name, row), rel, result) in enumerate(pool.map(one, jobs), start=1):
            if isinstance(result, Exception):
                problems.append(Problem(row["path"], "frames_failed", f"frames not written ({result})", "kept"))
            else:
                lines[split_name].append(f"{rel} {result} {row['label']}\n")
            if progress is not None:
                progress("frames", done, len(jobs))
    for split_name in SPLITS:
        if lines[split_name]:
            (out / f"frames_{split_name}.txt").write_text("".join(lines[split_name]), encoding="utf-8")


def _write_problems(file: Path, problems: list[Problem]) -> None:
    with open(file, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "kind", "reason", "action"])
        for p in problems:
            writer.writerow([p.path, p.kind, p.reason, p.action])


def read_problems(file: str | os.PathLike) -> list[Problem]:
    """Read a problems.csv back."""
    with open(file, newline="", encoding="utf-8") as f:
        return [Problem(**row) for row in csv.DictReader(f)]


def _lines(file: Path):
    """(1-based line number, stripped line) of the non-empty, non-comment lines of a UTF-8 text file."""
    try:
        text = Path(file).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not UTF-8 text ({e})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _malformed(file: Path, number: int, line: str, expected: str) -> Problem:
    shown = line if len(line) <= 80 else line[:77] + "..."
    return Problem(str(file), "malformed_line", f"{Path(file).name} line {number}: expected {expected}, "
                                                f"got '{shown}'")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _walk_videos(folder: Path):
    """Files under a class folder (any extension: non-videos get reported); a sub-folder of images without
    sub-folders is a frame-folder video."""
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.startswith("."):
            continue
        if not item.is_dir():
            if item.name != CLIPS_CSV:  # the record `cut_clips` keeps beside its clips, read for the split
                yield item
        elif is_frame_folder(item) and not any(d.is_dir() for d in item.iterdir()):
            yield item
        else:
            yield from _walk_videos(item)


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
