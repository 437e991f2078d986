"""Caveats: what a user must know about a video that is used anyway.

A video that decodes only in part, whose file claims more frames than decode, or that is shorter than one
clip is still usable data: it is kept, never dropped by surprise, and the caveat travels with it, as short
text, into

- `prepare`'s output: the `caveat` column of train/val/test.csv ("; " between several) and, for the file
  problems (everything but "short"), a "kept" row of problems.csv with the longer reason;
- `predict`'s result: `Prediction.warning`.

The texts start with a keyword:

- "corrupt: N frames decode before a decoder error" (the frames before it are used);
- "truncated: decoded N of M frames": no decoder error, but the file's own duration (times the measured
  frame rate) promises M frames; typical of a Matroska/WebM file cut short, whose header states no count;
- "frame count: header claims M, N decode" / "frame count: list claims M, N decode": the container's or a
  frame list's count disagrees with the decoded one by more than one frame and 1% (the decoded count is used);
- "short: N frames looped to fill a L-frame clip": fewer frames than one clip, so a clip repeats them
  (circular padding, the paper's rule); the model sees less motion than a clip is made for.
"""

from __future__ import annotations

from actionbert.data.decode import VideoInfo
from actionbert.data.problems import Problem
from actionbert.data.sampling import clip_span


def short_caveat(num_frames: int, clip_len: int, stride: int = 1) -> str | None:
    """The "short" caveat of a video of `num_frames` frames under clips of `clip_len` frames at `stride`."""
    if num_frames >= clip_span(clip_len, stride):
        return None
    at = f" at stride {stride}" if stride > 1 else ""
    return f"short: {num_frames} frame{'s' * (num_frames != 1)} looped to fill a {clip_len}-frame clip{at}"


def _duration_claim(info: VideoInfo) -> int | None:
    """Frames the file's duration promises (no frame count in its header), None when it promises nothing."""
    if info.header_frames is not None or not info.header_duration or info.fps <= 0:
        return None
    return round(info.header_duration * info.fps)


def _truncated_by_duration(info: VideoInfo) -> int | None:
    """M when the duration promises M frames and clearly fewer decode (more than 2 frames and 5% missing:
    a container's duration also covers its audio, which may run a little longer than the video)."""
    claimed = _duration_claim(info)
    if claimed is None or info.decode_error:
        return None
    return claimed if claimed - info.num_frames > max(2, 0.05 * claimed) else None


def _count_disagrees(claimed: int | None, n: int) -> bool:
    return claimed is not None and abs(claimed - n) > max(1, 0.01 * n)


def truncation_caveat(info: VideoInfo) -> str | None:
    """The "truncated" / "frame count" caveat of a fully read video (no decoder error: that one is reported
    with its own message), None when the file's claims agree with what decoded."""
    if info.decode_error:
        return None
    claimed = _truncated_by_duration(info)
    if claimed is not None:
        return f"truncated: decoded {info.num_frames} of {claimed} frames"
    if _count_disagrees(info.header_frames, info.num_frames):
        return f"frame count: header claims {info.header_frames}, {info.num_frames} decode"
    return None


def judge(path: str, info: VideoInfo, *, min_frames: int, clip_len: int | None,
          declared_frames: int | None = None) -> tuple[bool, list[Problem], list[str]]:
    """Whether a probed video is usable, its problems.csv notes, and its caveats (see the module docstring).

    Args:
        path: the video (for the notes).
        info: its `probe` result.
        min_frames: fewest decodable frames a usable video needs (fewer: skipped, "too_short").
        clip_len: frames of a training clip, for the "short" caveat; None: no such caveat.
        declared_frames: the count a frame list declares, if any.

    Returns:
        (keep, problems, caveats).
    """
    n = info.num_frames
    if n < min_frames:
        return False, [Problem(path, "too_short", f"only {n} decodable frame{'s' * (n != 1)}; at least "
                                                  f"{min_frames} needed (min_frames)")], []
    notes, caveats = [], []
    if info.decode_error:
        notes.append(Problem(path, "corrupt", f"truncated or corrupt: {info.decode_error}; using the {n} frames "
                                              f"before it", "kept"))
        caveats.append(f"corrupt: {n} frames decode before a decoder error")
    claimed = _truncated_by_duration(info)
    if claimed is not None:
        notes.append(Problem(path, "truncated", f"decoded {n} of the {claimed} frames the file's duration "
                                                f"({info.header_duration:.3f} s at {info.fps:g} fps) promises, "
                                                f"without a decoder error (cut short?); using the {n}", "kept"))
        caveats.append(f"truncated: decoded {n} of {claimed} frames")
    for source, count in (("header", info.header_frames), ("list", declared_frames)):
        if source == "header" and info.decode_error:
            continue  # a header describes the whole file; a truncated one is already reported above
        if _count_disagrees(count, n):
            notes.append(Problem(path, "frame_count_mismatch", f"{source} claims {count} frames but {n} "
                                                               f"decode; using {n}", "kept"))
            caveats.append(f"frame count: {source} claims {count}, {n} decode")
    short = short_caveat(n, clip_len) if clip_len else None
    if short:
        caveats.append(short)
    return True, notes, caveats
