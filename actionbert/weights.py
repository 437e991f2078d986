"""Pretrained weights in the formats users bring, loaded with a report of what went where.

The method's numbers depend on pretraining (IG-65M / Kinetics backbones), and some users hold checkpoints of the
reference implementation (Kalfaoglu et al., ECCV-W 2020, github artest08/LateTemporalModeling3DCNN). Every
format is mapped onto our state-dict layout by one pure key-renaming function, `filter_<source>(state_dict,
model) -> state_dict`, listed in the `FILTERS` dict; architectures never know about any of this.

```
file (.pt / .pth / .pth.tar / .safetensors / model folder)
  -> read_weights: tensors only (torch.load(weights_only=True): pickled code is refused)
  -> FILTERS[source]: rename keys to ours (strip `module.`; unknown keys keep their names)
  -> plan_load: what loads, what is skipped and why, shape mismatches
  -> model.load_state_dict(strict=False) -> LoadReport(loaded, skipped + reasons, missing)
```

Sources (METHOD.md §9):
- `torchvision`: r2plus1d_18 / r3d_18 / mc3_18 Kinetics-400 state dicts (`stem.*`, `layerK.*`, `fc.*`).
- `ig65m`: r2plus1d_34 release files of ig65m-pytorch, same key names as torchvision (fc of 487, 359 or 400).
- `hara`: ResNeXt-101 Kinetics checkpoints, `{"state_dict": {"module.conv1...", "module.bn1...",
  "module.layerK...", "module.fc..."}, ...}` (PyTorch 0.3 era: no `num_batches_tracked` counters).
- `reference`: `model_best.pth.tar` of the reference code, `{"epoch", "arch", "state_dict", "best_prec1",
  "best_loss", "optimizer"}`; R(2+1)D-34 (`features.0` = stem, `features.1..4` = layer1..4) and ResNeXt-101
  (`features.0/1` = conv1/bn1, `features.4..7` = layer1..4, FRAB under `mapper.*`, FRMB as `features.7.2`)
  with BERT (`bert.*`) or TGAP, classifier `fc_action.*`; keys may carry `module.` (DataParallel).
- `actionbert`: our own model folder, `.safetensors` file, training checkpoint (`model_state`) or state dict.

Known public files are also loaded by name (`load_weights(model, "kinetics400_r2plus1d_18")`): the registry
(`actionbert.weights_registry`) gives their format, `actionbert.hub` downloads and verifies them. Writing a model
folder from any of these is `actionbert.convert.convert_weights`.

The first three are backbone-only: the backbone loads, everything else (reduction block, head, classifier) keeps
its initialisation, and the pretraining classifier is reported as skipped. With FRMB, the checkpoint's last
layer-4 block is skipped too (the FRMB block replaces it). For whole-model sources a classifier with another
class count is skipped (fine-tuning on a new dataset); any other shape mismatch is an error naming the key and
both shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from actionbert.checkpoint import CheckpointError, load_checkpoint, load_safetensors, read_folder_info
from actionbert.hub import lookup, resolve
from actionbert.models import VideoClassifier, get_backbone_spec
from actionbert.weights_registry import WeightsEntry

StateDict = dict[str, torch.Tensor]
Rule = tuple[str, str]  # (regex matched at the start of a key, replacement)


class WeightsError(CheckpointError):
    """Pretrained weights that do not fit the model (wrong source, wrong architecture, shape mismatch)."""


# ------------------------------------------------------------------------------------------ reading files
def read_weights(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[StateDict, dict[str, Any]]:
    """Read the tensors of a weights file and its plain metadata, never executing pickled code.

    Args:
        path: a `.safetensors` file, an `actionbert` model folder, or a `torch.save` file holding a state dict,
            a `{"state_dict": ...}` checkpoint (reference code, Hara) or one of our training checkpoints
            (`{"model_state": ...}`).
        map_location: device the tensors are read to.

    Returns:
        (state dict with the file's own key names, metadata: the other top-level entries of the checkpoint
        except optimizer state, e.g. `arch` and `epoch` of a reference checkpoint, or our `inference` info).
    """
    path = Path(path)
    if path.is_dir():
        info, weights = read_folder_info(path, required=False)
        return load_safetensors(weights, map_location=map_location), ({} if info is None else {"inference": info})
    if path.suffix == ".safetensors":
        return load_safetensors(path, map_location=map_location), {}
    obj = load_checkpoint(path, map_location=map_location)
    return _unwrap(obj, where=str(path))


def _unwrap(obj: Any, *, where: str) -> tuple[StateDict, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: expected a dict of tensors or a checkpoint dict, got {type(obj).__name__}")
    meta: dict[str, Any] = {}
    state = obj
    for key in ("state_dict", "model_state"):
        if isinstance(obj.get(key), dict):
            state = obj[key]
            meta = {k: v for k, v in obj.items() if k not in (key, "optimizer")}
            break
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{where}: not a state dict: entries {bad[:5]} are not tensors (top-level keys: {list(obj)[:10]}); "
            "expected a state dict or a checkpoint with 'state_dict' or 'model_state'"
        )
    return dict(state), meta


# ----------------------------------------------------------------------------------------- key surgery
def strip_prefixes(state: StateDict, prefixes: tuple[str, ...] = ("module.", "_orig_mod.")) -> StateDict:
    """Drop wrapper prefixes: `module.` (DataParallel / DDP) and `_orig_mod.` (torch.compile), repeatedly."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def rename_keys(state: StateDict, rules: list[Rule]) -> StateDict:
    """Apply the first rule whose regex matches at the start of each key; keys no rule matches stay as they are
    (they then show up as skipped in the report instead of disappearing)."""
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out = {}
    for key, value in state.items():
        for pattern, repl in compiled:
            if pattern.match(key):
                key = pattern.sub(repl, key, count=1)
                break
        if key in out:
            raise WeightsError(f"two checkpoint keys map onto {key!r}")
        out[key] = value
    return out


# torchvision / IG-65M: VideoResNet names, identical to our backbone minus the `backbone.` prefix.
VIDEORESNET_RULES: list[Rule] = [(r"(stem|layer[1-4])\.", r"backbone.\1.")]

# Hara's ResNeXt: conv1/bn1 form our stem (stem.2 is the ReLU, stem.3 the max-pool), the layers keep their names.
HARA_RULES: list[Rule] = [
    (r"conv1\.", "backbone.stem.0."),
    (r"bn1\.", "backbone.stem.1."),
    (r"(layer[1-4])\.", r"backbone.\1."),
]

# The reference's BERT5 (one or more transformer blocks) onto our BertHead.
_BLOCK = r"bert\.transformer_blocks\.(\d+)\."
REFERENCE_BERT_RULES: list[Rule] = [
    (r"bert\.clsToken$", "head.cls_token"),
    (r"bert\.embedding\.learnedPosition\.pe$", "head.pos_embed"),
    (_BLOCK + r"attention\.linear_layers\.0\.", r"head.blocks.\1.attn.q."),
    (_BLOCK + r"attention\.linear_layers\.1\.", r"head.blocks.\1.attn.k."),
    (_BLOCK + r"attention\.linear_layers\.2\.", r"head.blocks.\1.attn.v."),
    (_BLOCK + r"attention\.output_linear\.", r"head.blocks.\1.attn.proj."),
    (_BLOCK + r"feed_forward\.w_1\.", r"head.blocks.\1.mlp.fc1."),
    (_BLOCK + r"feed_forward\.w_2\.", r"head.blocks.\1.mlp.fc2."),
    (_BLOCK + r"input_sublayer\.norm\.a_2$", r"head.blocks.\1.norm1.weight"),
    (_BLOCK + r"input_sublayer\.norm\.b_2$", r"head.blocks.\1.norm1.bias"),
    (_BLOCK + r"output_sublayer\.norm\.a_2$", r"head.blocks.\1.norm2.weight"),
    (_BLOCK + r"output_sublayer\.norm\.b_2$", r"head.blocks.\1.norm2.bias"),
    (r"fc_action\.", "fc."),
]
# R(2+1)D-34: `features` = the VideoResNet's children minus avgpool and fc, i.e. stem, layer1..4.
REFERENCE_R2PLUS1D_RULES: list[Rule] = [
    (r"features\.0\.", "backbone.stem."),
    (r"features\.([1-4])\.", r"backbone.layer\1."),
]
# ResNeXt-101: `features` = conv1, bn1, relu, maxpool, layer1..4 (+ avgpool for TGAP); FRAB block = `mapper`.
# FRMB sits inside `features.7` as its last block, so it needs no rule of its own.
REFERENCE_RESNEXT_RULES: list[Rule] = [
    (r"features\.0\.", "backbone.stem.0."),
    (r"features\.1\.", "backbone.stem.1."),
    (r"features\.4\.", "backbone.layer1."),
    (r"features\.5\.", "backbone.layer2."),
    (r"features\.6\.", "backbone.layer3."),
    (r"features\.7\.", "backbone.layer4."),
    (r"mapper\.", "reduction."),
]


def reference_family(state: StateDict) -> str | None:
    """"resnext" or "r2plus1d" from the key layout of a (prefix-stripped) reference state dict, else None."""
    if "features.0.weight" in state:  # Hara's conv1 is a direct child of `features`
        return "resnext"
    if "features.0.0.weight" in state:  # the R(2+1)D stem is a Sequential
        return "r2plus1d"
    return None


def filter_torchvision(state_dict: StateDict, model: VideoClassifier) -> StateDict:
    """torchvision VideoResNet (r2plus1d_18, r3d_18, mc3_18): `stem/layerK.*` -> `backbone.*`; `fc.*` stays.
    Also the IG-65M r2plus1d_34 release files: the same key names (their wider mid convs only change shapes)."""
    return rename_keys(strip_prefixes(state_dict), VIDEORESNET_RULES)


def filter_hara(state_dict: StateDict, model: VideoClassifier) -> StateDict:
    """Hara ResNeXt: `module.conv1/bn1` -> `backbone.stem.0/1`, `module.layerK` -> `backbone.layerK`."""
    return rename_keys(strip_prefixes(state_dict), HARA_RULES)


def filter_reference(state_dict: StateDict, model: VideoClassifier) -> StateDict:
    """Reference-code checkpoints (R(2+1)D-34 or ResNeXt-101; BERT or TGAP; FRAB/FRMB), whole model.

    The backbone layout is recognised from the keys themselves, so a checkpoint of one family loaded into a model
    of the other fails on names and shapes instead of being silently reinterpreted.
    """
    state = strip_prefixes(state_dict)
    family = reference_family(state)
    backbone_rules = {"resnext": REFERENCE_RESNEXT_RULES, "r2plus1d": REFERENCE_R2PLUS1D_RULES}.get(family, [])
    return rename_keys(state, backbone_rules + REFERENCE_BERT_RULES)


def filter_actionbert(state_dict: StateDict, model: VideoClassifier) -> StateDict:
    """Our own layout; only wrapper prefixes (DDP, torch.compile) are removed."""
    return strip_prefixes(state_dict)


FILTERS: dict[str, Callable[[StateDict, VideoClassifier], StateDict]] = {
    "torchvision": filter_torchvision,
    "ig65m": filter_torchvision,
    "hara": filter_hara,
    "reference": filter_reference,
    "actionbert": filter_actionbert,
}
# Sources that hold a backbone pretrained on another task: only `backbone.*` is taken from them.
BACKBONE_ONLY = frozenset({"torchvision", "ig65m", "hara"})


# ---------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LoadReport:
    """What `load_weights` did.

    Args:
        where: the file read.
        source: its format.
        loaded: model keys that received a tensor from the file.
        skipped: keys of the file (after renaming to our names) that were not loaded; `reasons` says why.
        missing: model keys the file did not provide; they keep their initialisation.
        reasons: skipped key -> reason.
    """

    where: str
    source: str
    loaded: list[str]
    skipped: list[str]
    missing: list[str]
    reasons: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for people: counts, every skipped key with its reason, missing keys grouped by module."""
        lines = [f"{self.where} ({self.source}): loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}, "
                 f"missing {len(self.missing)}"]
        for reason, keys in _group_by(self.skipped, lambda k: self.reasons.get(k, "")).items():
            lines.append(f"  skipped {_describe(keys)}: {reason}")
        counters = [k for k in self.missing if k.endswith("num_batches_tracked")]
        others = [k for k in self.missing if not k.endswith("num_batches_tracked")]
        for prefix, keys in _group_by(others, _module_of).items():
            lines.append(f"  missing {prefix}.* ({len(keys)} tensors): left at initialisation")
        if counters:
            lines.append(f"  missing {len(counters)} BatchNorm num_batches_tracked counters (not in this file; "
                         "unused with a fixed momentum)")
        return "\n".join(lines)


def _group_by(keys: list[str], fn: Callable[[str], str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(fn(k), []).append(k)
    return groups


def _module_of(key: str) -> str:
    """Report granularity: `fc`, `head`, `reduction`, or `backbone.layerK.i` (a block)."""
    parts = key.split(".")
    return ".".join(parts[:3]) if parts[0] == "backbone" and len(parts) > 3 else parts[0]


def _describe(keys: list[str]) -> str:
    return ", ".join(keys) if len(keys) <= 4 else f"{', '.join(keys[:3])}, ... ({len(keys)} tensors)"


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _frmb_replaced_block(model: VideoClassifier, state: StateDict) -> str | None:
    """Key prefix of the layer-4 block FRMB replaced, if `state` holds the plain pretrained block there."""
    if model.config.reduction != "frmb":
        return None
    block = f"backbone.layer4.{len(model.backbone.layer4) - 1}."
    # a checkpoint holding an FRMB block itself (reference FRMB models, our own) has its projection shortcut
    return None if f"{block}downsample.0.weight" in state else block


def plan_load(state: StateDict, model: VideoClassifier, *, backbone_only: bool
              ) -> tuple[StateDict, dict[str, str], list[str]]:
    """Decide, for a state dict already in our key names, what loads into `model` (pure: nothing is loaded).

    Args:
        state: renamed checkpoint tensors (output of a filter).
        model: the model to load into (may live on the meta device).
        backbone_only: take only `backbone.*` keys (pretrained backbones from other tasks).

    Returns:
        (tensors to load, skipped key -> reason, shape mismatches as "key: file (..) vs model (..)").
    """
    own = model.state_dict()
    frmb_block = _frmb_replaced_block(model, state)
    to_load: StateDict = {}
    skipped: dict[str, str] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        if backbone_only and key.split(".")[0] in ("fc", "head", "reduction"):
            skipped[key] = ("not part of the backbone (the pretraining task's classifier or head); "
                            "this model's stays at its initialisation")
        elif backbone_only and not key.startswith("backbone."):
            skipped[key] = "no such key in this model's backbone"
        elif frmb_block and key.startswith(frmb_block):
            skipped[key] = ("a plain bottleneck that FRMB replaces; the FRMB block stays at its initialisation")
        elif key not in own:
            skipped[key] = "no such key in this model"
        elif _shape(value) != _shape(own[key]):
            if key.startswith("fc.") and value.dim() >= 1 and _shape(value)[1:] == _shape(own[key])[1:]:
                skipped[key] = (f"classifier for {value.shape[0]} classes, this model has {own[key].shape[0]}; "
                                "the new classifier stays at its initialisation")
            else:
                mismatched.append(f"{key}: file {_shape(value)} vs model {_shape(own[key])}")
        else:
            to_load[key] = value
    return to_load, skipped, mismatched


def load_state(model: VideoClassifier, state_dict: StateDict, *, source: str, where: str = "<state dict>",
               keep_classifier: bool = False) -> LoadReport:
    """Load an in-memory state dict of format `source` into `model` (see `load_weights`).

    `keep_classifier`: the file is a whole classifier of a backbone-only format (a Kinetics-400 model whose
    `fc` is the TGAP head's classifier): its `fc.*` loads too, and it is an error if it does not.
    """
    if source not in FILTERS:
        raise ValueError(f"unknown weights source {source!r}; choose one of {', '.join(FILTERS)}")
    state = FILTERS[source](state_dict, model)
    backbone_only = source in BACKBONE_ONLY and not keep_classifier
    to_load, skipped, mismatched = plan_load(state, model, backbone_only=backbone_only)
    if mismatched:
        more = f" (and {len(mismatched) - 8} more)" if len(mismatched) > 8 else ""
        raise WeightsError(f"{where} ({source}): shapes do not fit the model ({model.config.backbone}, "
                           f"{model.config.head}, reduction {model.config.reduction}): "
                           + "; ".join(mismatched[:8]) + more)
    if not to_load:
        raise WeightsError(
            f"{where}: nothing in this file fits the model as source {source!r} (first keys: "
            f"{list(state_dict)[:4]}); is --pretrained-source right? Sources: {', '.join(FILTERS)}"
        )
    if source in BACKBONE_ONLY:  # a pretrained backbone must cover the whole backbone, or it is the wrong file
        replaced = _frmb_replaced_block(model, state)
        gaps = [k for k in model.state_dict() if k.startswith("backbone.") and k not in to_load
                and not k.endswith("num_batches_tracked") and not (replaced and k.startswith(replaced))]
        if gaps:
            raise WeightsError(f"{where} ({source}): the file does not cover this model's backbone "
                               f"({model.config.backbone}): no tensor for {_describe(gaps)}; wrong source or "
                               "backbone?")
    if keep_classifier and not {"fc.weight", "fc.bias"} <= set(to_load):
        raise WeightsError(f"{where} ({source}): its classifier does not fit this model's: "
                           f"{skipped.get('fc.weight', 'the file has no fc.weight / fc.bias')}")
    result = model.load_state_dict(to_load, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # plan_load only passes model keys
    # missing is computed here, not taken from load_state_dict: BatchNorm quietly fills in absent
    # num_batches_tracked counters (Hara's files have none), which would hide them from `result.missing_keys`
    own = list(model.state_dict())
    return LoadReport(where=where, source=source, loaded=[k for k in own if k in to_load], skipped=list(skipped),
                      missing=[k for k in own if k not in to_load], reasons=skipped)


def load_weights(model: VideoClassifier, path: str | Path, *, source: str | None = None, progress: bool = False
                 ) -> LoadReport:
    """Load pretrained weights into `model`, in place, from a file or a known public file by name.

    Args:
        model: the model, already built with the architecture and class count to train or run.
        path: a weights file or `actionbert` model folder (see `read_weights`; read without executing code), or a
            name of `actionbert.weights_registry.REGISTRY` (e.g. "kinetics400_r2plus1d_18"): downloaded once into
            the torch hub cache and verified (`actionbert.hub.fetch`). An existing path wins over a name.
        source: format of the file: "torchvision", "ig65m", "hara" (backbone only), "reference" or "actionbert"
            (whole model). None: the registry's format for a name, "actionbert" for a path.
        progress: draw a download progress bar on stderr.

    Returns:
        Which keys were loaded, skipped (with the reason) and missing. Raises `WeightsError` naming the key and
        both shapes when a tensor does not fit, and when nothing fits at all; `actionbert.hub.PretrainedError`
        when a named file cannot be fetched or verified.
    """
    if source is not None and source not in FILTERS:
        raise ValueError(f"unknown weights source {source!r}; choose one of {', '.join(FILTERS)}")
    entry = named_entry(path, backbone=model.config.backbone, source=source)
    source = entry.source if entry is not None else source
    file, _ = resolve(path, progress=progress)
    state, _ = read_weights(file)
    return load_state(model, state, source=source or "actionbert", where=str(file))


def named_entry(spec: str | Path, *, backbone: str, source: str | None = None) -> WeightsEntry | None:
    """The registry entry `spec` names (None for a path), checked against the model before anything downloads."""
    entry = lookup(spec)
    if entry is None:
        return None
    if source not in (None, entry.source):
        raise WeightsError(f"{entry.name} is a {entry.source!r} file, not {source!r}; leave the source out")
    if entry.backbone != backbone:
        raise WeightsError(f"{entry.name} holds a {entry.backbone} backbone, this model is {backbone}: set "
                           f"model.backbone={entry.backbone} (or pick weights for {backbone}: `actionbert models "
                           "--weights`)")
    return entry


# ------------------------------------------------------------------------------- reference architectures
# `arch` strings of the reference code that this library can rebuild (RGB only; the flow models take 2-channel
# input and the LSTM / NLB / concatenation heads are not part of the method).
REFERENCE_ARCHS: dict[str, dict[str, Any]] = {
    "rgb_r2plus1d_32f_34": dict(backbone="r2plus1d_34", head="tgap", clip_len=32),
    "rgb_r2plus1d_32f_34_bert10": dict(backbone="r2plus1d_34", head="bert", clip_len=32),
    "rgb_r2plus1d_64f_34_bert10": dict(backbone="r2plus1d_34", head="bert", clip_len=64),
    "rgb_resneXt3D64f101": dict(backbone="resnext101_3d", head="tgap", clip_len=64),
    "rgb_resneXt3D64f101_adamw": dict(backbone="resnext101_3d", head="tgap", clip_len=64),
    "rgb_resneXt3D64f101_FRMB_adamw": dict(backbone="resnext101_3d", head="tgap", clip_len=64, reduction="frmb"),
    "rgb_resneXt3D64f101_bert10_FRAB": dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frab"),
    "rgb_resneXt3D64f101_bert10_FRMB": dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frmb"),
}


def infer_reference_architecture(state_dict: StateDict, *, arch: str | None = None, backbone: str | None = None
                                 ) -> dict[str, Any]:
    """`build_model` keywords for a reference checkpoint, from its `arch` string and its keys.

    The keys decide the head (`bert.*` -> BERT), the reduction block (`mapper.*` -> FRAB; a last layer-4 block
    with a projection shortcut -> FRMB), the class count (`fc_action`) and, for BERT, the clip length (from the
    positional table: T' + 1 rows). `arch` decides the backbone and the TGAP clip length; without it the
    full-size backbone of the key layout is assumed. `backbone` overrides (e.g. a tiny test variant).
    """
    state = strip_prefixes(state_dict)
    if arch is not None and arch.startswith("flow_"):
        raise WeightsError(f"reference arch {arch!r} is an optical-flow model (2-channel input); only RGB is supported")
    family = reference_family(state)
    if family is None:
        raise WeightsError("not a reference checkpoint of a supported model: no `features.0` stem "
                           f"(first keys: {list(state)[:4]})")
    known = dict(REFERENCE_ARCHS.get(arch or "", {}))
    if arch is not None and not known:
        known_names = ", ".join(REFERENCE_ARCHS)
        if backbone is None:
            raise WeightsError(f"unsupported reference arch {arch!r}; supported: {known_names} "
                               "(or give the backbone explicitly)")
    if "fc_action.weight" not in state:
        raise WeightsError("reference checkpoint without `fc_action.weight` (the classifier)")
    backbone = backbone or known.get("backbone") or {"resnext": "resnext101_3d", "r2plus1d": "r2plus1d_34"}[family]
    spec = get_backbone_spec(backbone)
    if (spec.family == "resnext") != (family == "resnext"):
        raise WeightsError(f"backbone {backbone!r} does not match the checkpoint's {family} key layout")
    head = "bert" if any(k.startswith("bert.") for k in state) else "tgap"
    reduction = None
    if any(k.startswith("mapper.") for k in state):
        reduction = "frab"
    elif family == "resnext":
        last = max(int(k.split(".")[2]) for k in state if k.startswith("features.7."))
        if f"features.7.{last}.downsample.0.weight" in state:
            reduction = "frmb"
    for name, found in (("head", head), ("reduction", reduction)):
        if known and known.get(name) != found:
            raise WeightsError(f"reference arch {arch!r} means {name} {known.get(name)!r}, but the checkpoint's keys "
                               f"hold {found!r}")
    if head == "bert":
        tokens = state["bert.embedding.learnedPosition.pe"].shape[1] - 1
        clip_len = tokens * 2 ** spec.time_halvings
    else:
        clip_len = known.get("clip_len", spec.clip_len)
    return dict(backbone=backbone, head=head, reduction=reduction, clip_len=clip_len,
                num_classes=int(state["fc_action.weight"].shape[0]))
