"""Model folders (`model.safetensors` + `config.json`) from pretrained weights of any supported format.

```
file + source, or a registry name (`actionbert.weights_registry`: fetched and verified by `actionbert.hub`)
  -> architecture: given arguments, else what the file says (reference `arch` + keys, our stored config),
     else the registry entry's (backbone, clip length, TGAP head)
  -> build_model -> load_state (a registry file with known class names keeps its classifier)
  -> save_pretrained(folder, class names, normalisation of the backbone)
```

A whole Kinetics-400 model (torchvision's `kinetics400_r2plus1d_18`, ...) becomes a TGAP model whose `fc` is the
file's classifier and whose class names are torchvision's Kinetics-400 list: `actionbert predict` labels videos
with it, no training needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actionbert.checkpoint import inference_config, save_pretrained
from actionbert.hub import lookup, resolve
from actionbert.models import ModelConfig, build_model, get_backbone_spec
from actionbert.preprocessing import Preprocessing
from actionbert.weights import (BACKBONE_ONLY, FILTERS, LoadReport, StateDict, infer_reference_architecture,
                                load_state, read_weights)
from actionbert.weights_registry import WeightsEntry, class_names


def convert_weights(path: str | Path, out: str | Path, *, source: str | None = None, backbone: str | None = None,
                    head: str | None = None, reduction: str | None = None, clip_len: int | None = None,
                    num_classes: int | None = None, classes: list[str] | None = None,
                    input_size: int | None = None, progress: bool = False) -> tuple[Path, LoadReport]:
    """Write an `actionbert` model folder from weights of any source.

    The architecture comes from the arguments; what is not given is inferred where the file allows it:
    `reference` checkpoints (see `infer_reference_architecture`), our training checkpoints and model folders
    (their stored config), registry names (their backbone and clip length, a TGAP head). Backbone-only sources
    otherwise need `backbone`, `head` and a class count (`num_classes` or `classes`); their head and classifier are
    freshly initialised in the written folder, except for a registry file with known class names converted to a
    TGAP model with no other class count asked for: its classifier is kept, with its class names.

    Args:
        path: the weights file or folder, or a registry name (downloaded into the torch hub cache if needed).
        out: the folder to write (`model.safetensors` + `config.json`).
        source: format of `path` (a key of `FILTERS`); needed for a file, implied by a name.
        backbone, head, reduction, clip_len, num_classes, input_size: architecture (see `ModelConfig`).
        classes: class names; default: the file's own when known, else "class_0", "class_1", ...
        progress: draw a download progress bar on stderr.

    Returns:
        (the folder, the load report).
    """
    entry = lookup(path)
    given = dict(backbone=backbone, head=head, reduction=reduction, clip_len=clip_len, num_classes=num_classes,
                 input_size=input_size)
    keep_classifier = False
    if entry is not None:
        source, keep_classifier, classes = _registry_defaults(entry, source, given, classes)
    elif source is None:
        raise ValueError(f"{path}: give the format of this file (source: {', '.join(FILTERS)})")
    if source not in FILTERS:
        raise ValueError(f"unknown weights source {source!r}; choose one of {', '.join(FILTERS)}")
    file, _ = resolve(path, progress=progress)  # after the checks above: nothing is downloaded for a bad call
    state, meta = read_weights(file)
    arch, classes, stored = _architecture(state, meta, source=source, given=given, classes=classes, where=str(path))
    spec = get_backbone_spec(arch["backbone"])
    arch.setdefault("clip_len", spec.clip_len)
    model = build_model(**arch)
    report = load_state(model, state, source=source, where=str(file), keep_classifier=keep_classifier)
    names = classes or [f"class_{i}" for i in range(model.num_classes)]
    info = inference_config(model, classes=names, preprocessing=_record(stored, model, spec.norm))
    return save_pretrained(model.eval(), out, info=info), report


def _record(stored, model, norm: str) -> Preprocessing:
    """The preprocessing record of a converted model: the stored one (or an old file's loose fields), else the
    default record with the backbone's normalisation; clip length and crop are always the model's."""
    loose: dict[str, Any] = {}
    if isinstance(stored, dict):
        loose = dict(stored.get("preprocessing") or {k: stored[k] for k in ("frame_stride", "resize", "keep_aspect",
                                                                            "norm", "hflip") if k in stored})
    loose.setdefault("norm", norm)
    loose.update(clip_len=model.config.clip_len, crop_size=model.config.input_size)
    return Preprocessing.from_dict(loose)


def _registry_defaults(entry: WeightsEntry, source: str | None, given: dict[str, Any],
                       classes: list[str] | None) -> tuple[str, bool, list[str] | None]:
    """Fill `given` (in place) with a registry file's architecture; returns (source, keep classifier, classes)."""
    if source not in (None, entry.source):
        raise ValueError(f"{entry.name} is a {entry.source!r} file, not {source!r}; leave the source out")
    if given["backbone"] not in (None, entry.backbone):
        raise ValueError(f"{entry.name} holds a {entry.backbone} backbone, not {given['backbone']}")
    given["backbone"] = entry.backbone
    if entry.source in BACKBONE_ONLY:
        given["head"] = given["head"] or "tgap"
        given["clip_len"] = given["clip_len"] or entry.clip_len
    names = class_names(entry)
    keep = (entry.source in BACKBONE_ONLY and names is not None and classes is None and given["num_classes"] is None
            and given["head"] == "tgap" and given["reduction"] is None)
    return entry.source, keep, names if keep else classes


def _architecture(state: StateDict, meta: dict[str, Any], *, source: str, given: dict[str, Any],
                  classes: list[str] | None, where: str) -> tuple[dict[str, Any], list[str] | None, Any]:
    """`build_model` keywords from the arguments and what the file tells; (arch, class names, stored config)."""
    arch: dict[str, Any] = {}
    stored = meta.get("inference") if source == "actionbert" else None
    if isinstance(stored, dict) and isinstance(stored.get("model"), dict):
        arch = {k: v for k, v in stored["model"].items() if k in ModelConfig.__dataclass_fields__}
    elif source == "reference":
        arch = infer_reference_architecture(state, arch=meta.get("arch"), backbone=given["backbone"])
    arch.update({k: v for k, v in given.items() if v is not None})
    if classes is not None:
        if arch.get("num_classes") not in (None, len(classes)):
            raise ValueError(f"{len(classes)} class names but num_classes={arch['num_classes']}")
        arch["num_classes"] = len(classes)
    elif isinstance(stored, dict) and stored.get("classes"):
        classes = list(stored["classes"])
    lacking = [k for k in ("backbone", "head", "num_classes") if arch.get(k) is None]
    if lacking:
        raise ValueError(f"{where}: cannot tell the model's {', '.join(lacking)} from a {source!r} file; "
                         "give them explicitly (--backbone, --head, --num-classes or --classes)")
    return arch, classes, stored
