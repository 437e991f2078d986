"""Which frames make a clip: pure index arithmetic, no I/O.

Every function maps a video length `num_frames` (N, counted by decoding) and a clip length `clip_len` (L) to
0-based frame indices in decoded order. Decoding (`decode.read_frames`) and the on-disk cache then fetch those
indices; keeping the arithmetic here makes every sampling rule unit-testable with closed-form expectations.

Rules (METHOD.md §7, checked against the reference implementation's loaders):

- A clip is L frames taken every `stride` frames, so it spans `(L - 1) * stride + 1` frames of the video.
- Circular padding: when the video is shorter than that span, indices wrap around. The reference reads the
  1-based frame `k` of a clip as `k mod N`, with 0 replaced by N, i.e. frames 1..N, 1..N, ... In 0-based terms
  frame `i` of a clip that starts at `start` is `(start + i * stride) mod N`, and a padded clip always starts
  at 0 (the reference uses offset 0 whenever the video is too short). Example: N = 3, L = 8 ->
  `[0, 1, 2, 0, 1, 2, 0, 1]`.
- Training clip: start drawn uniformly from every valid start `0 .. N - span` (both ends included). The
  reference draws from `0 .. N - 1 - L` (it subtracts one from the frame count first, so the last valid start
  is never drawn); we use all valid starts as METHOD.md asks.
- Validation clip: the centre clip, start `(N - span) // 2` (floor), which is exactly the reference's
  `int((N - 1 - L + 1) / 2)`.
- Test windows (the paper's protocol): every non-overlapping window, consecutive windows `L * stride` frames
  apart, as many as fit (`(N - span) // (L * stride) + 1`), the whole group centred in the video with the same
  floor rounding as the centre clip. One window equals the centre clip. A video shorter than one span gives a
  single circularly padded window.
- Uniform clips: K clips whose starts are spread evenly from the first to the last valid start (rounded to
  the nearest frame); K = 1 gives the centre clip.
"""

from __future__ import annotations

import random
from typing import Union

import numpy as np

RNG = Union[random.Random, np.random.Generator]


def clip_span(clip_len: int, stride: int = 1) -> int:
    """Number of video frames a clip covers: `(clip_len - 1) * stride + 1`."""
    _check(1, clip_len, stride)
    return (clip_len - 1) * stride + 1


def circular_indices(num_frames: int, clip_len: int, start: int = 0, stride: int = 1) -> list[int]:
    """Indices of a clip that wraps around the end of the video.

    Args:
        num_frames: decoded frames in the video (N >= 1).
        clip_len: frames in the clip (L >= 1).
        start: index of the clip's first frame; taken modulo N.
        stride: step between consecutive clip frames, in frames.

    Returns:
        `[(start + i * stride) % N for i in range(L)]`; without wrapping when the clip fits.
    """
    _check(num_frames, clip_len, stride)
    return [(start + i * stride) % num_frames for i in range(clip_len)]


def train_clip_indices(num_frames: int, clip_len: int, *, stride: int = 1, rng: RNG) -> list[int]:
    """A training clip: consecutive (strided) frames from a uniformly random valid start.

    Args:
        num_frames: decoded frames in the video.
        clip_len: frames in the clip.
        stride: step between clip frames (`--frame-stride`).
        rng: `random.Random` or `numpy.random.Generator`; the only source of randomness.

    Returns:
        L indices. A video shorter than the clip span gives the circularly padded clip from frame 0.
    """
    _check(num_frames, clip_len, stride)
    last_start = num_frames - clip_span(clip_len, stride)
    if last_start < 0:
        return circular_indices(num_frames, clip_len, 0, stride)
    return circular_indices(num_frames, clip_len, uniform_int(rng, 0, last_start), stride)


def center_clip_indices(num_frames: int, clip_len: int, *, stride: int = 1) -> list[int]:
    """The validation clip: the clip centred in the video (start `(N - span) // 2`), padded if too short."""
    _check(num_frames, clip_len, stride)
    last_start = num_frames - clip_span(clip_len, stride)
    return circular_indices(num_frames, clip_len, max(last_start, 0) // 2, stride)


def test_window_starts(num_frames: int, clip_len: int, *, stride: int = 1) -> list[int]:
    """First frame of every test window (see `test_window_indices`)."""
    _check(num_frames, clip_len, stride)
    span = clip_span(clip_len, stride)
    if num_frames < span:
        return [0]
    step = clip_len * stride  # windows never share a frame
    count = (num_frames - span) // step + 1
    footprint = (count - 1) * step + span
    offset = (num_frames - footprint) // 2
    return [offset + k * step for k in range(count)]


def test_window_indices(num_frames: int, clip_len: int, *, stride: int = 1) -> list[list[int]]:
    """All non-overlapping clip windows of a video, centred as a group (the paper's test protocol).

    Args:
        num_frames: decoded frames in the video.
        clip_len: frames per window.
        stride: step between frames inside a window.

    Returns:
        One index list per window, in temporal order. Example: N = 70, L = 32 -> windows starting at 3 and
        35 (two windows use 64 frames; the 6 left over are split 3 before, 3 after). A video shorter than one
        window gives one circularly padded window.
    """
    return [circular_indices(num_frames, clip_len, s, stride) for s in test_window_starts(num_frames, clip_len,
                                                                                          stride=stride)]


# Not tests, despite the name: keeps pytest from collecting them where they are imported into a test module.
test_window_starts.__test__ = False
test_window_indices.__test__ = False


def uniform_clip_indices(num_frames: int, clip_len: int, num_clips: int, *, stride: int = 1) -> list[list[int]]:
    """`num_clips` clips with starts spread evenly over the valid starts (may overlap).

    Args:
        num_frames: decoded frames in the video.
        clip_len: frames per clip.
        num_clips: clips to return (K >= 1).
        stride: step between frames inside a clip.

    Returns:
        K index lists. Start k is `round(k * (N - span) / (K - 1))`; K = 1 gives the centre clip; a video
        shorter than one clip gives K copies of the padded clip.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    _check(num_frames, clip_len, stride)
    last_start = num_frames - clip_span(clip_len, stride)
    if num_clips == 1:
        return [center_clip_indices(num_frames, clip_len, stride=stride)]
    if last_start < 0:
        return [circular_indices(num_frames, clip_len, 0, stride) for _ in range(num_clips)]
    starts = [int(np.floor(k * last_start / (num_clips - 1) + 0.5)) for k in range(num_clips)]
    return [circular_indices(num_frames, clip_len, s, stride) for s in starts]


def uniform_int(rng: RNG, low: int, high: int) -> int:
    """Uniform integer in [low, high] (both included) from a `random.Random` or a numpy Generator."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high + 1))
    return rng.randint(low, high)


def _check(num_frames: int, clip_len: int, stride: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
