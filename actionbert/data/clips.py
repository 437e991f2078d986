"""`actionbert clips`: cut long videos into action clips (the brief's scene / rule / manual extraction).

Three ways to choose the cuts (`METHODS`):

- "scenes": PySceneDetect's content detector (HSV + edge change between consecutive frames) run on frames we
  decode ourselves at about 256 px wide (rotation applied, frames in decoded order); `threshold` and
  `min_scene_len` are the detector's options; each scene becomes a clip.
- "fixed": windows of `length` seconds every `stride` seconds (default: back to back); a last window shorter
  than `length` is dropped unless `keep_last`.
- "csv": rows `video,start,end[,label]` from a CSV file (a header row is optional); times are seconds
  (`12.5`, `12.5s`) or timecodes (`MM:SS[.fff]`, `HH:MM:SS[.fff]`). With labels, clips are written to
  `out/<label>/`, i.e. directly in the folder-per-class layout `prepare` reads. Every malformed row is
  reported (file and line number) before anything is cut.

Times map to frames through the decoded frames' own timestamps (`decode.frame_table`), so variable frame rates
are handled: a clip `[start, end)` holds the frames whose presentation time t satisfies start <= t < end.

Writing: when a clip starts on a keyframe and ends on a keyframe (or at the end of the video), its packets are
copied unchanged ("copy": fast, lossless); otherwise the clip is decoded and re-encoded with H.264 (or MPEG-4
Part 2 when libx264 is missing) at the measured frame rate ("reencode"). Rotated videos are always re-encoded,
with the rotation applied to the pixels. Audio is not written (the models do not use it). Every clip is listed
in `out/clips.csv`: clip (relative to out), source, start, end (seconds), start_frame, end_frame (exclusive),
label, mode (`cliplist.py`).

Cutting into a folder that already holds clips: `clips.csv` keeps the earlier rows and gains the new ones (so
`prepare` still knows the source video of every clip in the folder), new clips never take the name of an
existing file (a `-2`, `-3` ... suffix instead), and a video that the folder's clips.csv already lists as a
source is refused (two cuts of one video in one folder would be near-duplicates) unless `overwrite`, which
deletes that video's earlier clips and rows first. The record is rewritten (atomically) after each source
video, so an interrupted run loses no record of the videos it finished.
"""

from __future__ import annotations

import bisect
import csv
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Sequence

import av
import av.error
import numpy as np

from actionbert.data.cliplist import CLIP_COLUMNS, CLIPS_CSV, read_clip_rows, same_video, write_clip_rows
from actionbert.data.decode import FrameTable, VideoDecodeError, frame_table, iter_frames

METHODS = ("scenes", "fixed", "csv")
#: `progress(stage, done, total)`; stage names the step and the video, e.g. "scenes talk.mp4".
Progress = Callable[[str, int, int], None]
__all__ = ["CLIP_COLUMNS", "METHODS", "ClipRecord", "ClipReport", "ClipSpecError", "cut_clips", "encode_frames",
           "parse_time", "read_cut_list"]


class ClipSpecError(ValueError):
    """The cut list cannot be used; the message names the file and line of every bad row."""


@dataclass(frozen=True)
class ClipRecord:
    """One written clip (a row of clips.csv).

    Attributes:
        clip: the clip file.
        source: the video it was cut from.
        start: start time in seconds (time of its first frame, from the source's first frame).
        end: end time in seconds (time of the first frame after the clip, or the source's end).
        start_frame: first frame index in the source (decoded order).
        end_frame: index after the last frame (exclusive).
        label: class label from the cut list, "" otherwise.
        mode: "copy" (packets copied) or "reencode".
    """

    clip: Path
    source: Path
    start: float
    end: float
    start_frame: int
    end_frame: int
    label: str
    mode: str


@dataclass
class ClipReport:
    """Result of `cut_clips`: the clips written and the sources that could not be used (path, reason)."""

    clips: list[ClipRecord] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    csv_path: Path | None = None


@dataclass(frozen=True)
class _Segment:
    start_frame: int
    end_frame: int
    label: str = ""


def cut_clips(videos: Sequence[str | os.PathLike], out: str | os.PathLike, *, method: str = "scenes",
              threshold: float = 27.0, min_scene_len: int = 15, min_duration: float = 0.0, length: float = 2.0,
              stride: float | None = None, keep_last: bool = False, csv_file: str | os.PathLike | None = None,
              copy: bool = True, overwrite: bool = False, progress: Progress | None = None) -> ClipReport:
    """Cut videos into clip files and write `out/clips.csv` (earlier rows kept, see the module docstring).

    Args:
        videos: source videos ("scenes", "fixed"); for "csv", optional files that rows may name by file name.
        out: output folder (created).
        method: one of `METHODS`.
        threshold: content detector threshold (PySceneDetect's default 27; lower cuts more).
        min_scene_len: fewest frames between two scene cuts.
        min_duration: clips shorter than this many seconds are not written (any method).
        length: "fixed" window length in seconds.
        stride: "fixed" step between window starts in seconds; default `length`.
        keep_last: "fixed": also write the last, shorter window.
        csv_file: the cut list for "csv".
        copy: allow stream copy for keyframe-aligned cuts; False always re-encodes.
        overwrite: replace the clips an earlier run cut from the same source videos into `out` (their files
            are deleted, their rows dropped); without it such a source is refused.
        progress: `progress(stage, done, total)` callback.

    Returns:
        The `ClipReport` (`clips`: this run's clips).

    Raises:
        ClipSpecError: bad method options, a bad cut list (every bad row is named), an `out/clips.csv` that is
            not a record of this command, or a source already cut into `out` (without `overwrite`); nothing is
            cut or deleted then.
    """
    plan, sources = _plan(method, videos, length, stride, csv_file)
    out = Path(out)
    rows = _previous_rows(out, sources, overwrite)
    report = ClipReport(csv_path=out / CLIPS_CSV)
    used_names: set[Path] = set()
    out.mkdir(parents=True, exist_ok=True)
    for number, source in enumerate(sources, start=1):
        try:
            table = frame_table(source)
        except VideoDecodeError as e:
            report.problems.append((str(source), e.problem))
            continue
        if progress is not None:
            progress("index", number, len(sources))
        if method == "scenes":
            segments = _scene_segments(source, table, threshold, min_scene_len, progress)
        elif method == "fixed":
            segments = _fixed_segments(table, length, stride or length, keep_last)
        else:
            segments = _listed_segments(source, table, plan[source], report)
        segments = [s for s in segments if _seconds(table, s) >= min_duration and s.end_frame > s.start_frame]
        _cut_source(source, table, segments, out, copy, used_names, report, rows, progress)
        write_clip_rows(report.csv_path, rows)  # after each source: an interrupted run keeps these records
    write_clip_rows(report.csv_path, rows)
    return report


def _plan(method: str, videos: Sequence[str | os.PathLike], length: float, stride: float | None,
          csv_file: str | os.PathLike | None) -> tuple[dict, list[Path]]:
    """(the cut list's rows by source, the sources in order) after checking the method's options."""
    if method not in METHODS:
        raise ClipSpecError(f"unknown method {method!r}; choose one of {METHODS}")
    if method == "fixed" and (length <= 0 or (stride is not None and stride <= 0)):
        raise ClipSpecError(f"fixed windows need length > 0 and stride > 0, got {length}, {stride}")
    if method == "csv":
        if csv_file is None:
            raise ClipSpecError("method 'csv' needs a cut list (csv_file)")
        plan = read_cut_list(csv_file, videos)
        return plan, list(plan)
    return {}, [Path(v) for v in videos]


def _listed_segments(source: Path, table: FrameTable, listed: list, report: ClipReport) -> list[_Segment]:
    """The segments of one source's cut-list rows; a row starting at or after the video's end is a problem."""
    segments = []
    video_end = _time_of(table, len(table.times))
    for start, end, label, where in listed:
        if start >= video_end:
            report.problems.append((str(source), f"{where}: start {start:.3f} s is at or after the "
                                                 f"video's end ({video_end:.3f} s)"))
            continue
        first, stop = _frame_at(table, start), _frame_at(table, end)
        if stop > first:
            segments.append(_Segment(first, stop, label))
    return segments


def _cut_source(source: Path, table: FrameTable, segments: list[_Segment], out: Path, copy: bool, used_names: set[Path],
                report: ClipReport, rows: list[dict], progress: Progress | None) -> None:
    """Write one source's segments as clips, adding each to the report and to `rows`; a clip that cannot be
    written is a problem and the others are still cut."""
    for k, segment in enumerate(segments, start=1):
        folder = out / _safe(segment.label) if segment.label else out
        target = _unique(folder / f"{source.stem}_{k:04d}", used_names, (".mp4", source.suffix.lower()))
        try:
            record = _write_clip(source, target, table, segment, copy)
        except (VideoDecodeError, av.error.FFmpegError, OSError) as e:
            report.problems.append((str(source), f"clip {k} (frames {segment.start_frame}-"
                                                 f"{segment.end_frame - 1}) not written: {e}"))
            continue
        report.clips.append(record)
        rows.append(_row(record, out))
        if progress is not None:
            progress(f"cut {source.name}", k, len(segments))


def _row(r: ClipRecord, out: Path) -> dict:
    return {"clip": r.clip.relative_to(out).as_posix(), "source": os.path.abspath(r.source),
            "start": f"{r.start:.3f}", "end": f"{r.end:.3f}", "start_frame": r.start_frame,
            "end_frame": r.end_frame, "label": r.label, "mode": r.mode}


def _previous_rows(out: Path, sources: Sequence[Path], overwrite: bool) -> list[dict]:
    """The rows of `out/clips.csv` to keep; refuses (or, with `overwrite`, removes the clips of) sources that
    are cut again. Raises ClipSpecError before anything is cut or deleted."""
    file = out / CLIPS_CSV
    try:
        rows = read_clip_rows(file)
    except ValueError as e:
        raise ClipSpecError(f"{e}: it is not a record of `actionbert clips`; cut into another folder") from None
    wanted = {same_video(str(s)) for s in sources}
    again = [r for r in rows if r["source"] and same_video(r["source"]) in wanted]
    if again and not overwrite:
        names = sorted({Path(r["source"]).name for r in again})
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ClipSpecError(f"{file} already lists {len(again)} clip(s) cut from {shown}: cutting a video again "
                            f"into the same folder would mix two cuts of it; cut into another folder, or overwrite "
                            f"(--overwrite) to delete those clips and cut again")
    for r in again:
        clip = out / r["clip"]
        if clip.resolve().is_relative_to(out.resolve()):  # only clips inside the folder, never a source
            clip.unlink(missing_ok=True)
    return [r for r in rows if r not in again]


# --------------------------------------------------------------------------------------------- cut lists
def parse_time(text: str) -> float:
    """Seconds from `12.5`, `12.5s`, `MM:SS[.fff]` or `HH:MM:SS[.fff]`; ValueError otherwise."""
    t = text.strip().lower()
    if re.fullmatch(r"(\d+(\.\d*)?|\.\d+)s?", t):
        return float(t.rstrip("s"))
    m = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)", t)
    if m and int(m.group(2)) < 60 and float(m.group(3)) < 60:
        return int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    raise ValueError(f"'{text}' is not a time (seconds like 12.5, or MM:SS.fff, or HH:MM:SS.fff)")


def read_cut_list(csv_file: str | os.PathLike, videos: Sequence[str | os.PathLike] = ()) \
        -> dict[Path, list[tuple[float, float, str, str]]]:
    """Parse a `video,start,end[,label]` cut list.

    Video names resolve as absolute paths, relative to the CSV's folder, or by file name among `videos`.

    Returns:
        {video: [(start s, end s, label, "file line N"), ...]} in file order.

    Raises:
        ClipSpecError: naming the file and line of every bad row.
    """
    csv_file = Path(csv_file)
    by_name = {Path(v).name: Path(v) for v in videos}
    plan: dict[Path, list[tuple[float, float, str, str]]] = {}
    errors = []
    with open(csv_file, newline="", encoding="utf-8-sig") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            where = f"{csv_file.name} line {number}"
            if number == 1 and len(cells) >= 3 and cells[1].lower() == "start":
                continue  # header row
            if len(cells) not in (3, 4):
                errors.append(f"{csv_file}: line {number}: expected 'video,start,end[,label]', got {len(cells)} "
                              f"fields")
                continue
            try:
                start, end = parse_time(cells[1]), parse_time(cells[2])
            except ValueError as e:
                errors.append(f"{csv_file}: line {number}: {e}")
                continue
            if end <= start:
                errors.append(f"{csv_file}: line {number}: end {cells[2]} is not after start {cells[1]}")
                continue
            video = Path(cells[0])
            candidates = [video] if video.is_absolute() else [csv_file.parent / video]
            if video.name in by_name:
                candidates.append(by_name[video.name])
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                errors.append(f"{csv_file}: line {number}: video '{cells[0]}' not found (looked in "
                              f"{csv_file.parent} and among the given videos)")
                continue
            plan.setdefault(found, []).append((start, end, cells[3] if len(cells) == 4 else "", where))
    if errors:
        raise ClipSpecError(f"{len(errors)} bad row(s) in the cut list:\n" + "\n".join(errors))
    return plan


# --------------------------------------------------------------------------------------------- segments
def _frame_at(table: FrameTable, seconds: float) -> int:
    """Index of the first frame shown at or after `seconds` (len(times) past the end)."""
    return bisect.bisect_left(table.times, seconds - 1e-6)


def _seconds(table: FrameTable, segment: _Segment) -> float:
    return _time_of(table, segment.end_frame) - table.times[segment.start_frame]


def _time_of(table: FrameTable, index: int) -> float:
    """Time of frame `index`; for the index after the last frame, the video's end."""
    if index < len(table.times):
        return table.times[index]
    fps = table.info.fps
    return table.times[-1] + (1.0 / fps if fps > 0 else 0.0)


def _fixed_segments(table: FrameTable, length: float, stride: float, keep_last: bool) -> list[_Segment]:
    end_time = _time_of(table, len(table.times))
    segments, start = [], 0.0
    while start < end_time - 1e-6:
        if start + length > end_time + 1e-6 and not keep_last:
            break
        first, stop = _frame_at(table, start), _frame_at(table, start + length)
        if stop > first:
            segments.append(_Segment(first, stop))
        start += stride
    return segments


def _scene_segments(source: Path, table: FrameTable, threshold: float, min_scene_len: int,
                    progress: Progress | None) -> list[_Segment]:
    """Run PySceneDetect's ContentDetector on our decoded frames; scenes as frame ranges."""
    import scenedetect
    from scenedetect.detectors import ContentDetector

    detector = ContentDetector(threshold=threshold, min_scene_len=min_scene_len)
    info = table.info
    width = min(256, info.width)
    size = (max(2, round(info.height * width / info.width)), width)
    fps = info.fps if info.fps > 0 else 25.0
    timecodes = _uses_timecodes(scenedetect)
    cuts: list[int] = []
    n = len(table.times)
    index = -1
    for index, frame in enumerate(iter_frames(source, size=size, stop=n)):
        bgr = np.ascontiguousarray(frame.numpy()[:, :, ::-1])  # the detector expects OpenCV's BGR
        position = scenedetect.FrameTimecode(index, fps=fps) if timecodes else index
        cuts += [_frame_number(c) for c in detector.process_frame(position, bgr)]
        if progress is not None and (index % 50 == 0 or index == n - 1):
            progress(f"scenes {source.name}", index + 1, n)
    if index >= 0:
        last = scenedetect.FrameTimecode(index, fps=fps) if timecodes else index
        cuts += [_frame_number(c) for c in detector.post_process(last)]
    bounds = [0] + sorted(c for c in set(cuts) if 0 < c < n) + [n]
    return [_Segment(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _uses_timecodes(scenedetect_module) -> bool:
    """PySceneDetect 0.7 passes FrameTimecode objects to detectors; 0.6 passed frame numbers."""
    parts = re.findall(r"\d+", getattr(scenedetect_module, "__version__", "0.7"))
    return tuple(int(p) for p in parts[:2]) >= (0, 7)


def _frame_number(cut) -> int:
    return int(getattr(cut, "frame_num", cut))


# --------------------------------------------------------------------------------------------- writing
def _write_clip(source: Path, target: Path, table: FrameTable, segment: _Segment, copy: bool) -> ClipRecord:
    n = len(table.times)
    can_copy = (copy and table.pts is not None and table.info.rotation == 0  # pts: usable timestamps
                and table.keyframes[segment.start_frame]
                and (segment.end_frame == n or table.keyframes[segment.end_frame]))
    target.parent.mkdir(parents=True, exist_ok=True)
    if can_copy:
        clip = target.with_name(target.name + source.suffix.lower())
        _copy_packets(source, clip, table, segment)
        mode = "copy"
    else:
        clip = target.with_name(target.name + ".mp4")
        _reencode(source, clip, table, segment)
        mode = "reencode"
    return ClipRecord(clip=clip, source=source, start=table.times[segment.start_frame],
                      end=_time_of(table, segment.end_frame), start_frame=segment.start_frame,
                      end_frame=segment.end_frame, label=segment.label, mode=mode)


def _copy_packets(source: Path, clip: Path, table: FrameTable, segment: _Segment) -> None:
    """Copy the packets of whole keyframe groups unchanged, timestamps shifted to start at 0."""
    start_pts = table.pts[segment.start_frame]
    end_pts = table.pts[segment.end_frame] if segment.end_frame < len(table.pts) else None
    with av.open(str(source)) as inp:
        ist = inp.streams.video[0]
        with av.open(str(clip), mode="w") as outp:
            ost = outp.add_stream_from_template(ist)
            if segment.start_frame > 0:
                inp.seek(start_pts, stream=ist, backward=True, any_frame=False)
            for packet in inp.demux(ist):
                if packet.pts is None or packet.size == 0:
                    continue
                if end_pts is not None and packet.is_keyframe and packet.pts >= end_pts:
                    break
                if packet.pts < start_pts or (end_pts is not None and packet.pts >= end_pts):
                    continue
                packet.pts -= start_pts
                if packet.dts is not None:
                    packet.dts -= start_pts
                packet.stream = ost
                outp.mux(packet)


def _reencode(source: Path, clip: Path, table: FrameTable, segment: _Segment) -> None:
    """Decode the clip's frames (rotation applied) and encode them at the measured frame rate."""
    info = table.info
    height, width = info.height - info.height % 2, info.width - info.width % 2  # yuv420p needs even sides
    fps = Fraction(info.fps if info.fps > 0 else 25.0).limit_denominator(1001)
    frames = iter_frames(source, size=(height, width), start=segment.start_frame, stop=segment.end_frame)
    encode_frames(frames, clip, fps=fps, size=(height, width))


def encode_frames(frames: Iterable, path: str | os.PathLike, *, fps: Fraction | float, size: tuple[int, int],
                  codec: str | None = None) -> int:
    """Encode an iterable of uint8 RGB frames (H, W, 3) into a video file, streaming (bounded memory).

    Args:
        frames: tensors or arrays, all of `size`.
        path: output file; the extension picks the container.
        fps: frame rate.
        size: (height, width), even numbers.
        codec: encoder; default libx264 (crf 18), else mpeg4.

    Returns:
        Frames written.
    """
    codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        else:
            stream.bit_rate = 4_000_000
        for frame in frames:
            array = np.ascontiguousarray(np.asarray(frame))
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count


def _safe(label: str) -> str:
    """A label as a single folder name (path separators and control characters replaced)."""
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", label).strip(" .") or "unlabelled"


def _unique(stem: Path, used: set[Path], suffixes: Sequence[str]) -> Path:
    """`stem`, or `stem-2`, `stem-3`, ... when another source already produced that name in this run, or a
    file of that name with one of the `suffixes` the clip may get exists (an earlier run's clip)."""
    candidate, k = stem, 1
    while candidate in used or any(candidate.with_name(candidate.name + x).exists() for x in suffixes):
        k += 1
        candidate = stem.with_name(f"{stem.name}-{k}")
    used.add(candidate)
    return candidate

