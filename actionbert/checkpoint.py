"""Checkpoints and the exported model folder, written atomically and loaded without executing pickled code.

Two formats:
- Training checkpoint (`last.pt`, `best.pt`): one `torch.save` dict holding only tensors and plain Python values
  (model, optimizer, scheduler and scaler state, epoch, RNG states, the resolved run config, class names), so it
  loads with `torch.load(weights_only=True)`; anything else in the file is refused.
- Model folder (`actionbert` format): `model.safetensors` + `config.json` (architecture, class names, clip length,
  frame stride, input size, resize, normalisation). `from_pretrained(folder)` rebuilds the model from it alone.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from actionbert import runtime
from actionbert.models import ModelConfig, VideoClassifier

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint or model folder that cannot be read safely or does not fit."""


def atomic_write(path: str | Path, write, *, suffix: str = ".tmp") -> Path:
    """Call `write(tmp_path)` then rename into place, so a crash never leaves a half-written file.

    `suffix` ends the temporary name (some writers insist on an extension, e.g. `.pt2`). The file gets the
    usual permissions (0666 minus the umask), not mkstemp's owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    except (RuntimeError, EOFError, ValueError, OSError) as e:
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
def inference_config(model: VideoClassifier, *, classes: list[str], frame_stride: int = 1,
                     resize: tuple[int, int] = (128, 170), keep_aspect: bool = False, norm: str,
                     hflip: float = 0.5) -> dict[str, Any]:
    """Everything inference needs besides the weights (stored in config.json and in training checkpoints).

    `hflip` is the training flip probability: a model trained without flips (left/right matters to its
    classes) is evaluated without mirrored views.
    """
    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {model.num_classes} outputs")
    return {
        "format_version": FORMAT_VERSION,
        "model": asdict(model.config),
        "classes": list(classes),
        "clip_len": model.config.clip_len,
        "frame_stride": frame_stride,
        "input_size": model.config.input_size,
        "resize": list(resize),
        "keep_aspect": keep_aspect,
        "norm": norm,
        "hflip": hflip,
    }


def save_pretrained(model: VideoClassifier, folder: str | Path, *, info: dict[str, Any]) -> Path:
    """Write `folder/model.safetensors` and `folder/config.json` (see `inference_config` for `info`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "actionbert"}))
    atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
    return folder


def read_model_config(info: dict[str, Any], *, where: str) -> ModelConfig:
    try:
        return ModelConfig(**info["model"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: model config missing or malformed ({e})") from None


def from_pretrained(folder: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[VideoClassifier, dict]:
    """Rebuild a model from an `actionbert` folder; returns (model in eval mode, inference info)."""
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise CheckpointError(f"{folder}: not an actionbert model folder ({p.name} is missing)")
    try:
        info = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None
    model = VideoClassifier(read_model_config(info, where=str(cfg_path)))
    state = load_safetensors(weights, map_location=map_location)
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
    if path.is_dir():
        return from_pretrained(path, map_location=map_location)
    ckpt = load_checkpoint(path, map_location=map_location)
    info = ckpt.get("inference")
    if not isinstance(info, dict) or "model_state" not in ckpt:
        raise CheckpointError(f"{path}: not an actionbert training checkpoint (no 'inference'/'model_state')")
    model = VideoClassifier(read_model_config(info, where=str(path)))
    load_exact(model, ckpt["model_state"], where=str(path))
    return model.eval(), info
