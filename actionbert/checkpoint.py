"""Checkpoints and the exported model folder, written atomically and loaded without executing pickled code.

Two formats:
- Training checkpoint (`last.pt`, `best.pt`): one `torch.save` dict holding only tensors and plain Python values
  (model, optimizer, scheduler and scaler state, epoch, RNG states, the resolved run config, class names), so it
  loads with `torch.load(weights_only=True)`; anything else in the file is refused.
- Model folder (`actionbert` format): `model.safetensors` + `config.json` (architecture, class names and the
  preprocessing record, `actionbert.preprocessing`). `from_pretrained(folder)` rebuilds the model from it alone.

Both hold the same inference dict (`inference_config`): {"format_version", "model", "classes", "clip_len",
"input_size", "preprocessing"}. Files written before the record (format 1) kept its facts as loose keys; they
load unchanged (`Preprocessing.from_info` reads either form).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from actionbert import runtime
from actionbert.errors import DataError
from actionbert.fileio import atomic_write, atomic_write_text, to_json
from actionbert.models import ModelConfig, VideoClassifier
from actionbert.preprocessing import MAX_SIDE, Preprocessing, PreprocessingError, Resize

FORMAT_VERSION = 2


class CheckpointError(DataError, RuntimeError):
    """A checkpoint or model folder that cannot be read safely or does not fit."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint atomically. `state` must hold only tensors and plain Python values."""
    return atomic_write(path, lambda tmp: torch.save({"format_version": FORMAT_VERSION, **state}, tmp))


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; refuse files that would run code or hold arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickling_detail(e)
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"{path}: refused to load: unpickling it would import and call Python code ({detail}). A "
                "checkpoint from an untrusted source can run arbitrary code this way; only tensors and plain "
                "values are accepted (nothing from this file was executed)."
            ) from None
        raise CheckpointError(f"{path}: refused to load: not a checkpoint of plain tensors/values ({detail})") from None
    except Exception as e:  # noqa: BLE001 - arbitrary bytes fail anywhere in torch's reader (struct.error, ...)
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first or type(e).__name__})") from None


def load_on_main(path: str | Path, info: runtime.DistInfo, *, missing: str) -> dict[str, Any]:
    """`load_checkpoint` on rank 0, broadcast to every process (collective), so the other processes, maybe on
    machines without the file, never read it. A missing file is FileNotFoundError("<path>: <missing>"); an error
    on rank 0 is raised on every process."""
    path = Path(path)
    ckpt = error = None
    if info.is_main:
        try:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: {missing}")
            ckpt = load_checkpoint(path)
        except (FileNotFoundError, CheckpointError) as e:
            error = e
    ckpt, message = runtime.broadcast_object((ckpt, str(error) if error else None), info)
    if error is not None:
        raise error
    if message is not None:
        raise CheckpointError(f"rank 0 could not load it: {message}")
    return ckpt


def _unpickling_detail(error: Exception) -> str:
    """The informative line of torch's weights-only error (its first line is a generic preamble)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line
    return lines[0] if lines else type(error).__name__


# --------------------------------------------------------------------------------------- model folders
def inference_config(model: VideoClassifier, *, classes: list[str], preprocessing: Preprocessing | None = None,
                     **fields) -> dict[str, Any]:
    """Everything inference needs besides the weights (stored in config.json and in training checkpoints):
    the model config, class names and the preprocessing record (its clip length and crop must be the model's).

    Without `preprocessing`, the record is built here from the model's clip length and crop and `fields`
    (other `Preprocessing` fields; `resize` may be a (height, width) pair, with `keep_aspect`).
    """
    if preprocessing is None:
        resize = Resize.parse(fields.pop("resize", Preprocessing().resize), fields.pop("keep_aspect", False))
        preprocessing = Preprocessing(resize=resize, clip_len=model.config.clip_len,
                                      crop_size=model.config.input_size, **fields)
    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {model.num_classes} outputs")
    if (preprocessing.clip_len, preprocessing.crop_size) != (model.config.clip_len, model.config.input_size):
        raise ValueError(f"preprocessing for {preprocessing.clip_len}-frame clips of {preprocessing.crop_size} px "
                         f"but the model takes {model.config.clip_len} frames of {model.config.input_size} px")
    return {
        "format_version": FORMAT_VERSION,
        "model": asdict(model.config),
        "classes": list(classes),
        "clip_len": model.config.clip_len,
        "input_size": model.config.input_size,
        "preprocessing": preprocessing.to_dict(),
    }


def preprocessing_of(info: dict[str, Any], *, where: str) -> Preprocessing:
    """The record of an inference dict (also of one written before the record existed); CheckpointError
    naming `where` when it cannot describe model input."""
    try:
        return Preprocessing.from_info(info)
    except PreprocessingError as e:
        raise CheckpointError(f"{where}: {e}") from None


def save_pretrained(model: VideoClassifier, folder: str | Path, *, info: dict[str, Any]) -> Path:
    """Write `folder/model.safetensors` and `folder/config.json` (see `inference_config` for `info`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "actionbert"}))
    atomic_write_text(folder / "config.json", to_json(info))
    return folder


def read_model_config(info: dict[str, Any], *, where: str) -> ModelConfig:
    try:
        return ModelConfig(**info["model"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: model config missing or malformed ({e})") from None


def read_folder_info(folder: str | Path, *, required: bool = True) -> tuple[dict[str, Any] | None, Path]:
    """(the inference info in a model folder's config.json, None when there is none and it is not `required`;
    the path of its model.safetensors), with errors that name the missing or broken file."""
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, weights) if required else (weights,):
        if not p.is_file():
            raise CheckpointError(f"{folder}: not an actionbert model folder ({p.name} is missing)")
    if not cfg_path.is_file():
        return None, weights
    try:
        return json.loads(cfg_path.read_text()), weights
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None


def from_pretrained(folder: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[VideoClassifier, dict]:
    """Rebuild a model from an `actionbert` folder; returns (model in eval mode, inference info)."""
    info, weights = read_folder_info(folder)
    cfg_path = Path(folder) / "config.json"
    model = build_checked(info, where=str(cfg_path))
    state = load_safetensors(weights, map_location=map_location)
    validate_model_files(model, state, info, weights=str(weights), config=str(cfg_path))
    load_exact(model, state, where=str(weights))
    return model.eval(), info


def load_safetensors(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a `.safetensors` file (a format that cannot hold code) with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return load_file(path, device=str(map_location))
    except Exception as e:  # safetensors raises its own error type for malformed headers and truncated data
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor], *, where: str) -> None:
    """load_state_dict(strict) with errors that name the file, the keys and both shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        parts = [f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "",
                 f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}" if unexpected else "",
                 f"shape mismatch {bad[:5]}" if bad else ""]
        raise CheckpointError(f"{where}: weights do not fit the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state)


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[VideoClassifier, dict]:
    """Load a model for inference from a training checkpoint (`.pt`) or an `actionbert` model folder."""
    path = Path(path)
    _refuse_swapped(path)
    if path.is_dir():
        return from_pretrained(path, map_location=map_location)
    ckpt = load_checkpoint(path, map_location=map_location)
    info = ckpt.get("inference")
    if not isinstance(info, dict) or "model_state" not in ckpt:
        raise CheckpointError(f"{path}: not an actionbert training checkpoint (no 'inference'/'model_state')")
    model = build_checked(info, where=str(path))
    validate_model_files(model, ckpt["model_state"], info, weights=str(path), config=str(path))
    load_exact(model, ckpt["model_state"], where=str(path))
    return model.eval(), info


# --------------------------------------------------------------------------------------- validation

def build_checked(info: dict[str, Any], *, where: str) -> VideoClassifier:
    """The model `info["model"]` describes; a config that cannot build one is a CheckpointError naming `where`."""
    config = read_model_config(info, where=where)
    try:
        return VideoClassifier(config)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{where}: the model config cannot build a model ({e})") from None


def validate_model_files(model: VideoClassifier, state: dict, info: dict[str, Any], *, weights: str,
                         config: str) -> None:
    """Check what a model folder or checkpoint holds before it is used, so a damaged or edited file fails
    here with one clear message naming it, not later as NaN scores, wrong class names, an IndexError or an
    error that blames a video.

    Checked: the inference settings of `info` (`config` names their file): the class list against the
    classifier's outputs, clip length, frame stride, crop size, resize (positive, at most `MAX_SIDE`, not
    smaller than the crop), normalisation; and the weights of `state` (`weights` names their file): each
    tensor of the dtype kind the model needs (floating point for parameters, not bool or int), and finite.

    Raises:
        CheckpointError: the first problem found.
    """
    _check_inference_info(info, model.config, where=config)
    _check_weights(state, model.state_dict(), where=weights)


def _check_inference_info(info: dict[str, Any], cfg, *, where: str) -> None:
    def bad(problem: str):
        raise CheckpointError(f"{where}: {problem}")

    classes = info.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        bad("'classes' must be a list of class names")
    if len(classes) != cfg.num_classes:
        bad(f"'classes' lists {len(classes)} names but the classifier has {cfg.num_classes} outputs: every "
            f"predicted name would be wrong; give exactly one name per output")
    if len(set(classes)) != len(classes):
        bad(f"'classes' repeats a name ({sorted(c for c in set(classes) if classes.count(c) > 1)[:3]})")
    for key, expected in (("clip_len", cfg.clip_len), ("input_size", cfg.input_size)):
        value = info.get(key)
        if not _is_int(value) or value != expected:
            bad(f"'{key}' is {value!r} but the model was built for {expected}")
    if not 1 <= cfg.input_size <= MAX_SIDE:
        bad(f"'input_size' {cfg.input_size} is not a usable crop size (1..{MAX_SIDE} pixels)")
    pre = preprocessing_of(info, where=where)
    if (pre.clip_len, pre.crop_size) != (cfg.clip_len, cfg.input_size):
        bad(f"the preprocessing record asks for {pre.clip_len}-frame clips of {pre.crop_size} px but the model "
            f"was built for {cfg.clip_len} frames of {cfg.input_size} px")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_weights(state: dict, own: dict[str, torch.Tensor], *, where: str) -> None:
    common = sorted(own.keys() & state.keys())
    wrong = [f"{k}: {getattr(state[k], 'dtype', type(state[k]).__name__)}, needs {own[k].dtype}" for k in common
             if not isinstance(state[k], torch.Tensor) or not _same_kind(state[k].dtype, own[k].dtype)]
    if wrong:
        raise CheckpointError(f"{where}: {len(wrong)} weight tensor(s) of the wrong type ({'; '.join(wrong[:3])}"
                              f"{'; ...' if len(wrong) > 3 else ''}): weights cast to another type give "
                              f"meaningless scores; use the original floating-point weights")
    broken = [k for k in common if state[k].is_floating_point() and not torch.isfinite(state[k]).all()]
    if broken:
        raise CheckpointError(f"{where}: {len(broken)} weight tensor(s) hold NaN or infinite values "
                              f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}): the model would "
                              f"only give NaN or uniform scores; use a checkpoint from before training diverged")


def _same_kind(got: torch.dtype, needed: torch.dtype) -> bool:
    """Floating point for floating point, integer for integer (bool is neither), bool for bool."""
    if needed.is_floating_point:
        return got.is_floating_point
    if needed == torch.bool or got == torch.bool:
        return got == needed
    return not got.is_floating_point and not got.is_complex
def _refuse_swapped(path: Path) -> None:
    """A video or a prepared dataset given where the model goes: say so (the arguments were likely swapped)."""
    from actionbert.data.decode import VIDEO_EXTENSIONS, is_frame_folder

    if path.suffix.lower() in VIDEO_EXTENSIONS or is_frame_folder(path):
        raise CheckpointError(f"{path}: a video, not a model (a .pt checkpoint or a model folder); were the "
                              "arguments swapped? The model comes first")
    if (path / "classes.txt").is_file() and not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: a prepared dataset, not a model; were the arguments swapped? Give the model "
                              "first and the dataset with --data")
