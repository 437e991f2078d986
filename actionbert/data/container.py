"""Opening video files with PyAV: every failure becomes one `VideoDecodeError` naming the file and the problem.

Shared by the decoder (`decode`) and the seek index (`seekindex`), below both in the import graph.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import av.error

from actionbert.data.videoinfo import VideoDecodeError

#: File extensions `prepare` treats as videos when it scans folders (anything else is reported, not read).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".gif", ".ogv", ".ts", ".mts", ".vob", ".asf")
#: Container formats whose timestamps cannot map to frame indices: always decoded from the first frame.
NO_SEEK_FORMATS = ("avi", "gif", "mjpeg", "image2")
#: Demuxers that open still images or text, not videos.
NOT_VIDEO_FORMATS = ("image2", "tty", "srt", "ass", "webvtt")


def open_video(path, threads: int = 1):
    """Open `path` and pick its first video stream; every failure becomes a `VideoDecodeError`."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        broken = " (broken symbolic link)" if p.is_symlink() else ""
        raise VideoDecodeError(path, "file not found" + broken, "missing") from None
    except OSError as e:
        raise VideoDecodeError(path, f"cannot read: {e.strerror or e}", "unreadable") from None
    if p.is_dir():
        raise VideoDecodeError(path, "a directory without image files, not a video", "not_video")
    if st.st_size == 0:
        raise VideoDecodeError(path, "zero-byte file", "empty")
    if not os.access(p, os.R_OK):
        raise VideoDecodeError(path, "cannot read: permission denied", "unreadable")
    try:
        container = av.open(str(p), mode="r")
    except PermissionError:
        raise VideoDecodeError(path, "cannot read: permission denied", "unreadable") from None
    except av.error.FFmpegError as e:
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            raise VideoDecodeError(path, f"corrupt or truncated video: FFmpeg cannot open it "
                                         f"({ffmpeg_message(e)})", "corrupt") from None
        raise VideoDecodeError(path, f"not a video: FFmpeg cannot open it ({ffmpeg_message(e)})",
                               "not_video") from None
    fmt = container.format.name
    if fmt in NOT_VIDEO_FORMATS or fmt.endswith("_pipe"):
        container.close()
        what = "a still image" if fmt == "image2" or fmt.endswith("_pipe") else "not a video"
        raise VideoDecodeError(path, f"{what} (FFmpeg reads it as '{fmt}'), not a video", "not_video")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if "audio" in kinds:
            raise VideoDecodeError(path, "audio only: the file has no video stream", "audio_only")
        listed = f" (streams: {', '.join(kinds)})" if kinds else ""
        raise VideoDecodeError(path, "no video stream" + listed, "not_video")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = threads
    if threads != 1:
        stream.codec_context.thread_type = "AUTO"
    return container, stream


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0..3) for a display-matrix angle (FFmpeg's convention)."""
    return int(round(rotation / 90.0)) % 4


def ffmpeg_message(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return str(text).strip() or type(e).__name__


def file_key(path) -> tuple:
    try:
        st = os.stat(path)
        return (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        return (os.path.abspath(path), None, None)
