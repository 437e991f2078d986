"""What decoding reports: `VideoInfo` (what a decoding pass learned) and `VideoDecodeError` (what failed).

Kept apart from `decode` so the frame-folder reader (`framefolder`) and `decode` share them without an import
circle; `decode` re-exports both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


#: Kinds of decoding failure (`VideoDecodeError.kind`), as `prepare` reports them in problems.csv.
ERROR_KINDS = {
    "missing": "the path does not exist",
    "unreadable": "the path exists but cannot be read",
    "empty": "zero-byte file",
    "not_video": "not a video (text, still image, unknown format)",
    "audio_only": "a media file without a video stream",
    "corrupt": "a video FFmpeg cannot open or decode",
    "short_read": "fewer frames decode than requested",
}


class VideoDecodeError(Exception):
    """A video (or frame folder) cannot be opened or decoded.

    Attributes:
        path: the file.
        problem: what went wrong, in words.
        kind: a key of `ERROR_KINDS`.
    """

    def __init__(self, path: str | os.PathLike, problem: str, kind: str = "corrupt"):
        self.path = str(path)
        self.problem = problem
        self.kind = kind
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep path, problem and kind when sent between DataLoader worker processes
        return type(self), (self.path, self.problem, self.kind)


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learned by decoding a whole video.

    Attributes:
        path: the file (or frame folder) as given.
        num_frames: frames that decode, counted by decoding (never from the header).
        fps: measured frame rate, frames per second (frame count over the decoded timestamp span; the
            container's average rate when timestamps are unusable; 0.0 for frame folders).
        width: width of the returned frames in pixels (after rotation).
        height: height of the returned frames in pixels (after rotation).
        rotation: clockwise degrees applied to the stored pixels to make them upright (0, 90, 180, 270).
        codec: decoder name, e.g. "h264", "mpeg4", "gif"; "images" for frame folders.
        container: demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "avi"; "folder" for frame folders.
        header_frames: frame count the container claims, None when it claims nothing.
        duration: seconds between the first and the last decoded frame plus one frame, None if unknown.
        decode_error: decoder message if decoding stopped early with an error, else None.
        header_duration: seconds the container claims the video lasts (the video stream's duration, else the
            file's), None when it claims nothing (frame folders). Matroska and WebM files state no frame count,
            only this; `caveats.truncation_caveat` compares it with what decoded.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int
    codec: str
    container: str
    header_frames: int | None = None
    duration: float | None = None
    decode_error: str | None = None
    header_duration: float | None = None
