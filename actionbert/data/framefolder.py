"""Frame folders: a directory of images (the reference's `img_00001.jpg, img_00002.jpg, ...`) read as a video.

Frames are the image files sorted by name (numbers in natural order; only `img_*` files when the folder has
any); fps is unknown (0.0). Like a video file that breaks part-way, a folder with a damaged image is usable up
to it: `probe_folder` decodes every image (JPEGs at 1/8 scale, which still reads all their data) and counts
the frames before the first bad one, and `VideoInfo.decode_error` names the bad file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from actionbert.data.videoinfo import VideoDecodeError, VideoInfo

#: Image extensions accepted inside frame folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_frame_folder(path: str | os.PathLike) -> bool:
    """True when `path` is a directory holding at least one image file."""
    p = Path(path)
    return p.is_dir() and bool(image_files(p))


def probe_folder(folder: Path) -> VideoInfo:
    """Describe a frame folder; every image is decoded (JPEGs at 1/8 scale, which still reads all their data),
    so a damaged frame is found here, not mid-training. Frames before the first bad one are the usable part,
    as for a video file (`decode_error` names the bad file)."""
    files = _folder_files(folder)
    first = load_image(files[0], None)  # a bad first image: nothing usable (raises, naming the image)
    count, error = len(files), None
    for index, file in enumerate(files[1:], start=1):
        problem = _image_problem(file)
        if problem:
            count, error = index, _bad_frame_message(file, index, problem)
            break
    return VideoInfo(path=str(folder), num_frames=count, fps=0.0, width=first.shape[1], height=first.shape[0],
                     rotation=0, codec="images", container="folder", decode_error=error)


def _folder_files(folder: Path) -> list[Path]:
    files = image_files(folder)
    if not files:
        raise VideoDecodeError(folder, "frame folder holds no image files (" + ", ".join(IMAGE_EXTENSIONS) + ")",
                               "not_video")
    return files


def _bad_frame_message(file: Path, index: int, problem: str) -> str:
    return f"frame file {file.name} cannot be read ({problem}) after {index} good frame{'s' * (index != 1)}"


def _image_problem(file: Path) -> str | None:
    """Why an image file cannot be decoded, None when it decodes (JPEG: at reduced scale, fast)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return str(e) or type(e).__name__
    return None


def stream_folder(folder: Path, size_of: Callable[[int, int], tuple[int, int] | None],
                  on_end: Callable[[VideoInfo], None]) -> Iterator[torch.Tensor]:
    """Frames of a frame folder at `size_of(height, width)` of its first image; `on_end(info)` is called once
    the stream ends (`info` as `probe_folder` gives it). A bad image ends the stream like a decoder error in a
    video: `on_end` with `decode_error` set, then `VideoDecodeError`; a bad first image raises at once."""
    files = _folder_files(folder)
    first = load_image(files[0], None)
    height, width = first.shape[:2]
    size, count, error = size_of(height, width), 0, None
    for file in files:
        try:
            frame = load_image(file, size)
        except VideoDecodeError as e:
            error = _bad_frame_message(file, count, e.problem)
            break
        count += 1
        yield torch.from_numpy(frame)
    on_end(VideoInfo(path=str(folder), num_frames=count, fps=0.0, width=width, height=height, rotation=0,
                     codec="images", container="folder", decode_error=error))
    if error:
        raise VideoDecodeError(folder, error, "corrupt")


def image_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in frame order; only `img_*` files when the folder has any."""
    try:
        files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()]
    except OSError:
        return []
    img = [f for f in files if f.name.startswith("img_")]
    return sorted(img or files, key=lambda f: _natural_key(f.name))


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_folder(folder: Path, indices: Sequence[int], size) -> torch.Tensor:
    """Frames at `indices` (any order, repeats allowed) as uint8 (T, H, W, 3), resized to `size` if given."""
    files = image_files(folder)
    if not files:
        raise VideoDecodeError(folder, "frame folder holds no image files", "not_video")
    loaded: dict[int, np.ndarray] = {}
    for i in sorted(set(int(i) for i in indices)):
        if i >= len(files):
            raise VideoDecodeError(folder, f"frame {i} requested but the folder holds {len(files)} frames",
                                   "short_read")
        loaded[i] = load_image(files[i], size)
    return torch.from_numpy(np.stack([loaded[int(i)] for i in indices]))  # (T, H, W, 3)


def load_image(file: Path, size) -> np.ndarray:
    """One image as uint8 RGB (H, W, 3), resized to `size` (height, width) if given; a callable `size` maps the
    image's (height, width) to it (a `preprocessing.Resize`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            img = img.convert("RGB")
            if callable(size):
                size = size(img.height, img.width)
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.array(img)  # (H, W, 3), writable
    except (OSError, UnidentifiedImageError) as e:
        raise VideoDecodeError(file, f"cannot read image ({e})", "corrupt") from None
