"""The map-style clip dataset, its collate function, and loading what `prepare` wrote.

One item is one clip of one video as a dict (`video`, `label`, `video_id`, `clip_index`, `num_clips`):

- mode "train": a random clip (`sampling.train_clip_indices`) through the training transform;
- mode "val": the centre clip through the evaluation transform;
- mode "test": one item per test window (`sampling.test_window_indices`), all views of the multi-view
  transform stacked first: `video` is (V, 3, T, H, W), V = 10 for the ten-crop transform.

Pixels: the dataset's `preprocessing` record (`actionbert.preprocessing.Preprocessing`) is the one source of the
clip length, frame stride, transforms and resize rule. Frames come from the decoded-frame cache when one exists
for the video (`prepare --cache`), is current and was made for the record's resize rule; otherwise from the
video itself, decoded and resized by that rule in one swscale call, exactly as the cache writer did, so both
paths give bit-identical clips. A cache whose video changed or vanished since `prepare`, or that was made for
another resize, is never read: it is detected (`cache.cache_status`) and the video is decoded instead, with one
`cache.StaleCacheWarning` per video naming it and the reason.

Failures: a video that fails to decode does not raise out of `__getitem__` and is not replaced by another
sample (that would bias the epoch silently). The item is a failure marker `{"error": "<file>: <reason>",
"video_id", "label", "clip_index"}`; `collate_clips` keeps good items in the batch and lists failures in
`batch["failures"]` as (video_id, reason) pairs, so the trainer can count and name them. A batch made only of
failures has `video = None`.

Randomness: with `seed` set, item i in epoch e uses `numpy.random.default_rng([seed, e, i])`, the same
whatever the number of workers or the sampler; call `set_epoch(e)` every epoch (as with DistributedSampler)
or every epoch sees the same clips. With `seed=None` each item draws its generator from torch's RNG, which
DataLoader reseeds per epoch and worker.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import av.error
import numpy as np
import torch
from torch.utils.data import Dataset

from actionbert.data.cache import (CACHE_DIRNAME, StaleCacheWarning, cache_file, cache_status, read_cached,
                                   resize_mismatch)
from actionbert.data.decode import VideoDecodeError, read_frames
from actionbert.data.sampling import center_clip_indices, test_window_indices, train_clip_indices
from actionbert.data.transforms import ClipTransform, transforms_for
from actionbert.errors import MissingFileError
from actionbert.preprocessing import Preprocessing

MODES = ("train", "val", "test")
#: Columns of `train.csv`, `val.csv`, `test.csv` written by `prepare`, in order.
SPLIT_COLUMNS = ("video_id", "path", "label", "class_name", "num_frames", "fps", "width", "height", "rotation")


@dataclass(frozen=True)
class Sample:
    """One usable video of a prepared split.

    Attributes:
        video_id: unique name of the video inside the dataset (its path relative to the data root).
        path: the video file or frame folder (absolute).
        label: class index into `classes.txt`; -1 when unlabelled (a test list without labels).
        num_frames: frames that decode (counted by `prepare`).
        fps: measured frame rate (0.0 when unknown).
        width: frame width in pixels after rotation (0 when unknown).
        height: frame height in pixels after rotation (0 when unknown).
        class_name: the label's name.
        cache: path of the decoded-frame cache file, "" when there is none.
    """

    video_id: str
    path: str
    label: int
    num_frames: int
    fps: float = 0.0
    width: int = 0
    height: int = 0
    class_name: str = ""
    cache: str = ""


def load_split(prepared_dir: str | os.PathLike, split: str) -> tuple[list[Sample], list[str]]:
    """Read a split written by `prepare`.

    Args:
        prepared_dir: the `prepare --out` folder.
        split: "train", "val" or "test" (only when `prepare` wrote a `test.csv`: UCF101/HMDB51 official test
            lists are written as val.csv, as the reference uses them; no split is ever read in place of another).

    Returns:
        (samples, class names in label order). `Sample.cache` is set for videos whose cache file exists and
        is current (`cache.cache_status`); a stale one is left unset, with a `StaleCacheWarning` naming the
        video.
    """
    prepared = Path(prepared_dir)
    if split not in MODES:
        raise ValueError(f"split must be one of {MODES}, got {split!r}")
    classes_file = prepared / "classes.txt"
    if not classes_file.is_file():
        raise MissingFileError(f"{classes_file}: not found; run `actionbert prepare` first")
    classes = [line.rstrip("\n") for line in classes_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    csv_file = prepared / f"{split}.csv"
    if split == "test" and not csv_file.is_file():
        raise MissingFileError(f"{csv_file}: no test split in {prepared} (prepare writes test.csv only when the "
                               "input names a test set; an official UCF101/HMDB51 test list is val.csv): use "
                               "--split val, or run prepare with --test-list")
    if not csv_file.is_file():
        raise MissingFileError(f"{csv_file}: not found; run `actionbert prepare` first")
    cache_dir = prepared / CACHE_DIRNAME
    samples = []
    with open(csv_file, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            cached = cache_file(cache_dir, row["video_id"])
            samples.append(Sample(
                video_id=row["video_id"], path=row["path"], label=int(row["label"]),
                num_frames=int(row["num_frames"]), fps=float(row["fps"] or 0), width=int(row["width"] or 0),
                height=int(row["height"] or 0), class_name=row.get("class_name", ""),
                cache=str(cached) if cached.is_file() and _current(cached, row["path"]) else "",
            ))
    return samples, classes


def _current(cache: Path, video: str) -> bool:
    """Whether a cache file may be used; warns (once per video) when it may not."""
    reason = cache_status(cache, video)
    if reason is not None:
        _warn_stale(video, cache, reason)
    return reason is None


def _warn_stale(video: str, cache: str | os.PathLike, reason: str) -> None:
    warnings.warn(f"{video}: its decoded-frame cache {cache} is not used: {reason}; the video is decoded "
                  f"instead (rerun `actionbert prepare --cache` to refresh the cache and frame counts)",
                  StaleCacheWarning, stacklevel=3)
def check_visible(samples: Sequence[Sample], *, where: str, probe: int = 8) -> None:
    """Raise FileNotFoundError when none of the first `probe` samples has its video or cache file here.

    `prepare` writes absolute video paths, so every machine of a multi-machine run needs the prepared folder
    and the videos at the same paths; this catches a machine that has neither, before its epoch fails clip by clip.
    """
    first = list(samples[:probe])
    if first and not any(s.cache or os.path.exists(s.path) for s in first):
        raise FileNotFoundError(
            f"{first[0].path}: not found on {where}, nor the other first {len(first)} videos of the split; every "
            "machine of a multi-machine run needs the prepared folder and its videos at the same paths (`prepare` "
            "writes absolute paths): use a shared filesystem or identical copies")


def write_split(file: str | os.PathLike, rows: Sequence[dict], *, extra_columns: Sequence[str] = ()) -> None:
    """Write a split CSV with `SPLIT_COLUMNS` and then `extra_columns` (used by `prepare`; `load_split`
    ignores columns it does not know)."""
    with open(file, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=(*SPLIT_COLUMNS, *extra_columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class VideoClipDataset(Dataset):
    """Clips of videos as model-ready tensors; see the module docstring.

    Args:
        samples: the videos (`load_split` output or hand-made `Sample`s).
        preprocessing: the record; default: one with `clip_len`, `frame_stride` and the given transform's
            resize, crop and normalisation (else the default record's).
        clip_len: frames per clip (32 for R(2+1)D, 64 for ResNeXt-101); default: the record's.
        mode: "train" (random clip, training transform), "val" (centre clip, evaluation transform) or "test"
            (every test window, multi-view transform).
        frame_stride: step between clip frames, in frames; default: the record's.
        transform: callable `(uint8 (T, H, W, 3), rng) -> float tensor`; default: the record's transform of
            the mode (`transforms.transforms_for`). Frames reach it already resized by the record's rule.
        cache_dir: folder of cache files named by `cache.cache_file`; None uses each `Sample.cache`.
        seed: base seed of the per-item generators; None draws them from torch's RNG.
    """

    def __init__(self, samples: Sequence[Sample], *, preprocessing: Preprocessing | None = None,
                 clip_len: int | None = None, mode: str = "train", frame_stride: int | None = None,
                 transform: Callable | None = None, cache_dir: str | os.PathLike | None = None,
                 seed: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.samples = list(samples)
        self.preprocessing = preprocessing or _record_of(transform, clip_len, frame_stride)
        self.clip_len = clip_len = self.preprocessing.clip_len
        self.mode = mode
        self.frame_stride = frame_stride = self.preprocessing.frame_stride
        self.transform = transform if transform is not None else transforms_for(self.preprocessing)[mode]
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.seed = seed
        self.epoch = 0
        self._checked: set[str] = set()  # video ids whose cache (under cache_dir) is current
        self._bypassed: set[str] = set()  # video ids whose cache is not used (warned once)
        self._warned_other = False  # warned that caches were made for another resize rule
        # One item per video, or per (video, test window) in test mode.
        self._items: list[tuple[int, int, int]] = []  # (sample index, clip index, clips of that video)
        for s, sample in enumerate(self.samples):
            if sample.num_frames < 1:
                raise ValueError(f"{sample.path}: num_frames must be >= 1, got {sample.num_frames}")
            count = len(test_window_indices(sample.num_frames, clip_len, stride=frame_stride)) if mode == "test" \
                else 1
            self._items.extend((s, k, count) for k in range(count))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[tuple[int, int, int]]:
        """(sample index, clip index, clips of that video) of every item, in item order (test views select
        subsets of windows with this)."""
        return list(self._items)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random clips and crops (only matters with a `seed`)."""
        self.epoch = epoch

    def clip_indices(self, index: int, rng: np.random.Generator | None = None) -> list[int]:
        """Frame indices of item `index` (deterministic for val and test; `rng` drives train)."""
        s, k, _ = self._items[index]
        n = self.samples[s].num_frames
        if self.mode == "train":
            return train_clip_indices(n, self.clip_len, stride=self.frame_stride, rng=rng or self._rng(index))
        if self.mode == "val":
            return center_clip_indices(n, self.clip_len, stride=self.frame_stride)
        return test_window_indices(n, self.clip_len, stride=self.frame_stride)[k]

    def __getitem__(self, index: int) -> dict:
        s, k, count = self._items[index]
        sample = self.samples[s]
        rng = self._rng(index)
        base = {"label": sample.label, "video_id": sample.video_id, "clip_index": k, "num_clips": count}
        indices = self.clip_indices(index, rng)
        try:
            frames = self._frames(sample, indices)
        except (VideoDecodeError, av.error.FFmpegError, OSError) as e:
            reason = str(e) if isinstance(e, VideoDecodeError) else f"{sample.path}: {e}"
            return {"error": reason, **base}
        video = self.transform(frames, rng)
        if self.mode == "test" and video.ndim == 4:
            video = video.unsqueeze(0)  # (1, 3, T, H, W): a single-view transform in test mode
        return {"video": video, **base}

    def _frames(self, sample: Sample, indices: list[int]) -> torch.Tensor:
        cache = self._cache(sample)
        if cache:
            try:
                return read_cached(cache, indices)
            except (OSError, ValueError, IndexError) as e:  # vanished or damaged since it was checked
                self._bypass(sample, cache, f"it cannot be read ({e})")
        return read_frames(sample.path, indices, size=self.preprocessing.resize, num_frames=sample.num_frames)

    def _cache(self, sample: Sample) -> str:
        """The cache file to read for `sample`, "" for none: `Sample.cache` or the file under `cache_dir`,
        checked here once per video (current, and made for the record's resize rule)."""
        if sample.video_id in self._bypassed:
            return ""
        cache = cache_file(self.cache_dir, sample.video_id) if self.cache_dir is not None else sample.cache
        if cache and sample.video_id not in self._checked:
            if not Path(cache).is_file():
                return ""
            other = resize_mismatch(cache, self.preprocessing.resize)
            if other is not None:  # usually the whole cache: one warning, not one per video
                self._bypassed.add(sample.video_id)
                if not self._warned_other:
                    self._warned_other = True
                    _warn_stale(sample.path, cache, other + "; the same holds for every other video whose cache "
                                                         "was made for it (not repeated)")
                return ""
            reason = cache_status(cache, sample.path)
            if reason is not None:
                self._bypass(sample, cache, reason)
                return ""
            self._checked.add(sample.video_id)
        return str(cache)

    def _bypass(self, sample: Sample, cache, reason: str) -> None:
        """Stop using a video's cache, warning once (per process) that its video is decoded instead."""
        if sample.video_id not in self._bypassed:
            self._bypassed.add(sample.video_id)
            _warn_stale(sample.path, cache, reason)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([self.seed, self.epoch, index])


def _record_of(transform, clip_len: int | None, frame_stride: int | None) -> Preprocessing:
    """The record of a dataset built from loose arguments: the transform's look (a `ClipTransform`) or the
    default record's, with the given clip length and stride."""
    default = Preprocessing()
    look = {}
    if isinstance(transform, ClipTransform):
        look = dict(resize=transform.resize, crop_size=transform.crop_size, norm=transform.norm)
    return Preprocessing(**look, clip_len=clip_len or default.clip_len, frame_stride=frame_stride or 1)


def collate_clips(batch: Sequence[dict]) -> dict:
    """Stack the good items of a batch and list the failed ones (usable as a DataLoader `collate_fn`).

    Returns:
        {"video": float (B, 3, T, H, W) or (B, V, 3, T, H, W), or None when every item failed,
         "label": int64 (B,), "video_id": list of B str, "clip_index": int64 (B,), "num_clips": int64 (B,),
         "failures": list of (video_id, reason) for the items that failed}.
    """
    good = [b for b in batch if "error" not in b]
    failures = [(b["video_id"], b["error"]) for b in batch if "error" in b]
    return {
        "video": torch.stack([b["video"] for b in good]) if good else None,
        "label": torch.tensor([b["label"] for b in good], dtype=torch.int64),
        "video_id": [b["video_id"] for b in good],
        "clip_index": torch.tensor([b["clip_index"] for b in good], dtype=torch.int64),
        "num_clips": torch.tensor([b["num_clips"] for b in good], dtype=torch.int64),
        "failures": failures,
    }
