"""Thumbnails for the reports: frames of a video (or frame folder) as small JPEG bytes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from actionbert.data.decode import VideoDecodeError, read_frames

THUMB_HEIGHT = 96  # pixels; widths follow the video's aspect ratio
JPEG_QUALITY = 72


def jpeg(frame, *, height: int = THUMB_HEIGHT) -> bytes:
    """An RGB frame (H, W, 3 uint8 array or tensor) scaled to `height` pixels as JPEG bytes."""
    image = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    width = max(1, round(image.width * height / max(image.height, 1)))
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def strip_indices(num_frames: int, count: int) -> list[int]:
    """Frame at the centre of each of `count` equal slices of the video (fewer for a shorter video)."""
    count = max(0, min(count, num_frames))
    return [int((k + 0.5) * num_frames / count) for k in range(count)]


def thumbnails(path: str | Path, indices: Sequence[int], *, num_frames: int | None = None,
               height: int = THUMB_HEIGHT) -> tuple[list[bytes], str | None]:
    """JPEG thumbnails of the frames at `indices`; ([], reason) when they cannot be read (never raises for a
    video that does not decode)."""
    if not indices:
        return [], "no frame to show"
    try:
        frames = read_frames(path, indices, num_frames=num_frames or None)
    except (VideoDecodeError, OSError, ValueError) as e:
        return [], f"no thumbnail: {e}"
    return [jpeg(f, height=height) for f in frames.numpy()], None
