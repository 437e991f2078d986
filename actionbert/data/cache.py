"""Decoded-frame cache (`prepare --cache`) and reference-style JPEG frame folders (`prepare --frames`).

The cache stores every frame of a video once, decoded and resized exactly as the preprocessing record asks
(`preprocessing.Resize`: the paper's 128 x 170, uint8 RGB, resized in the decoder's one swscale call, the same
call `read_frames` and `VideoStream` make), as one `.npy` file per video of shape (T, H, W, 3). So a clip read
from the cache is bit-identical to the same clip decoded from the video, and a frame is resampled once. NumPy's `.npy` format is a
small header followed by the raw array, so a file is memory-mapped and a 32-frame clip is a copy of 32
contiguous frames: no decoding, no JPEG, no per-frame file opens. That is what makes it more than 10x faster
than JPEG frame folders (see benchmarks/data.py). The price is disk space: a 128 x 170 frame takes 63.75 KiB
(65,280 bytes; before the record, frames kept their aspect at short side 128: 64.1 KiB for 4:3, 85.5 KiB for
16:9), about 10x a JPEG of the same size (UCF101 at this size is ~160 GB); `prepare` reports the total.

Files are named from the video id (readable part plus a hash, ASCII only) and written atomically (a temporary
name, then a rename), so an interrupted `prepare` never leaves a half-written file that looks complete. One
decoding pass both writes a video's cache and measures the video (`cache_video` returns `probe`'s answer), so
`prepare --cache` decodes each video once.

Staleness: beside each `<name>.npy`, `<name>.source.json` records the identity of the video it was decoded
from (`source_identity`: size and mtime_ns, and a SHA-1 of its first and last 64 KiB; for a frame folder, of
its file names and sizes). `cache_status` compares it with the video as it is now: same size and mtime, or same
size and sampled content (a copy that did not keep times), is current; anything else (changed, replaced,
vanished, no record) is stale. The record also holds the resize rule the frames were made with: asked with
another rule (`cache_status(..., resize=...)`), the cache is "made for another preprocessing" and is not read
either (a cache from before the rule was recorded counts as made for another). A stale cache is never read: `dataset.load_split` (and `VideoClipDataset` given a
`cache_dir`) decode the video instead and warn once per video (`StaleCacheWarning`, naming the video and why).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from actionbert.data.decode import VideoDecodeError, VideoInfo, VideoStream, iter_frames, probe, short_side_size
from actionbert.preprocessing import Preprocessing, Resize

#: Folder names inside a prepared dataset directory.
CACHE_DIRNAME = "cache"
FRAMES_DIRNAME = "frames"
#: Short side of exported JPEG frames (`prepare --frames`), in pixels (METHOD.md §7 trains at 128 px height).
CACHE_SHORT_SIDE = 128
#: The resize rule of cached frames unless `prepare` is told otherwise: the default record's.
DEFAULT_CACHE_RESIZE = Preprocessing().resize


def cache_file(cache_dir: str | os.PathLike, video_id: str) -> Path:
    """Path of the cache file of a video: `<cache_dir>/<readable id>-<8 hex of sha1(id)>.npy`."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id)[-80:].strip("._") or "video"
    digest = hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:8]
    return Path(cache_dir) / f"{readable}-{digest}.npy"


class StaleCacheWarning(UserWarning):
    """A cache file is not used because its video changed, vanished, or is not recorded (see the docstring)."""


#: Bytes read from each end of a video file for its identity.
_SAMPLE_BYTES = 64 * 1024


def source_file(cache: str | os.PathLike) -> Path:
    """The identity record beside a cache file: `<name>.source.json`."""
    cache = Path(cache)
    return cache.with_name(cache.stem + ".source.json")


def source_identity(video: str | os.PathLike, *, sample: bool = True) -> dict:
    """{"size", "mtime_ns", "sample"} of a video file or frame folder (see the module docstring); "sample" is
    left out with `sample=False` (a stat only). Raises OSError when the video cannot be read."""
    video = Path(video)
    if video.is_dir():
        files = sorted((f for f in video.iterdir() if f.is_file()), key=lambda f: f.name)
        stats = [(f.name, f.stat()) for f in files]
        identity = {"size": sum(st.st_size for _, st in stats),
                    "mtime_ns": max((st.st_mtime_ns for _, st in stats), default=video.stat().st_mtime_ns)}
        if sample:
            listing = "\n".join(f"{name}\t{st.st_size}" for name, st in stats)
            identity["sample"] = hashlib.sha1(listing.encode("utf-8", "surrogateescape")).hexdigest()
        return identity
    st = video.stat()
    identity = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if sample:
        digest = hashlib.sha1()
        with open(video, "rb") as f:
            digest.update(f.read(_SAMPLE_BYTES))
            if st.st_size > _SAMPLE_BYTES:
                f.seek(max(_SAMPLE_BYTES, st.st_size - _SAMPLE_BYTES))
                digest.update(f.read(_SAMPLE_BYTES))
        identity["sample"] = digest.hexdigest()
    return identity


def cache_status(cache: str | os.PathLike, video: str | os.PathLike, *, resize: Resize | None = None) -> str | None:
    """None when `cache` holds the frames of `video` as it is now (resized by `resize`, when given); else why
    it may not be used, in words."""
    try:
        recorded = json.loads(source_file(cache).read_text(encoding="utf-8"))
        recorded_size, recorded_time = int(recorded["size"]), int(recorded["mtime_ns"])
    except (OSError, ValueError, KeyError, TypeError):
        return "the cache has no valid record of the video it was made from (rerun `actionbert prepare --cache`)"
    if resize is not None and recorded.get("resize") != resize.to_dict():
        return _other_resize(recorded.get("resize"), resize)
    try:
        now = source_identity(video, sample=False)
    except OSError as e:
        return f"the video cannot be read any more ({e.strerror or e})"
    if now["size"] != recorded_size:
        return f"the video changed since the cache was written (size {recorded_size} -> {now['size']} bytes)"
    if now["mtime_ns"] == recorded_time:
        return None
    try:
        same = source_identity(video)["sample"] == recorded.get("sample")
    except OSError as e:
        return f"the video cannot be read any more ({e.strerror or e})"
    return None if same else "the video changed since the cache was written (same size, other content)"


def resize_mismatch(cache: str | os.PathLike, resize: Resize) -> str | None:
    """Why `cache` was made for another resize rule than `resize`, in words; None when it was made for it (or
    has no readable record: `cache_status` says so)."""
    try:
        recorded = json.loads(source_file(cache).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    made = recorded.get("resize") if isinstance(recorded, dict) else None
    return None if made == resize.to_dict() else _other_resize(made, resize)


def _other_resize(made, resize: Resize) -> str:
    made = made or "short side 128, aspect kept (no resize recorded)"
    return (f"it was made for other preprocessing (frames {made}, the model's record asks for "
            f"{resize.to_dict()}; rerun `actionbert prepare --cache --resize ...` with the model's resize)")


def cache_video(video: str | os.PathLike, file: str | os.PathLike, *,
                resize: Resize | tuple[int, int] | int = DEFAULT_CACHE_RESIZE) -> tuple[VideoInfo, int]:
    """Decode every frame of `video` once, resized by the record's rule, into the cache `file`, and describe it.

    One decoding pass does what `probe` and a separate cache pass would do in two. The frames are appended to a
    temporary file behind a reserved header, which is written once the frame count is known, then the file is
    renamed into place. A decoder error part-way keeps the frames before it (as `probe` counts them; the
    returned info's `decode_error` says so).

    Args:
        video: a video file or frame folder.
        file: the `.npy` file to write (parent folders are created).
        resize: the resize rule of the stored frames (`Resize`, a (height, width) pair, or an int short side
            with the aspect kept), recorded beside them.

    Returns:
        (the video's `VideoInfo`, equal to `probe(video)`; bytes of the `.npy` file, beside which a
        `.source.json` record of the video's identity of about 150 bytes is written).

    Raises:
        VideoDecodeError: the video cannot be opened or no frame decodes (no file is left behind).
        OSError: the file cannot be written (no file is left behind).
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".part")
    source_file(file).unlink(missing_ok=True)  # an old record must never vouch for the new frames
    try:
        identity = source_identity(video)  # before decoding: a change while decoding makes the cache stale
    except OSError:
        identity = None  # the video cannot be read: decoding says why
    resize = Resize.parse(resize)
    stream = VideoStream(video, size=resize)
    count, frame_shape = 0, None
    try:
        with open(tmp, "wb") as out:
            out.write(bytes(_HEADER_BYTES))  # replaced by the real header once the frame count is known
            try:
                for frame in stream:  # (H, W, 3) uint8
                    out.write(frame.numpy().tobytes())
                    count, frame_shape = count + 1, tuple(frame.shape)
            except VideoDecodeError:
                if stream.info is None:  # nothing usable decoded
                    raise
            out.seek(0)
            out.write(_npy_header((count, *frame_shape)))
        os.replace(tmp, file)
        record = source_file(file)
        record_tmp = record.with_name(record.name + ".part")
        record_tmp.write_text(json.dumps({"video": os.path.abspath(video), **(identity or {}),
                                                "resize": resize.to_dict()}), encoding="utf-8")
        os.replace(record_tmp, record)  # written last: a cache without its record is never used
    except BaseException:
        tmp.unlink(missing_ok=True)
        source_file(file).with_name(source_file(file).name + ".part").unlink(missing_ok=True)
        file.unlink(missing_ok=True)  # frames without their record would never be used
        raise
    return stream.info, file.stat().st_size


def remove_cache(file: str | os.PathLike) -> None:
    """Delete a cache file and its identity record (missing ones are fine)."""
    Path(file).unlink(missing_ok=True)
    source_file(file).unlink(missing_ok=True)


#: Bytes of the `.npy` header of a cache file: NumPy writes 128 for a (T, H, W, 3) uint8 array (64-byte aligned).
_HEADER_BYTES = 128


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The `.npy` format 1.0 header of a C-ordered uint8 array of `shape`, padded to `_HEADER_BYTES` (as
    `np.save` writes it for such shapes)."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    body = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    if len(body) != _HEADER_BYTES - 10:
        raise ValueError(f"cache header for shape {shape} does not fit in {_HEADER_BYTES} bytes")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def read_cached(file: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
    """Frames at `indices` (any order, repeats allowed) from a cache file, as uint8 (T, H, W, 3).

    Raises:
        OSError / ValueError: the file is missing or not a valid cache file.
        IndexError: an index is beyond the cached frames.
    """
    frames = np.load(file, mmap_mode="r")  # (N, H, W, 3), nothing read yet
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{file}: not a frame cache (array {frames.dtype} {frames.shape})")
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= frames.shape[0]):
        raise IndexError(f"{file}: frame {int(idx.max())} requested, the cache holds {frames.shape[0]}")
    return torch.from_numpy(np.ascontiguousarray(frames[idx]))  # (T, H, W, 3)


def cached_num_frames(file: str | os.PathLike) -> int | None:
    """Frame count stored in a cache file, None when the file is missing or unreadable."""
    try:
        return int(np.load(file, mmap_mode="r").shape[0])
    except (OSError, ValueError):
        return None


def write_frame_folder(video: str | os.PathLike, folder: str | os.PathLike, *,
                       short_side: int | None = CACHE_SHORT_SIDE, quality: int = 90,
                       info: VideoInfo | None = None) -> int:
    """Write every frame of `video` as `img_00001.jpg, img_00002.jpg, ...` (1-based, as the reference reads).

    Args:
        video: a video file.
        folder: output folder (created; existing frames are overwritten).
        short_side: short side of the written frames in pixels; None keeps the video's size.
        quality: JPEG quality (1..95).
        info: the video's `probe` result; probed here when None and needed.

    Returns:
        Frames written.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = None
    if short_side is not None:
        info = info or probe(video)
        size = short_side_size(info.height, info.width, short_side)
    count = 0
    stop = info.num_frames if info is not None else None
    for count, frame in enumerate(iter_frames(video, size=size, stop=stop), start=1):
        Image.fromarray(frame.numpy()).save(folder / f"img_{count:05d}.jpg", quality=quality)
    return count
