"""Run configuration: three small frozen dataclasses (model, data, train) that YAML files map onto.

```yaml
model: {backbone: r2plus1d_34, head: bert, clip_len: 32}      # actionbert.models.ModelConfig
data:  {root: prepared/, frame_stride: 1}                     # DataConfig
train: {epochs: 30, batch_size: 8, lr: 1.0e-4}                # TrainConfig
```

`num_classes` may be left out (0): it is filled in from the prepared dataset's `classes.txt`. The resolved
config is written to the run folder and stored in every checkpoint, so a run can be reproduced and a
checkpoint used for inference with nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from actionbert.models import ModelConfig, get_backbone_spec
from actionbert.runtime import PRECISION_CHOICES


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how they become tensors (METHOD.md §7).

    Args:
        root: folder written by `actionbert prepare` (classes.txt, train.csv, val.csv, optional cache).
        frame_stride: step between the consecutive frames of a clip (the paper: 1).
        resize: frames are resized to (height, width) before cropping (the paper: 128 x 170).
        keep_aspect: resize the short side to resize[0] instead, keeping the aspect ratio.
        norm: normalisation preset ("torchvision" or "hara"); None = the backbone's pretrained source.
        hflip: probability of a horizontal flip in training (0.5; use 0 when left/right is part of a class).
        crop_scales: multi-scale crop side fractions of the resized short side (METHOD.md §7).
        num_workers: DataLoader worker processes per training process.
        val_split: split evaluated after each epoch ("val").
    """

    root: str = ""
    frame_stride: int = 1
    resize: tuple[int, int] = (128, 170)
    keep_aspect: bool = False
    norm: str | None = None
    hflip: float = 0.5
    crop_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    num_workers: int = 2
    val_split: str = "val"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Defaults follow the brief (METHOD.md §1, §8) where it gives a value.

    Args:
        out: run folder.
        epochs: training epochs.
        batch_size: clips per step per process (global batch = batch_size x processes x accumulation).
        accumulation: optimizer step every this many batches (the reference: 16 batches of 8).
        lr: AdamW learning rate (the brief: 1e-4; the reference code used 1e-5).
        weight_decay: AdamW weight decay (1e-3), not applied to norms, biases, the CLS token and positions.
        plateau_factor: ReduceLROnPlateau factor on the validation loss (0.1 = divide by 10).
        plateau_patience: epochs without improvement of the validation loss before the cut (5).
        label_smoothing: cross-entropy label smoothing (off in the paper).
        warmup_epochs: linear learning-rate warm-up from lr/100 over this many epochs (0 = off).
        freeze_backbone_epochs: train only the head and classifier for this many first epochs.
        early_stopping: stop after this many epochs without a better validation top-1 (0 = off).
        precision: "fp32", "bf16" (autocast, also on CPU), "fp16" (GPU only, with a gradient scaler) or "auto" (the
            device's fast one, see the table in `actionbert.runtime`; the run's config.yaml records the choice).
        channels_last: run convolutions in channels-last 3D memory format.
        sync_bn: synchronise BatchNorm statistics across processes (small per-GPU batches; CUDA only).
        freeze_bn: keep BatchNorm layers in eval mode (running statistics; affine parameters still train).
        deterministic_layers: switch off dropout and token masking (for exact equivalence checks only).
        device: "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:1", ...
        seed: seeds Python, NumPy and PyTorch; with the same seed a CPU run is reproducible.
        pretrained: backbone/model weights to start from (see `actionbert.load_weights`).
        pretrained_source: format of `pretrained` ("torchvision", "ig65m", "hara", "reference", "actionbert").
        max_steps_per_epoch: cut epochs short (0 = full epochs); for smoke runs.
    """

    out: str = "runs/train"
    epochs: int = 30
    batch_size: int = 8
    accumulation: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-3
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    label_smoothing: float = 0.0
    warmup_epochs: int = 0
    freeze_backbone_epochs: int = 0
    early_stopping: int = 0
    precision: str = "fp32"
    channels_last: bool = True
    sync_bn: bool = False
    freeze_bn: bool = False
    deterministic_layers: bool = False
    device: str = "auto"
    seed: int = 0
    pretrained: str | None = None
    pretrained_source: str | None = None
    max_steps_per_epoch: int = 0


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig("r2plus1d_34", "bert", 0, 32))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
PRECISIONS = PRECISION_CHOICES


class ConfigError(ValueError):
    """A configuration file or override that does not fit the dataclasses."""


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's type (tuples from lists, numbers from strings)."""
    hint = get_type_hints(cls)[name]
    text = str(hint)
    if value is None:
        return None
    if text.startswith("tuple"):
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v]
        return tuple((float if "float" in text else int)(v) for v in value)
    if hint is bool or text == "bool":
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{cls.__name__}.{name}: expected true/false, got {value!r}")
        return bool(value)
    if hint is int or text == "int":
        return int(value)
    if hint is float or text == "float":
        return float(value)
    if text.startswith("dict"):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        return dict(value)
    if isinstance(value, str) and value.lower() in ("none", "null", "~") and "None" in text:
        return None
    if "int" in text and "None" in text and isinstance(value, str):
        return int(value)
    return value


def _section(cls: type, values: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown {cls.__name__} field(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {k: _coerce(cls, k, v) for k, v in values.items()}
    if cls is ModelConfig:
        kwargs.setdefault("num_classes", 0)
        missing = {"backbone", "head", "clip_len"} - set(kwargs)
        for k in missing:  # fall back to the default model's choice, e.g. clip_len from the backbone
            kwargs[k] = {"backbone": "r2plus1d_34", "head": "bert"}.get(k)
        if kwargs["clip_len"] is None:
            kwargs["clip_len"] = get_backbone_spec(kwargs["backbone"]).clip_len
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any], *, where: str = "config") -> RunConfig:
    raw = raw or {}
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; expected {sorted(SECTIONS)}")
    cfg = RunConfig(**{name: _section(cls, raw.get(name) or {}, where) for name, cls in SECTIONS.items()})
    validate(cfg, where=where)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML file (or start from defaults) and apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    where = str(path) if path else "defaults"
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with model/data/train sections")
    for item in overrides:
        raw = apply_override(raw, item)
    return config_from_dict(raw, where=where)


def apply_override(raw: dict[str, Any], item: str) -> dict[str, Any]:
    """`model.head=tgap` -> raw["model"]["head"] = "tgap" (value parsed as YAML: numbers, lists, null)."""
    key, sep, value = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or section not in SECTIONS:
        raise ConfigError(f"override {item!r}: expected section.key=value with section in {sorted(SECTIONS)}")
    out = {k: dict(v or {}) for k, v in raw.items()}
    parsed = yaml.safe_load(value) if value.strip() else None
    if name.startswith("head_options."):
        opts = dict(out.setdefault(section, {}).get("head_options") or {})
        opts[name.split(".", 1)[1]] = parsed
        out[section]["head_options"] = opts
    else:
        out.setdefault(section, {})[name] = parsed
    return out


def validate(cfg: RunConfig, *, where: str = "config") -> None:
    t = cfg.train
    if t.precision not in PRECISIONS:
        raise ConfigError(f"{where}: train.precision must be one of {PRECISIONS}, got {t.precision!r}")
    for name in ("epochs", "batch_size", "accumulation"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{where}: train.{name} must be >= 1, got {getattr(t, name)}")
    if cfg.data.frame_stride < 1:
        raise ConfigError(f"{where}: data.frame_stride must be >= 1")
    get_backbone_spec(cfg.model.backbone)


def resolve(cfg: RunConfig, *, num_classes: int) -> RunConfig:
    """Fill in what comes from the dataset and the backbone (class count, normalisation preset)."""
    model = cfg.model if cfg.model.num_classes else dataclasses.replace(cfg.model, num_classes=num_classes)
    norm = cfg.data.norm or get_backbone_spec(cfg.model.backbone).norm
    return dataclasses.replace(cfg, model=model, data=dataclasses.replace(cfg.data, norm=norm))


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["data"]["resize"] = list(d["data"]["resize"])
    d["data"]["crop_scales"] = list(d["data"]["crop_scales"])
    return d


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def transform_resize(resize, keep_aspect: bool):
    """The `resize` argument of the data transforms: (H, W) ignoring aspect, or the short side (an int)."""
    return int(resize[0]) if keep_aspect else (int(resize[0]), int(resize[1]))
