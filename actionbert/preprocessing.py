"""The preprocessing record: how a decoded frame becomes model input, written once and read everywhere.

One frozen `Preprocessing` is built from the run config (`config.preprocessing_of`), saved in every training
checkpoint and model folder (`checkpoint.inference_config`, key "preprocessing") and in every export's
metadata, and it is the only source that the cache writer, the dataset, `eval`, `predict` and `export` read.
This module imports nothing from actionbert, so every other module may import it.

Pixel path (METHOD.md §7), identical for cached, decoded and streamed frames:

1. decode, rotate upright, convert to RGB and resize in ONE swscale call (bilinear) to `resize.size_for(h, w)`:
   (height, width) ignoring the aspect ratio (the paper: 128 x 170), or with `keep_aspect` the short side
   scaled to `resize.height`;
2. crop `crop_size` x `crop_size` (centre / ten crops for evaluation, multi-scale crops in training);
3. `out = (x * value_scale - mean) / std` per RGB channel, x in 0..255, layout (N, 3, T, S, S) float32.

Checkpoints written before the record existed stored the same facts as loose keys ("resize", "keep_aspect",
"norm", "frame_stride", "clip_len", "input_size", "hflip"); `Preprocessing.from_info` reads both forms.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

#: Largest frame side (pixels) a record's resize or crop may ask for.
MAX_SIDE = 4096
#: Version of the record's dict form.
RECORD_VERSION = 1


@dataclass(frozen=True)
class Normalization:
    """Per-channel normalisation: `out = (x * value_scale - mean) / std`, x in 0..255, channels RGB."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    value_scale: float


#: Presets by the source of the pretrained weights: "torchvision" (R(2+1)D: IG-65M and torchvision Kinetics)
#: divides by 255 then standardises; "hara" (ResNeXt-101 3D, Hara et al.) subtracts means from 0..255 values.
NORMALIZATION = {
    "torchvision": Normalization(mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989),
                                 value_scale=1.0 / 255.0),
    "hara": Normalization(mean=(114.7748, 107.7354, 99.4750), std=(1.0, 1.0, 1.0), value_scale=1.0),
}

#: Multi-scale crop side lengths as fractions of the resized frame's short side (training).
CROP_SCALES = (1.0, 0.875, 0.75, 0.66)


class PreprocessingError(ValueError):
    """A preprocessing record (or the loose fields of an old checkpoint) that cannot describe model input."""


@dataclass(frozen=True)
class Resize:
    """The resize rule: (height, width) ignoring the aspect ratio, or (`keep_aspect`) short side = height.

    Calling it maps an upright frame's (height, width) to the resized (height, width)."""

    height: int = 128
    width: int = 170
    keep_aspect: bool = False

    def __post_init__(self):
        for side in (self.height, self.width):
            if not _is_int(side) or not 1 <= side <= MAX_SIDE:
                raise PreprocessingError(f"'resize' must be [height, width] in pixels (1..{MAX_SIDE}), got "
                                         f"{[self.height, self.width]!r}")

    def __call__(self, height: int, width: int) -> tuple[int, int]:
        if not self.keep_aspect:
            return self.height, self.width
        short = self.height
        if height <= width:
            return short, max(1, round(width * short / height))
        return max(1, round(height * short / width)), short

    @property
    def min_side(self) -> int:
        """The smallest side any resized frame has."""
        return self.height if self.keep_aspect else min(self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        return {"resize": [self.height, self.width], "keep_aspect": self.keep_aspect}

    @staticmethod
    def from_text(text: str) -> "Resize":
        """"128x170" (height x width) or "128" (short side, aspect kept), as typed on a command line."""
        try:
            sides = [int(p) for p in text.lower().replace(",", "x").split("x") if p.strip()]
            return Resize.parse(sides[0] if len(sides) == 1 else sides)
        except (ValueError, IndexError):
            raise PreprocessingError(f"resize {text!r}: expected HEIGHTxWIDTH such as 128x170, or one short "
                                     f"side") from None

    @staticmethod
    def parse(value, keep_aspect: bool = False) -> "Resize":
        """A Resize from a Resize, an int (short side, aspect kept) or a [height, width] pair."""
        if isinstance(value, Resize):
            return value
        if _is_int(value):
            return Resize(value, value, keep_aspect=True)
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise PreprocessingError(f"'resize' must be [height, width] in pixels (1..{MAX_SIDE}), got {value!r}")
        height, width = (int(v) if isinstance(v, numbers.Integral) else v for v in value)
        return Resize(height, width, keep_aspect=bool(keep_aspect))


@dataclass(frozen=True)
class Preprocessing:
    """Everything between decoded frames and the model's input tensor (see the module docstring).

    Attributes:
        resize: the resize rule (one bilinear swscale resampling, in the decoder).
        crop_size: side of the square crops fed to the model.
        norm: normalisation preset name (`NORMALIZATION`); its numbers are written beside it in `to_dict`.
        clip_len: frames per clip.
        frame_stride: step between a clip's frames.
        hflip: training flip probability; 0 means left/right matters, so evaluation shows no mirrored views.
        crop_scales: training multi-scale crop fractions.
    """

    resize: Resize = field(default_factory=Resize)
    crop_size: int = 112
    norm: str = "torchvision"
    clip_len: int = 32
    frame_stride: int = 1
    hflip: float = 0.5
    crop_scales: tuple[float, ...] = CROP_SCALES

    def __post_init__(self):
        if self.norm not in NORMALIZATION:
            raise PreprocessingError(f"'norm' must be one of {sorted(NORMALIZATION)}, got {self.norm!r}")
        if not _is_int(self.crop_size) or not 1 <= self.crop_size <= MAX_SIDE:
            raise PreprocessingError(f"'crop_size' {self.crop_size!r} is not a usable crop size (1..{MAX_SIDE})")
        if self.resize.min_side < self.crop_size:
            raise PreprocessingError(f"'resize' {[self.resize.height, self.resize.width]} is smaller than the "
                                     f"{self.crop_size}-pixel crop ('crop_size')")
        for name in ("clip_len", "frame_stride"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise PreprocessingError(f"'{name}' must be an integer >= 1, got {getattr(self, name)!r}")

    @property
    def normalization(self) -> Normalization:
        return NORMALIZATION[self.norm]

    @property
    def test_crops(self) -> int:
        """Crops per window in the paper's test protocol: 10 (5 + mirrored), 5 when trained without flips."""
        return 10 if self.hflip > 0 else 5

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (also what an export's metadata carries): rule names and numbers, nothing implicit."""
        n = self.normalization
        return {
            "version": RECORD_VERSION, **self.resize.to_dict(), "interpolation": "bilinear",
            "resampling": "once, from the decoded upright frame to the resize size",
            "crop_size": self.crop_size, "channel_order": "RGB", "layout": "N,C,T,H,W", "dtype": "float32",
            "norm": self.norm, "mean": list(n.mean), "std": list(n.std), "value_scale": n.value_scale,
            "clip_len": self.clip_len, "frame_stride": self.frame_stride, "hflip": self.hflip,
            "crop_scales": list(self.crop_scales),
            "test": {"windows": "every non-overlapping window of clip_len frames (step frame_stride), centred as "
                                "a group; a shorter video loops its frames into one window",
                     "crops": self.test_crops, "crop_order": "centre, top-left, top-right, bottom-left, "
                                                             "bottom-right, then the same mirrored",
                     "video_score": "softmax of the mean of raw logits over windows x crops"},
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Preprocessing":
        """Read `to_dict`'s form; PreprocessingError names the bad field."""
        if not isinstance(d, dict):
            raise PreprocessingError(f"'preprocessing' must be a mapping, got {type(d).__name__}")
        return _build(d, crop_key="crop_size")

    @staticmethod
    def from_info(info: dict[str, Any]) -> "Preprocessing":
        """The record of a checkpoint's / model folder's inference dict; an old one without a record is read
        from its loose fields (default resize 128 x 170, stride 1, flips 0.5, as those versions assumed)."""
        if "preprocessing" in info:
            return Preprocessing.from_dict(info["preprocessing"])
        return _build(info, crop_key="input_size")


def _build(d: dict[str, Any], *, crop_key: str) -> Preprocessing:
    defaults = Preprocessing()
    try:
        resize = Resize.parse(d.get("resize", [defaults.resize.height, defaults.resize.width]),
                              keep_aspect=bool(d.get("keep_aspect", False)))
        scales = tuple(float(s) for s in d.get("crop_scales", CROP_SCALES))
        return Preprocessing(resize=resize, crop_size=d.get(crop_key, defaults.crop_size), norm=d.get("norm"),
                             clip_len=d.get("clip_len", defaults.clip_len),
                             frame_stride=d.get("frame_stride", 1), hflip=float(d.get("hflip", 0.5)),
                             crop_scales=scales)
    except (TypeError, ValueError) as e:
        if isinstance(e, PreprocessingError):
            raise
        raise PreprocessingError(f"malformed preprocessing record ({e})") from None


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
