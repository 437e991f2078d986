"""`actionbert prepare`: index a dataset, check every video, split it, optionally cache its frames.

Output folder (`out`):

- `classes.txt`: one class name per line; line i is label i.
- `train.csv`, `val.csv` (and `test.csv` when the input names a separate test set): one usable video per row,
  columns `dataset.SPLIT_COLUMNS` (video_id, path, label, class_name, num_frames, fps, width, height,
  rotation), then `group` (the split group, see `splits.py`) and `caveat` (what to know about a video used
  anyway, "" when nothing: see `caveats.py`); read back with `dataset.load_split`.
- `problems.csv`: `path, kind, reason, action`: every file that cannot be used (`action` "skipped") or is used
  with a caveat (`action` "kept"), with the reason in words. A list line that cannot be parsed names its list
  file and line number.
- `prepare.json`: the options and counts of the run (`groups`: split groups among the usable videos).
- `cache/` with `--cache` (see `cache.py`), `frames/` plus `frames_<split>.txt` with `--frames`.

Input layouts: `layouts.py` (folder per class, list files, frame lists, UCF101, HMDB51, Kinetics CSV).

Decisions on bad input (each case lands in problems.csv and the run goes on):

- missing / unreadable path, zero-byte file, non-video file, audio-only file, file FFmpeg cannot open:
  skipped.
- a decoder error part-way (truncated or corrupt stream), or a damaged image in a frame folder: kept with the
  frames decoded before the error (indexing is by decoded order, so nothing beyond them is ever asked for),
  reported.
- fewer frames than the file's duration promises (a Matroska/WebM file cut short), a header frame count that
  disagrees with the decoded count by more than one frame and 1%: kept with the decoded count, reported. A
  frame list's declared count is checked the same way.
- fewer frames than one clip (`clip_len`, default 32): kept, with the caveat "short: N frames looped to fill
  a 32-frame clip" in the split CSV (not a problems.csv row: the file is fine).
- fewer decodable frames than `min_frames` (default 2): skipped. One frame is a still image: circular
  padding would turn it into a clip without motion, which teaches an action model nothing, and in practice
  it means a broken export or a thumbnail. Pass `min_frames=1` to keep such videos.
- an unknown class (not in the declared class list: classInd.txt, or `classes`), a malformed list line or one
  that is not UTF-8 (with file name and line number), a duplicate entry (the same file under two paths):
  skipped. Without a declared class list, labels that mix names and indices are refused and likely typos
  are skipped and reported (`labels.py`).
- a symbolic link to a folder above it or inside the dataset: not followed, reported (`walk.py`).
- non-ASCII paths and class names work (all files are UTF-8).

Split: `splits.py` (stratified per class, seeded; clips cut from one video stay in one split).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from actionbert.data.cache import (CACHE_DIRNAME, CACHE_SHORT_SIDE, DEFAULT_CACHE_RESIZE, FRAMES_DIRNAME,
                                   cache_file, cache_video, remove_cache, write_frame_folder)
from actionbert.data.caveats import judge
from actionbert.data.cliplist import CLIPS_CSV
from actionbert.data.dataset import write_split
from actionbert.data.decode import VIDEO_EXTENSIONS, VideoDecodeError, VideoInfo, probe
from actionbert.data.labels import check_inferred_labels, empty_index_classes
from actionbert.data.layouts import LAYOUTS, SPLITS, Entry, Listing, detect_layout, list_entries
from actionbert.data.problems import Problem, read_problems, text_lines, write_problems
from actionbert.data.splits import assign_splits, clip_groups, own_group, stratified_split
from actionbert.errors import DataError
from actionbert.fileio import atomic_write_text, to_json
from actionbert.preprocessing import Resize

__all__ = ["CLIPS_CSV", "GROUP_BY", "LAYOUTS", "SPLITS", "PrepareReport", "Problem", "detect_layout",
           "prepare_dataset", "read_problems", "stratified_split"]

#: `progress(stage, done, total)`: stage is "probe" ("probe+cache" with the cache) or "frames".
Progress = Callable[[str, int, int], None]

#: `group_by` choices: "auto" groups clips by the source video named in a `clips.csv`; "none" splits per video.
GROUP_BY = ("auto", "none")
#: Layouts whose labels are text typed by a user (checked by `labels.check_inferred_labels` without classes).
_TYPED_LABELS = ("list", "frame_list", "kinetics")
#: Clip length assumed by the "short" caveat when none is given (the paper's R(2+1)D clips).
DEFAULT_CLIP_LEN = 32


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
        short: usable videos with fewer frames than one clip (looped to fill it; "short" caveat).
        with_caveats: usable videos with any caveat (a non-empty `caveat` column).
    """

    out: Path
    layout: str
    classes: list[str]
    counts: dict[str, int]
    problems: list[Problem]
    cache_bytes: int = 0
    seconds: float = 0.0
    groups: int = 0
    short: int = 0
    with_caveats: int = 0

    @property
    def skipped(self) -> int:
        return sum(p.action == "skipped" for p in self.problems)


# --------------------------------------------------------------------------------------------- prepare
def prepare_dataset(data: str | os.PathLike, out: str | os.PathLike, *, layout: str = "auto",
                    root: str | os.PathLike | None = None, classes: str | os.PathLike | Sequence[str] | None = None,
                    split_files: Mapping[str, str | os.PathLike] | None = None, split: int = 1,
                    annotations: str | os.PathLike | None = None, val_fraction: float = 0.2, seed: int = 0,
                    min_frames: int = 2, cache: bool = False, frames: bool = False,
                    cache_short_side: int = CACHE_SHORT_SIDE, cache_resize: Resize = DEFAULT_CACHE_RESIZE,
                    workers: int = 2, group_by: str = "auto",
                    clip_len: int | None = DEFAULT_CLIP_LEN, progress: Progress | None = None) -> PrepareReport:
    """Index, check, split and optionally cache a dataset; returns a `PrepareReport` (files and rules: see the
    module docstring).

    Args:
        data: the dataset: a folder (folder, ucf101, hmdb51 layouts) or a list/CSV file.
        out: output folder (created).
        layout: a key of `LAYOUTS`, or "auto".
        root: where relative paths in list files start; default: the list file's folder (folder layouts: `data`).
        classes: declared class names in label order: a file (one name, or classInd.txt's "<index> <name>", per
            line) or a list; entries of other classes are reported as unknown. Default: the layout's own list
            (UCF101, HMDB51) or every class seen, sorted (integer labels keep their value; see `labels.py`).
        split_files: the user's own split, {"train": file, "val": file[, "test": file]}: lists in the layout's
            format; for the folder layout each line names a video by its path relative to `data` (the rest of
            the line is ignored) and unlisted videos are left out.
        split: official split number for ucf101 / hmdb51 (1..3).
        annotations: folder with the ucf101 / hmdb51 split files; default `data`.
        val_fraction: share of each class moved to val when the input does not define a val split.
        seed: seed of that split.
        min_frames: fewest decodable frames a usable video needs.
        cache: also write the decoded-frame cache (`out/cache`).
        frames: also write reference-style JPEG frame folders (`out/frames`) and their lists.
        cache_short_side: short side in pixels of exported JPEG frames (`frames`).
        cache_resize: resize rule of the cached frames: the model record's `resize` (default: the default's).
        workers: threads probing (and caching) videos in parallel.
        group_by: "auto": a video listed in a clips.csv of `clips.cut_clips` (in its folder or one above, up to
            `root`) stays in one split with the other clips of its source video; "none": every video alone.
        clip_len: frames of a training clip: a shorter video gets the "short" caveat; None: no such caveat.
        progress: `progress(stage, done, total)` callback; no printing happens here.

    Raises:
        FileNotFoundError / ValueError: the input cannot be used as a whole (nothing is written then).
    """
    started = time.time()
    data, out = Path(data), Path(out)
    root = Path(root) if root is not None else (data if data.is_dir() else data.parent)
    layout = _layout(data, root, layout, split_files, group_by, clip_len)
    listing, entries, problems = _index(layout, data, root, classes, split_files, split, annotations)
    cache_dir = out / CACHE_DIRNAME if cache else None  # one decoding pass per video measures it and caches it
    infos = _probe_all(entries, workers, progress, cache_dir, cache_resize)
    usable, cache_bytes = _usable(entries, infos, cache_dir, min_frames, clip_len, problems)
    class_names, groups, rows = _split(usable, listing, data, root, group_by, val_fraction, seed, problems)
    _write_outputs(out, class_names, rows, usable if frames else None, cache_short_side, workers, progress,
                   problems)
    report = _report(out, layout, class_names, rows, problems, usable, groups, cache_bytes, started)
    options = {"data": os.path.abspath(data), "layout": layout, "root": os.path.abspath(root), "split": split,
               "val_fraction": val_fraction, "seed": seed, "group_by": group_by, "min_frames": min_frames,
               "clip_len": clip_len, "cache": cache, "frames": frames, "cache_short_side": cache_short_side,
               "cache_resize": cache_resize.to_dict()}
    _write_record(out / "prepare.json", options, report)
    return report


def _index(layout: str, data: Path, root: Path, classes, split_files, split: int,
           annotations) -> tuple[Listing, list[Entry], list[Problem]]:
    """(the listing with the declared classes, its checked entries, the problems so far); a DataError for
    fewer than two classes, a ValueError for labels that mix names and indices."""
    declared = _declared_classes(classes)
    listing = list_entries(layout, data, root, declared, split_files, split, Path(annotations or data))
    problems = list(listing.problems)
    if declared is not None:
        listing.classes = declared
    entries = _checked_entries(listing, problems)
    if declared is None and layout in _TYPED_LABELS:
        entries = check_inferred_labels(entries, problems)  # raises on names mixed with indices
    _require_two_classes(_class_list(listing.classes, entries), data)
    return listing, entries, problems


def _split(usable: list[_Usable], listing: Listing, data: Path, root: Path, group_by: str, val_fraction: float,
           seed: int, problems: list[Problem]) -> tuple[list[str], list[str], dict[str, list[dict]]]:
    """(class names in label order, each usable video's split group, the rows of each split)."""
    class_names = _class_list(listing.classes, [u.entry for u in usable])
    if listing.classes is None:  # classes made from the labels: integer labels may leave classes empty
        problems += filter(None, [empty_index_classes(class_names, {u.entry.class_name for u in usable}, str(data))])
    groups = [own_group(u.entry.path) for u in usable]
    if group_by == "auto":
        groups = clip_groups([u.entry.path for u in usable], root, problems)
    assigned = assign_splits([u.entry for u in usable], val_fraction, seed, groups if group_by == "auto" else None)
    return class_names, groups, _split_rows(usable, assigned, groups, class_names)


def _write_outputs(out: Path, class_names: list[str], rows: dict[str, list[dict]], frames_of: list[_Usable] | None,
                   short_side: int, workers: int, progress: Progress | None, problems: list[Problem]) -> None:
    """classes.txt and the split CSVs, the frame folders of `frames_of` (None: none), then problems.csv."""
    _write_lists(out, class_names, rows)
    if frames_of is not None:
        _write_frames(rows, {u.entry.video_id: u.info for u in frames_of}, out, short_side, workers, progress,
                      problems)
    write_problems(out / "problems.csv", problems)


def _report(out: Path, layout: str, class_names: list[str], rows: dict[str, list[dict]], problems: list[Problem],
            usable: list[_Usable], groups: list[str], cache_bytes: int, started: float) -> PrepareReport:
    counts = {s: len(rows[s]) for s in SPLITS}
    return PrepareReport(out=out, layout=layout, classes=class_names, counts=counts, problems=problems,
                         cache_bytes=cache_bytes, seconds=round(time.time() - started, 3),
                         groups=len(set(groups)), short=sum(any(c.startswith("short:") for c in u.caveats)
                                                            for u in usable),
                         with_caveats=sum(bool(u.caveats) for u in usable))


def _write_record(path: Path, options: dict, report: PrepareReport) -> None:
    """prepare.json: the run's options, then its counts."""
    meta = {**options, "counts": report.counts, "groups": report.groups, "problems": len(report.problems),
            "skipped": report.skipped, "short": report.short, "with_caveats": report.with_caveats,
            "cache_bytes": report.cache_bytes, "seconds": report.seconds}
    atomic_write_text(path, to_json(meta))


def _layout(data: Path, root: Path, layout: str, split_files, group_by: str, clip_len: int | None) -> str:
    """The layout to read (detected for "auto"); ValueError for bad options."""
    if group_by not in GROUP_BY:
        raise ValueError(f"unknown group_by {group_by!r}; choose one of {GROUP_BY}")
    if clip_len is not None and clip_len < 1:
        raise ValueError(f"clip_len must be >= 1 (or None for no 'short' caveat), got {clip_len}")
    if split_files and not data.is_dir():
        raise ValueError(f"{data}: with split files, pass the folder the listed paths are relative to")
    if layout == "auto":
        layout = detect_layout(data)
        if split_files and layout == "folder" and not any(d.is_dir() and not d.name.startswith(".")
                                                           for d in data.iterdir()):
            layout = detect_layout(next(iter(split_files.values())), root=root)  # lists of flat files
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)} or 'auto'")
    return layout


@dataclass
class _Usable:
    """A video that will be in a split: its entry, probe result and caveats."""

    entry: Entry
    info: VideoInfo
    caveats: list[str]


def _usable(entries: list[Entry], infos: dict, cache_dir: Path | None, min_frames: int, clip_len: int | None,
            problems: list[Problem]) -> tuple[list[_Usable], int]:
    """Judge every probed entry (`caveats.judge`): the usable ones, and the bytes of their cache files."""
    usable, cache_bytes = [], 0
    for entry in entries:
        result, cached_bytes, cache_error = infos[id(entry)]
        if isinstance(result, VideoDecodeError):
            problems.append(Problem(str(entry.path), result.kind, result.problem))
            continue
        keep, notes, caveats = judge(str(entry.path), result, min_frames=min_frames, clip_len=clip_len,
                                     declared_frames=entry.declared_frames)
        problems.extend(notes)
        if keep:
            usable.append(_Usable(entry, result, caveats))
            cache_bytes += cached_bytes
            if cache_error is not None:
                problems.append(Problem(str(entry.path), "cache_failed", f"not cached ({cache_error}); it will "
                                                                         "be decoded at training time", "kept"))
        elif cache_dir is not None:
            remove_cache(cache_file(cache_dir, entry.video_id))  # an unusable video needs no cache
    return usable, cache_bytes


def _split_rows(usable: list[_Usable], assigned: list[str], groups: list[str],
                class_names: list[str]) -> dict[str, list[dict]]:
    """The rows of each split CSV, sorted by video id."""
    label_of = {name: i for i, name in enumerate(class_names)}
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for u, split_name, group in zip(usable, assigned, groups):
        entry, info = u.entry, u.info
        rows[split_name].append({
            "video_id": entry.video_id, "path": os.path.abspath(entry.path),
            "label": label_of.get(entry.class_name, -1), "class_name": entry.class_name or "",
            "num_frames": info.num_frames, "fps": info.fps, "width": info.width, "height": info.height,
            "rotation": info.rotation, "group": group, "caveat": "; ".join(u.caveats),
        })
    for split_name in SPLITS:
        rows[split_name].sort(key=lambda r: r["video_id"])
    return rows


def _write_lists(out: Path, class_names: list[str], rows: dict[str, list[dict]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in class_names))
    for split_name in SPLITS:
        if split_name != "test" or rows["test"]:
            write_split(out / f"{split_name}.csv", rows[split_name], extra_columns=("group", "caveat"))
    if not rows["test"] and (out / "test.csv").exists():
        (out / "test.csv").unlink()  # a stale test list from an earlier run would be read by load_split


def _checked_entries(listing: Listing, problems: list[Problem]) -> list[Entry]:
    """Drop duplicates (one file under two paths: links, hard links, two spellings; the path without a link
    is kept, else the first listed) and entries of unknown classes (when classes are declared); report them."""
    known = set(listing.classes) if listing.classes is not None else None
    seen: dict[object, Entry] = {}
    for entry in sorted(listing.entries, key=lambda e: _through_link(e.path)):  # stable: real paths first
        seen.setdefault(_identity(entry.path), entry)
    kept = []
    for entry in listing.entries:
        key = _identity(entry.path)
        if seen[key] is not entry:
            problems.append(Problem(str(entry.path), "duplicate",
                                    f"listed more than once (also as '{seen[key].video_id}'"
                                    f"{' in ' + seen[key].split if seen[key].split else ''})"))
            continue
        if entry.class_name is None and entry.split != "test":
            problems.append(Problem(str(entry.path), "unknown_class", "no class label"))
            continue
        if known is not None and entry.class_name is not None and entry.class_name not in known:
            problems.append(Problem(str(entry.path), "unknown_class",
                                    f"class '{entry.class_name}' is not in the class list"
                                    f"{f' ({entry.where})' if entry.where else ''}"))
            continue
        kept.append(entry)
    return kept


def _through_link(path: Path) -> bool:
    """Whether `path` reaches its file through a symbolic link (of the file or of a folder on the way)."""
    return os.path.realpath(path) != os.path.abspath(path)


def _identity(path: Path):
    """(st_dev, st_ino) of the file `path` leads to; its absolute path when it cannot be read."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.abspath(path)


def _probe_all(entries: list[Entry], workers: int, progress: Progress | None, cache_dir: Path | None,
               resize: Resize) -> dict[int, tuple[VideoInfo | VideoDecodeError, int, OSError | None]]:
    """Probe every entry, in parallel; with `cache_dir`, the same decoding pass writes its cache file.

    Returns: id(entry) -> (its VideoInfo or the VideoDecodeError, bytes of its cache file or 0, the error that
    kept the cache from being written, if any: the video is then probed instead).
    """
    def one(entry: Entry):
        try:
            if cache_dir is None:
                return entry, (probe(entry.path), 0, None)
            try:
                info, size = cache_video(entry.path, cache_file(cache_dir, entry.video_id), resize=resize)
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
        for number, line in text_lines(Path(classes)):  # a line that is not UTF-8: ValueError (order matters)
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
