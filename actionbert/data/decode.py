"""Video decoding with PyAV: probing, frame-accurate reads by index, and streaming.

Every other module gets pixels through this one. Conventions (see docs/VIDEO_QUIRKS.md for why):

- Frames are indexed 0, 1, 2, ... in *decoded order* (the order the decoder outputs them, which is display
  order). Timestamps and header frame counts are never trusted for indexing: files lie about their length,
  rates vary, and AVI files with B-frames carry scrambled timestamps.
- `probe` counts frames by decoding every one of them (without colour conversion), once, in `prepare`.
- Rotation stored as display-matrix metadata is applied to the pixels, so a portrait phone clip comes out
  upright. `VideoInfo.rotation` is the clockwise turn that was applied (0, 90, 180 or 270); width and height
  are those of the returned, upright frames.
- Only the frames that are kept are converted, and conversion and resizing happen in one swscale call
  (`rgb24` at the target size), with one persistent scaler per read.
- Audio and other streams are never decoded.
- A decoder error part-way through a file ends decoding there: the frames before it are the usable part
  (`VideoInfo.decode_error` says what happened), so a truncated file still yields its good frames.
- A directory of images (the reference's `img_00001.jpg, img_00002.jpg, ...` frame folders) is read like a
  video: frames sorted by file name, fps unknown (0.0).

Random access: a read of consecutive frames costs one seek to the nearest keyframe at or before the first
wanted frame, then sequential decoding, during which the decoder skips the non-reference frames shown before
the first wanted one. This uses the packets' timestamps to name frames, so it is only done when that is
exact: the packets must carry unique timestamps, their number must equal the decoded frame count passed as
`num_frames` (from `prepare`), the format must not be one with unreliable timestamps (AVI, GIF), and every
delivered frame must carry the timestamp expected at its index. Otherwise the read decodes from the first frame
and counts, which is always correct. The packet tables live in an explicit `seekindex.SeekIndex`; opening
files and their errors are in `container`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import av
import av.error
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from actionbert.data.framefolder import (IMAGE_EXTENSIONS, image_files, is_frame_folder, load_image, probe_folder,
                                         read_folder, stream_folder)
from actionbert.data.container import NO_SEEK_FORMATS as _NO_SEEK_FORMATS
from actionbert.data.container import VIDEO_EXTENSIONS
from actionbert.data.container import ffmpeg_message as _ffmpeg_message
from actionbert.data.container import open_video as _open
from actionbert.data.container import quarter_turns as _quarter_turns
from actionbert.data.seekindex import DEFAULT_INDEX, MidStreamError, SeekIndex, SeekMismatch, indexed_frames
from actionbert.data.videoinfo import ERROR_KINDS, VideoDecodeError, VideoInfo

__all__ = ["ERROR_KINDS", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "FrameTable", "VideoDecodeError", "VideoInfo",
           "VideoStream", "frame_table", "is_frame_folder", "iter_frames", "probe", "read_frames",
           "short_side_size"]



def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after scaling so the shorter side is `short_side` pixels, aspect ratio kept."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


# --------------------------------------------------------------------------------------------- probe
def probe(path: str | os.PathLike) -> VideoInfo:
    """Decode a whole video once (no colour conversion) and describe it.

    Args:
        path: a video file or a frame folder.

    Returns:
        The `VideoInfo`; `decode_error` is set when decoding stopped early but some frames decoded.

    Raises:
        VideoDecodeError: missing, unreadable, empty, not a video, no video stream, or no decodable frame.
    """
    if Path(path).is_dir():
        return probe_folder(Path(path))
    scan = _scan(path)
    return scan.info


@dataclass(frozen=True)
class FrameTable:
    """Per-frame timing of a decoded video, for cutting by time.

    Attributes:
        times: presentation time of each decoded frame in seconds from the first frame (ascending).
        keyframes: whether each decoded frame is a keyframe (a cut there can be stream-copied).
        pts: raw timestamps of the decoded frames in display order (stream time base), or None when the
            file's timestamps are missing, repeated, or unreliable (AVI, GIF).
        time_base: seconds per timestamp unit.
        info: the matching `VideoInfo`.
    """

    times: list[float]
    keyframes: list[bool]
    pts: list[int] | None
    time_base: float
    info: VideoInfo


def frame_table(path: str | os.PathLike) -> FrameTable:
    """Decode a whole video and return the time and keyframe flag of every decoded frame."""
    scan = _scan(path)
    return FrameTable(times=scan.times, keyframes=scan.keyframes, pts=scan.pts, time_base=scan.time_base,
                      info=scan.info)


@dataclass(frozen=True)
class _Scan:
    info: VideoInfo
    times: list[float]
    keyframes: list[bool]
    pts: list[int] | None
    time_base: float


def _scan(path: str | os.PathLike) -> _Scan:
    full = _FullPass(path)
    for _ in full:  # no colour conversion: the frames are only counted and timed
        pass
    return full.scan


class _FullPass:
    """The one full decoding pass behind `probe`, `frame_table`, `VideoStream` (and so the cache writer):
    iterate it once for the decoded PyAV frames; when they end, `scan` describes the video. A decoder error
    part-way ends the frames there (`scan.info.decode_error`); one before any frame raises `VideoDecodeError`."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path, self.threads = path, threads
        self.scan: _Scan | None = None

    def __iter__(self):
        container, stream = _open(self.path, threads=self.threads)
        with container:
            log, error = _DecodeLog(), None
            try:
                for frame in container.decode(stream):
                    log.add(frame)
                    yield frame
            except av.error.FFmpegError as e:  # a decoder error mid-stream: keep what decoded
                error = f"decoder error after {log.count} frames ({_ffmpeg_message(e)})"
            self.scan = log.finish(self.path, container, stream, error)


class _DecodeLog:
    """What a decoding pass learns about a video, frame by frame; `finish` turns it into `probe`'s answer."""

    def __init__(self) -> None:
        self.count, self.rotation = 0, 0.0
        self.keyframes: list[bool] = []
        self.pts: list[int | None] = []

    def add(self, frame) -> None:
        if self.count == 0:
            self.rotation = frame.rotation or 0.0
        self.keyframes.append(bool(frame.key_frame))
        self.pts.append(frame.pts)
        self.count += 1

    def finish(self, path, container, stream, error: str | None) -> _Scan:
        """The `_Scan` of the pass; raises `VideoDecodeError` when no frame decoded."""
        count, pts = self.count, self.pts
        if count == 0:
            raise VideoDecodeError(path, error or "no decodable video frame", "corrupt")
        quarter_turns = _quarter_turns(self.rotation)
        width, height = stream.codec_context.width, stream.codec_context.height
        if quarter_turns % 2:
            width, height = height, width
        time_base = float(stream.time_base) if stream.time_base else 0.0
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        times = _frame_times(pts, time_base, rate)
        span = times[-1] - times[0] if times else 0.0
        fps = (count - 1) / span if count > 1 and span > 0 else rate
        duration = (span + 1.0 / fps) if fps > 0 else None
        info = VideoInfo(
            path=str(path),
            num_frames=count,
            fps=round(fps, 6),
            width=width,
            height=height,
            rotation=(-quarter_turns * 90) % 360,
            codec=stream.codec_context.name,
            container=container.format.name,
            header_frames=stream.frames or None,
            duration=duration,
            decode_error=error,
            header_duration=_header_duration(container, stream),
        )
        clean = (container.format.name not in _NO_SEEK_FORMATS and None not in pts and len(set(pts)) == len(pts)
                 and pts == sorted(pts))
        return _Scan(info=info, times=times, keyframes=self.keyframes, pts=pts if clean else None,
                     time_base=time_base)


def _header_duration(container, stream) -> float | None:
    """Seconds the file claims its video lasts: the stream's duration (Matroska: its DURATION tag), else the
    container's (which may include a longer audio track); None if neither."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", str(stream.metadata.get("DURATION", "")).strip())
    if tag:
        return int(tag.group(1)) * 3600 + int(tag.group(2)) * 60 + float(tag.group(3))
    if container.duration:
        return container.duration / av.time_base
    return None


def _frame_times(pts: list[int | None], time_base: float, rate: float) -> list[float]:
    """Seconds from the first frame for each decoded frame; timestamps sorted into display order.

    AVI files with B-frames report permuted timestamps, so the sorted set is assigned in decoded order.
    Missing timestamps fall back to `index / rate`.
    """
    if time_base > 0 and all(p is not None for p in pts) and len(set(pts)) == len(pts):
        ordered = sorted(pts)
        return [(p - ordered[0]) * time_base for p in ordered]
    step = 1.0 / rate if rate > 0 else 0.0
    return [i * step for i in range(len(pts))]


# --------------------------------------------------------------------------------------------- read
def read_frames(path: str | os.PathLike, indices: Sequence[int], *, size: tuple[int, int] | None = None,
                num_frames: int | None = None, threads: int = 1, index: SeekIndex | None = None) -> torch.Tensor:
    """Decode the frames at `indices` (decoded order), in the order given.

    Args:
        path: a video file or a frame folder.
        indices: 0-based frame indices; any order, duplicates allowed (circular padding repeats frames).
        size: (height, width) of the returned frames in pixels, after rotation, or a callable mapping the upright
            frame's (height, width) to it (a `preprocessing.Resize`); None keeps the video's size.
        num_frames: the decoded frame count if known (from `prepare`); it lets a read seek instead of
            decoding from the first frame. Ignored for frame folders.
        threads: decoder threads; 1 suits DataLoader workers (one worker per core).
        index: the `seekindex.SeekIndex` whose packet tables the read may use (default: `DEFAULT_INDEX`).

    Returns:
        uint8 tensor (T, H, W, 3), RGB, T = len(indices).

    Raises:
        VideoDecodeError: the file cannot be decoded, or an index is beyond the frames that decode.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        raise ValueError(f"{path}: no frame indices given")
    if wanted[0] < 0:
        raise VideoDecodeError(path, f"negative frame index {wanted[0]}", "short_read")
    if Path(path).is_dir():
        return read_folder(Path(path), indices, size)
    reader = _Reader(path, size=size, num_frames=num_frames, threads=threads, index=index or DEFAULT_INDEX)
    got = dict(reader.frames(wanted[0], wanted[-1] + 1, keep=set(wanted)))
    missing = [i for i in wanted if i not in got]
    if missing:
        decoded = f"only {reader.decoded} frames decode" + (f" ({reader.error})" if reader.error else "")
        raise VideoDecodeError(path, f"frame {missing[0]} requested but {decoded}", "short_read")
    return torch.from_numpy(np.stack([got[int(i)] for i in indices]))  # (T, H, W, 3)


def iter_frames(path: str | os.PathLike, *, size: tuple[int, int] | None = None, start: int = 0,
                stop: int | None = None, threads: int = 1) -> Iterator[torch.Tensor]:
    """Stream frames `start, start + 1, ...` (decoded order) with memory bounded by one frame.

    For hour-long videos (`predict`). The i-th yielded frame has index `start + i`. A decoder error part-way
    through raises `VideoDecodeError` after the good frames before it have been yielded.

    Args:
        path: a video file or a frame folder.
        size: (height, width) of the yielded frames, after rotation; None keeps the video's size.
        start: first frame index.
        stop: index after the last frame; None reads to the end.
        threads: decoder threads (0 lets FFmpeg choose; streaming one long video benefits from more).

    Yields:
        uint8 tensors (H, W, 3), RGB.
    """
    if Path(path).is_dir():
        for f in image_files(Path(path))[start:stop]:
            yield torch.from_numpy(load_image(f, size))
        return
    reader = _Reader(path, size=size, num_frames=None, threads=threads)
    for _, array in reader.frames(start, stop):
        yield torch.from_numpy(array)
    if reader.error:
        raise VideoDecodeError(path, reader.error, "corrupt")


class VideoStream:
    """One decoding pass over a whole video that yields its frames and, when exhausted, describes the video
    exactly as `probe` would, so a long video is decoded once instead of twice (`predict`).

    Iterate it once: uint8 frames (H, W, 3), RGB, upright, at `size` or with the shorter side scaled to
    `short_side` (aspect kept; decided from the first frame). Memory is bounded by one frame. Errors:
    `VideoDecodeError` on the first `next()` when the file cannot be opened or no frame decodes; a decoder error
    part-way raises `VideoDecodeError` after the good frames, with `info` already set (its `decode_error`
    says where decoding stopped).

    Attributes:
        info: the `VideoInfo` (same values as `probe(path)`), None until the stream has ended.
    """

    def __init__(self, path: str | os.PathLike, *, size: tuple[int, int] | None = None,
                 short_side: int | None = None, upscale: bool = True, threads: int = 1) -> None:
        if size is not None and short_side is not None:
            raise ValueError("give size or short_side, not both")
        self.path, self.size, self.short_side, self.threads = path, size, short_side, threads
        self.upscale = upscale  # with short_side: False keeps a video whose short side is smaller at its size
        self.info: VideoInfo | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        if Path(self.path).is_dir():
            yield from stream_folder(Path(self.path), self._size, lambda info: setattr(self, "info", info))
            return
        full, convert = _FullPass(self.path, threads=self.threads), None
        for frame in full:
            if convert is None:
                turns = _quarter_turns(frame.rotation or 0.0)
                height, width = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
                convert = _Converter(self._size(height, width))
            yield torch.from_numpy(convert(frame))
        self.info = full.scan.info
        if self.info.decode_error:
            raise VideoDecodeError(self.path, self.info.decode_error, "corrupt")

    def _size(self, height: int, width: int) -> tuple[int, int] | None:
        if self.short_side is not None:
            short = self.short_side if self.upscale else min(self.short_side, height, width)
            return short_side_size(height, width, short)
        return self.size(height, width) if callable(self.size) else self.size



class _Reader:
    """One read of one video: indexed by timestamps when that is exact (see the module docstring), else
    decoded from frame 0 and counted.

    Attributes:
        decoded: frames decoded in the last pass (index after the last one).
        error: decoder message if the file ended with a decoder error before `stop`.
    """

    def __init__(self, path, *, size, num_frames, threads, index: SeekIndex = DEFAULT_INDEX):
        self.path, self.index = path, index
        self.num_frames = num_frames
        self.threads = threads
        self.convert = _Converter(size)
        self.decoded = 0
        self.error: str | None = None
        self._next = 0  # lowest index not delivered yet; a restarted pass skips what was delivered

    def frames(self, first: int, stop: int | None,
               keep: set[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, upright RGB array) for frames first..stop-1 in order, only those in `keep` if given."""
        self._next = first
        table = self.index.table(self.path, first, self.num_frames)
        if table is not None:
            try:
                yield from self._pass(table, stop, keep)
                return
            except SeekMismatch:
                pass  # the timestamps did not match: decode from the first frame and count
        yield from self._pass(None, stop, keep)

    def _pass(self, table, stop, keep):
        if stop is not None and stop <= self._next:
            return
        container, stream = _open(self.path, threads=self.threads)
        with container:
            if table is None:
                pairs = enumerate(_frames(container, stream))
            else:
                pairs = indexed_frames(container, stream, table, self._next)
            index = self._next - 1 if table is not None else -1
            try:
                for index, frame in pairs:
                    if index >= self._next and (keep is None or index in keep):
                        yield index, self.convert(frame)
                        self._next = index + 1
                    if stop is not None and index + 1 >= stop:
                        break  # before asking the decoder for more: a damaged tail is never touched
            except MidStreamError as e:
                self.error = f"decoder error after {index + 1} frames ({e})"
            self.decoded = index + 1


def _frames(container, stream):
    """Decoded frames in order; a decoder error becomes `MidStreamError`."""
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as e:
        raise MidStreamError(_ffmpeg_message(e)) from None




class _Converter:
    """Turns decoded frames into upright RGB arrays at the target size with one reused swscale context."""

    def __init__(self, size: tuple[int, int] | Callable[[int, int], tuple[int, int]] | None):
        self.size = size  # a callable maps the upright frame's (height, width) to the target (a `Resize`)
        self.reformatter = VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        turns = _quarter_turns(frame.rotation or 0.0)
        width = height = None
        if self.size is not None:
            upright = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
            height, width = self.size(*upright) if callable(self.size) else self.size
            if turns % 2:
                height, width = width, height
        out = self.reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                        src_color_range=frame.color_range or None, threads=1,
                                        interpolation="BILINEAR")
        array = out.to_ndarray()  # (H, W, 3)
        if turns:
            array = np.ascontiguousarray(np.rot90(array, turns))
        return array


