"""Clip transforms: resize, crop, flip and normalise a decoded clip into the model's input layout.

Input: uint8 frames (T, H, W, 3) RGB as decoded. Output: float32 (3, T, S, S) for one view, or
(V, 3, T, S, S) for the multi-view test transform, with S = `crop_size`. The same crop and flip apply to every
frame of a clip. Operations use `torchvision.transforms.v2.functional` on (T, 3, H, W) video tensors.

Numbers follow METHOD.md §7 and the reference implementation (which follows Wang et al., "Towards Good
Practices for Very Deep Two-Stream ConvNets", 2015):

- Resize every frame by the record's rule (`preprocessing.Resize`: the paper's 128 (h) x 170 (w) ignoring the
  aspect ratio; or the short side, aspect kept). Frames from the decoder or the cache already have that size
  (one resampling, in swscale); the transform resizes only frames handed to it at another size.
- Training, multi-scale crop: candidate side lengths are `int(s * short_side)` for s in (1, 0.875, 0.75, 0.66)
  (128 -> 128, 112, 96, 84); a (height, width) pair is drawn uniformly among the pairs whose scale indices
  differ by at most one ("aspect change of at most one step", 10 pairs for 4 scales); then one of 13 fixed
  positions is drawn uniformly: with `h_step = (H - crop_h) // 4`, `w_step = (W - crop_w) // 4`, the offsets
  `(row, col)` in steps are the 4 corners, the centre, the 4 edge midpoints and the 4 quarter points
  (see `CROP_POSITIONS`). The crop is resized to `crop_size` x `crop_size` (bilinear) and flipped horizontally
  with probability 0.5. (The reference computes the steps from the output size instead of the crop size, so
  its larger crops at right/bottom positions run past the border and get clipped; we keep every crop inside
  the frame.)
- Evaluation: centre crop (`round((H - S) / 2)`, `round((W - S) / 2)`), as torchvision's `center_crop`.
- Test: 10 views: centre, top-left, top-right, bottom-left, bottom-right crops, then the same five mirrored.
- Normalisation presets: `preprocessing.NORMALIZATION` (re-exported here).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from actionbert.data.sampling import RNG, uniform_int
from actionbert.preprocessing import CROP_SCALES, NORMALIZATION, Normalization, Preprocessing, Resize

__all__ = ["CROP_POSITIONS", "CROP_SCALES", "NORMALIZATION", "Normalization", "ClipTransform", "EvalTransform",
           "TenCropTransform", "TrainTransform", "crop_offsets", "crop_size_pairs", "eval_transform",
           "sample_multiscale_crop", "ten_crop_transform", "train_transform", "transforms_for"]
#: The default record (METHOD.md §7); the transforms' defaults come from it, nowhere else.
_DEFAULT = Preprocessing()


#: The 13 crop positions as (row, column) offsets in quarter steps of the free space.
CROP_POSITIONS = (
    (0, 0), (0, 4), (4, 0), (4, 4), (2, 2),  # corners, centre
    (0, 2), (4, 2), (2, 0), (2, 4),  # edge midpoints: top, bottom, left, right
    (1, 1), (1, 3), (3, 1), (3, 3),  # quarter points
)


def crop_size_pairs(height: int, width: int, *, scales: Sequence[float] = CROP_SCALES,
                    max_distort: int = 1) -> list[tuple[int, int]]:
    """Candidate (crop_h, crop_w) pairs of the multi-scale crop for a `height` x `width` frame.

    Sides are `int(scale * min(height, width))`; a pair is allowed when its two scale indices differ by at
    most `max_distort`. For 128 x 170: (128,128), (128,112), (112,128), (112,112), (112,96), (96,112), (96,96),
    (96,84), (84,96), (84,84).
    """
    sides = [int(min(height, width) * s) for s in scales]
    return [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]


def crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
    """(top, left) of the 13 fixed crop positions, in `CROP_POSITIONS` order."""
    h_step, w_step = (height - crop_h) // 4, (width - crop_w) // 4
    return [(r * h_step, c * w_step) for r, c in CROP_POSITIONS]


def sample_multiscale_crop(height: int, width: int, rng: RNG, *, scales: Sequence[float] = CROP_SCALES,
                           max_distort: int = 1) -> tuple[int, int, int, int]:
    """Draw one multi-scale crop box (top, left, crop_h, crop_w): a size pair, then a position, uniformly."""
    pairs = crop_size_pairs(height, width, scales=scales, max_distort=max_distort)
    crop_h, crop_w = pairs[uniform_int(rng, 0, len(pairs) - 1)]
    offsets = crop_offsets(height, width, crop_h, crop_w)
    top, left = offsets[uniform_int(rng, 0, len(offsets) - 1)]
    return top, left, crop_h, crop_w


class ClipTransform:
    """Shared part of the clip transforms: resize, normalise, reorder to (C, T, H, W).

    Args:
        resize: (height, width) in pixels every frame is resized to, ignoring aspect ratio; or an int, the
            short side, keeping the aspect ratio.
        crop_size: side of the square crop fed to the model, in pixels.
        norm: key of `NORMALIZATION` ("torchvision" or "hara"), chosen by the backbone's pretrained weights.
    """

    def __init__(self, *, resize: Resize | tuple[int, int] | int = _DEFAULT.resize,
                 crop_size: int = _DEFAULT.crop_size, norm: str = _DEFAULT.norm):
        if norm not in NORMALIZATION:
            raise ValueError(f"unknown normalisation {norm!r}; choose one of {sorted(NORMALIZATION)}")
        self.resize = Resize.parse(resize)
        self.crop_size = int(crop_size)
        self.norm = norm
        preset = NORMALIZATION[norm]
        # Folded into one affine map per channel: out = x * scale + shift.
        std = torch.tensor(preset.std, dtype=torch.float32)
        self._scale = (preset.value_scale / std).view(3, 1, 1, 1)  # (C, 1, 1, 1)
        self._shift = (-torch.tensor(preset.mean, dtype=torch.float32) / std).view(3, 1, 1, 1)

    def _resized(self, frames) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> resized uint8 (T, 3, H', W')."""
        video = torch.as_tensor(frames)
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got {video.dtype} {tuple(video.shape)}")
        video = video.permute(0, 3, 1, 2)  # (T, 3, H, W)
        size = self.resize(video.shape[-2], video.shape[-1])
        if tuple(video.shape[-2:]) != size:
            video = F.resize(video, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        if min(video.shape[-2:]) < self.crop_size:
            raise ValueError(f"frames resized to {tuple(video.shape[-2:])} are smaller than crop {self.crop_size}")
        return video

    def _normalized(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (..., T, 3, S, S) -> float32 (..., 3, T, S, S), normalised."""
        video = video.transpose(-4, -3).to(torch.float32)  # (..., 3, T, S, S)
        return video * self._scale + self._shift

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resize={self.resize}, crop_size={self.crop_size}, norm={self.norm!r})"


class TrainTransform(ClipTransform):
    """Multi-scale crop at one of 13 positions, resized to `crop_size`, random horizontal flip.

    Args:
        resize, crop_size, norm: see `ClipTransform`.
        scales: crop side fractions of the short side.
        max_distort: largest allowed difference between the height and width scale indices.
        flip_p: probability of a horizontal flip.
    """

    def __init__(self, *, resize: Resize | tuple[int, int] | int = _DEFAULT.resize,
                 crop_size: int = _DEFAULT.crop_size, norm: str = _DEFAULT.norm,
                 scales: Sequence[float] = CROP_SCALES, max_distort: int = 1, flip_p: float = _DEFAULT.hflip):
        super().__init__(resize=resize, crop_size=crop_size, norm=norm)
        self.scales = tuple(scales)
        self.max_distort = max_distort
        self.flip_p = flip_p

    def __call__(self, frames, rng: RNG | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float32 (3, T, crop_size, crop_size); `rng` drives crop and flip."""
        rng = _rng(rng)
        video = self._resized(frames)
        top, left, crop_h, crop_w = sample_multiscale_crop(video.shape[-2], video.shape[-1], rng,
                                                           scales=self.scales, max_distort=self.max_distort)
        size = [self.crop_size, self.crop_size]
        video = F.resized_crop(video, top, left, crop_h, crop_w, size, interpolation=InterpolationMode.BILINEAR,
                               antialias=True)  # (T, 3, S, S)
        if _random(rng) < self.flip_p:
            video = F.horizontal_flip(video)
        return self._normalized(video)


class EvalTransform(ClipTransform):
    """Centre crop of `crop_size` (validation)."""

    def __call__(self, frames, rng: RNG | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float32 (3, T, crop_size, crop_size). `rng` is accepted and unused."""
        return self.normalized(self.cropped(frames))

    def cropped(self, frames) -> torch.Tensor:
        """The first half: uint8 (T, H, W, 3) -> uint8 (T, 3, crop_size, crop_size), a quarter of the bytes of
        the float clip (what decoding processes hand over)."""
        return F.center_crop(self._resized(frames), [self.crop_size, self.crop_size])

    def normalized(self, video: torch.Tensor) -> torch.Tensor:
        """The second half: uint8 (..., T, 3, S, S) -> float32 (..., 3, T, S, S); elementwise, so a stack of
        cropped clips gives the stack of their transforms, bit for bit."""
        return self._normalized(video)


class TenCropTransform(ClipTransform):
    """The paper's 10 test views: centre and 4 corner crops, then the same 5 mirrored."""

    num_views = 10

    def __call__(self, frames, rng: RNG | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float32 (10, 3, T, crop_size, crop_size). `rng` is accepted and unused."""
        video = self._resized(frames)
        tl, tr, bl, br, center = F.five_crop(video, [self.crop_size, self.crop_size])
        views = torch.stack([center, tl, tr, bl, br])  # (5, T, 3, S, S)
        views = torch.cat([views, F.horizontal_flip(views)])  # (10, T, 3, S, S)
        return self._normalized(views)


def train_transform(**kwargs) -> TrainTransform:
    """The training transform (see `TrainTransform`; defaults from the default record)."""
    return TrainTransform(**kwargs)


def eval_transform(**kwargs) -> EvalTransform:
    """The validation transform: centre crop."""
    return EvalTransform(**kwargs)


def ten_crop_transform(**kwargs) -> TenCropTransform:
    """The test transform: 10 views stacked first."""
    return TenCropTransform(**kwargs)


def transforms_for(pre: Preprocessing) -> dict[str, ClipTransform]:
    """The transforms a record asks for, by dataset mode: "train", "val" (centre crop), "test" (ten crops)."""
    look = dict(resize=pre.resize, crop_size=pre.crop_size, norm=pre.norm)
    return {"train": TrainTransform(**look, scales=pre.crop_scales, flip_p=pre.hflip),
            "val": EvalTransform(**look), "test": TenCropTransform(**look)}


def _rng(rng: RNG | None) -> RNG:
    """The given generator, or a fresh one seeded from torch's global RNG (so `torch.manual_seed` and
    DataLoader worker seeding make runs repeatable)."""
    if rng is not None:
        return rng
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def _random(rng: RNG) -> float:
    return float(rng.random())
