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
import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from actionbert.errors import UsageError
from actionbert.models import ModelConfig, get_backbone_spec
from actionbert.precisions import TRAIN_PRECISIONS
from actionbert.preprocessing import CROP_SCALES, Preprocessing, Resize

_DEFAULT = Preprocessing()


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how they become tensors (METHOD.md §7).

    Args:
        root: folder written by `actionbert prepare` (classes.txt, train.csv, val.csv, optional cache).
        frame_stride: step between the consecutive frames of a clip (the paper: 1).
        resize: frames are resized to (height, width) before cropping (default: the record's, 128 x 170).
        keep_aspect: resize the short side to resize[0] instead, keeping the aspect ratio.
        norm: normalisation preset ("torchvision" or "hara"); None = the backbone's pretrained source.
        hflip: probability of a horizontal flip in training (0.5; use 0 when left/right is part of a class).
        crop_scales: multi-scale crop side fractions of the resized short side (METHOD.md §7).
        num_workers: DataLoader worker processes per training process.
        val_split: split evaluated after each epoch ("val").
    """

    root: str = ""
    frame_stride: int = 1
    resize: tuple[int, int] = (_DEFAULT.resize.height, _DEFAULT.resize.width)
    keep_aspect: bool = False
    norm: str | None = None
    hflip: float = _DEFAULT.hflip
    crop_scales: tuple[float, ...] = CROP_SCALES
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
        precision: "fp32", "bf16" (autocast, also on CPU), "fp16" (GPU only, with a gradient scaler), "auto" (the
            device's fast one, see the table in `actionbert.runtime`; the run's config.yaml records the choice) or
            "fp64" (float64 weights and activations: many times slower; for exactness checks such as the DDP test).
        channels_last: run convolutions in channels-last 3D memory format.
        sync_bn: synchronise BatchNorm statistics across processes (small per-GPU batches; CUDA only).
        freeze_bn: keep BatchNorm layers in eval mode (running statistics; affine parameters still train).
        deterministic_layers: switch off dropout and token masking (for exact equivalence checks only).
        device: "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:1", ...
        seed: seeds Python, NumPy and PyTorch; with the same seed a CPU run is reproducible.
        pretrained: weights to start from: a file, a model folder or a known public file's name, downloaded once
            (`actionbert models --weights`; see `actionbert.load_weights`).
        pretrained_source: format of a `pretrained` file ("torchvision", "ig65m", "hara", "reference",
            "actionbert"); None: "actionbert" for a file, the registry's format for a name.
        max_steps_per_epoch: cut epochs short (0 = full epochs); for smoke runs.
        dist_timeout_s: seconds a process of a multi-process run waits in a collective operation (gradient
            all-reduce, barrier) for the others before the run stops with an error saying a process stopped
            answering. 600 s is far above the longest legitimate wait (rank 0 writing checkpoints and
            curves while the others wait at the epoch's barrier, the first batch of a cold cache) and well
            below gloo's own 30 minutes; it is also NCCL's default.
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
    dist_timeout_s: float = 600.0


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig("r2plus1d_34", "bert", 0, 32))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


class ConfigError(UsageError):
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
            raise ValueError(value)
        return bool(value)
    if hint is int or text == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)  # no silent truncation of 2.5 epochs, no true = 1
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


def _section_name(cls: type) -> str:
    return next(name for name, c in SECTIONS.items() if c is cls)


def _unknown_key(cls: type, name: str) -> str:
    """"unknown key train.epoch (did you mean train.epochs?)" with the close matches among the known keys."""
    section, known = _section_name(cls), sorted(f.name for f in fields(cls))
    close = difflib.get_close_matches(name, known, n=2)
    hint = f"did you mean {' or '.join(f'{section}.{c}' for c in close)}?" if close else \
        f"known {section} keys: {', '.join(known)}"
    return f"unknown key {section}.{name} ({hint})"


def _expected(cls: type, name: str) -> str:
    """The type of a field in words, for error messages."""
    text = str(get_type_hints(cls)[name])
    for key, words in (("tuple", "a list of numbers such as [128, 170]"), ("bool", "true or false"),
                       ("dict", "a mapping"), ("float", "a number"), ("int", "a whole number"),
                       ("str", "text")):
        if key in text:
            return words + (" or null" if "None" in text else "")
    return text


def coerce_field(cls: type, name: str, value: Any, *, where: str) -> Any:
    """`_coerce` with an error that names the key, the expected type and the value."""
    try:
        return _coerce(cls, name, value)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: {_section_name(cls)}.{name} expects {_expected(cls, name)}, "
                          f"got {value!r}") from None


def _section(cls: type, values: dict[str, Any], where: str):
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"{where}: " + "; ".join(_unknown_key(cls, k) for k in unknown))
    kwargs = {k: coerce_field(cls, k, v, where=where) for k, v in values.items()}
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


def load_config(path: str | Path | None, overrides: list[str] = (), *, base: dict[str, Any] | None = None,
                base_name: str = "defaults") -> RunConfig:
    """Read a YAML file (or start from `base`, a config dict, or the defaults) and apply `section.key=value`
    overrides."""
    raw: dict[str, Any] = dict(base or {})
    where = str(path) if path else base_name
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
    return config_from_dict(raw, where=f"{where} with the overrides" if overrides else where)


def apply_override(raw: dict[str, Any], item: str) -> dict[str, Any]:
    """`model.head=tgap` -> raw["model"]["head"] = "tgap" (value parsed as YAML: numbers, lists, null)."""
    key, sep, value = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or section not in SECTIONS:
        raise ConfigError(f"override {item!r}: expected section.key=value with section in {sorted(SECTIONS)}")
    out = {k: dict(v or {}) for k, v in raw.items()}
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value  # not YAML: a plain string, checked against the field's type below
    cls, field_name = SECTIONS[section], name.split(".", 1)[0]
    if field_name not in {f.name for f in fields(cls)}:
        raise ConfigError(f"override {item!r}: {_unknown_key(cls, field_name)}")
    if field_name == name:
        coerce_field(cls, name, parsed, where=f"override {item!r}")
    if name.startswith("head_options."):
        opts = dict(out.setdefault(section, {}).get("head_options") or {})
        opts[name.split(".", 1)[1]] = parsed
        out[section]["head_options"] = opts
    else:
        out.setdefault(section, {})[name] = parsed
    return out


def validate(cfg: RunConfig, *, where: str = "config") -> None:
    t = cfg.train
    if t.precision not in TRAIN_PRECISIONS:
        raise ConfigError(f"{where}: train.precision must be one of {TRAIN_PRECISIONS}, got {t.precision!r}")
    for name in ("epochs", "batch_size", "accumulation"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{where}: train.{name} must be >= 1, got {getattr(t, name)}")
    if cfg.data.frame_stride < 1:
        raise ConfigError(f"{where}: data.frame_stride must be >= 1")
    if t.dist_timeout_s <= 0:
        raise ConfigError(f"{where}: train.dist_timeout_s must be > 0 seconds, got {t.dist_timeout_s}")
    _check_crop(cfg, where)
    try:
        get_backbone_spec(cfg.model.backbone)
    except ValueError as e:
        raise ConfigError(f"{where}: model.backbone: {e}") from None


def _check_crop(cfg: RunConfig, where: str) -> None:
    """The training crop must fit in the resized frames (else every clip would fail in a loader worker)."""
    d, size = cfg.data, cfg.model.input_size
    if len(d.resize) != 2 or min(d.resize) < 1:
        raise ConfigError(f"{where}: data.resize must be [height, width] in pixels, got {list(d.resize)}")
    smallest = int(d.resize[0]) if d.keep_aspect else min(int(v) for v in d.resize)
    if size > smallest:
        what = "short side" if d.keep_aspect else "smaller side"
        raise ConfigError(f"{where}: model.input_size {size} is larger than the {what} of data.resize "
                          f"{list(d.resize)}: the crop would not fit; lower model.input_size or raise data.resize")


def resolve(cfg: RunConfig, *, num_classes: int) -> RunConfig:
    """Fill in what comes from the dataset and the backbone (class count, normalisation preset)."""
    model = cfg.model if cfg.model.num_classes else dataclasses.replace(cfg.model, num_classes=num_classes)
    return dataclasses.replace(cfg, model=model, data=dataclasses.replace(cfg.data, norm=norm_of(cfg)))


def norm_of(cfg: RunConfig) -> str:
    """The run's normalisation preset: data.norm when set, else its backbone's (what pretrained weights expect)."""
    return cfg.data.norm or get_backbone_spec(cfg.model.backbone).norm


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["data"]["resize"] = list(d["data"]["resize"])
    d["data"]["crop_scales"] = list(d["data"]["crop_scales"])
    return d


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------------------------- resume
#: Settings a resumed run may change: they do not alter what the remaining epochs compute from the run's
#: state (train.out: the run folder may have been moved).
RESUME_CHANGEABLE = ("train.epochs", "train.early_stopping", "train.device", "train.dist_timeout_s",
                     "data.num_workers", "train.out")
#: Settings only a run's start uses (its weights then come from last.pt): the run's own values are kept.
RESUME_IGNORED = ("train.pretrained", "train.pretrained_source")


def _flat(cfg: RunConfig) -> dict[str, Any]:
    return {f"{section}.{k}": v for section, values in config_to_dict(cfg).items() for k, v in values.items()}


def resume_config(saved: RunConfig, requested: RunConfig) -> tuple[RunConfig, list[str]]:
    """The config a resumed run continues with: the run's own (`saved`, from its last.pt) with the changes
    `requested` makes to `RESUME_CHANGEABLE` settings.

    Returns (config, what was applied or kept, in words). Raises `ConfigError` listing the requested changes a
    resumed run cannot honour (model, data, optimisation: they would make it another run).
    """
    have, want = _flat(saved), _flat(resolve(requested, num_classes=saved.model.num_classes))
    changed = [k for k in have if have[k] != want[k] and k not in RESUME_IGNORED]
    kept = [f"keeping the run's {k} {have[k]!r} (weights come from last.pt)" for k in RESUME_IGNORED
            if have[k] != want[k]]
    refused = [k for k in changed if k not in RESUME_CHANGEABLE]
    if refused:
        shown = ", ".join(f"{k} {have[k]!r} -> {want[k]!r}" for k in refused[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        raise ConfigError(f"--resume cannot change {shown}{more}: a resumed run keeps its model, data and "
                          "optimisation settings; resume without a config file (the run's own is used) or start a "
                          f"new run in another folder. Changeable on resume: {', '.join(RESUME_CHANGEABLE)}")
    raw = config_to_dict(saved)
    for key in changed:
        section, name = key.split(".")
        raw[section][name] = want[key]
    applied = [f"applying {k} {have[k]!r} -> {want[k]!r}" for k in changed]
    return config_from_dict(raw, where="resumed config"), applied + kept
def preprocessing_of(cfg: RunConfig) -> Preprocessing:
    """The preprocessing record of a run, built once here (see `actionbert.preprocessing`); raises ConfigError
    for a combination that cannot describe model input (e.g. a resize smaller than the crop)."""
    d, m = cfg.data, cfg.model
    try:
        return Preprocessing(resize=Resize.parse(d.resize, keep_aspect=d.keep_aspect), crop_size=m.input_size,
                             norm=norm_of(cfg), clip_len=m.clip_len,
                             frame_stride=d.frame_stride, hflip=d.hflip, crop_scales=tuple(d.crop_scales))
    except ValueError as e:
        raise ConfigError(f"data/model config: {e}") from None
