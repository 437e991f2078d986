"""Export a trained model for deployment, and prove the export computes what the eager model computes.

Three formats, each traced in eval mode at the model's fixed clip shape `(B, 3, clip_len, input_size,
input_size)` with a dynamic batch axis B:
- `onnx`: one `.onnx` file (opset 17, input `clip`, output `logits`), checked through onnxruntime on CPU.
  Uses PyTorch's TorchScript-based ONNX exporter (`dynamo=False`), which needs no extra packages.
- `torchscript`: `torch.jit.trace` + `save`, checked after `torch.jit.load`.
- `torch-export`: `torch.export.export` + `save` (`.pt2`), checked after `torch.export.load`.

Every export carries what a deployment needs besides the network (`export_metadata`): the preprocessing record
(`actionbert.preprocessing`: resize rule, crop, normalisation numbers, channel order, clip length, stride, the
test protocol), the class names and the model config, as JSON strings under the keys "actionbert.preprocessing",
"actionbert.classes" and "actionbert.model": in ONNX `metadata_props`, in TorchScript `_extra_files` and in
torch.export `extra_files` (both read back with the same dict of names). `benchmarks/onnx_predict.py` runs an
ONNX file from its metadata alone, without actionbert.

The check reloads the written file, runs it on random clips of two batch sizes (the traced one and one more, so
the dynamic batch axis is exercised) and compares with eager PyTorch; a max abs difference at or above the
tolerance (1e-4 in fp32) raises `ExportCheckError`, and the file is only put in place after it passed.
"""

from __future__ import annotations

import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from actionbert.checkpoint import atomic_write

TOLERANCE = 1e-4  # max abs logit difference accepted in fp32
Runner = Callable[[torch.Tensor], torch.Tensor]


class ExportCheckError(RuntimeError):
    """The exported model does not reproduce the eager model's outputs (or could not be exported at all)."""


@dataclass(frozen=True)
class ExportResult:
    """Outcome of `export_model`.

    Args:
        path: the written file.
        format: "onnx", "torchscript" or "torch-export".
        clip_shape: (C, T, H, W) of the fixed input; the batch axis is dynamic.
        batches: batch sizes the check ran.
        max_abs_diff: largest |exported - eager| over all logits of the check.
    """

    path: Path
    format: str
    clip_shape: tuple[int, int, int, int]
    batches: tuple[int, ...]
    max_abs_diff: float


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation and tracer warnings; the numeric check is what tells us it worked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_metadata(info: dict) -> dict[str, str]:
    """The metadata every export carries, from a checkpoint's / model folder's inference dict (see the module
    docstring); old files without a record get the one their loose fields describe."""
    from actionbert.preprocessing import Preprocessing

    return {"actionbert.preprocessing": json.dumps(Preprocessing.from_info(info).to_dict()),
            "actionbert.classes": json.dumps(list(info["classes"])),
            "actionbert.model": json.dumps(info.get("model", {}))}


def read_metadata(path: str | Path, format: str) -> dict[str, str]:
    """The `export_metadata` strings stored in an exported file."""
    path = str(path)
    if format == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    files = {key: "" for key in ("actionbert.preprocessing", "actionbert.classes", "actionbert.model")}
    if format == "torchscript":
        torch.jit.load(path, map_location="cpu", _extra_files=files)
    else:
        torch.export.load(path, extra_files=files)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in files.items() if v}


# ---------------------------------------------------------------------------------------------- writers
def _write_onnx(model: nn.Module, example: torch.Tensor, path: str, metadata: dict[str, str]) -> None:
    torch.onnx.export(model, (example,), path, dynamo=False, opset_version=17, input_names=["clip"],
                      output_names=["logits"], dynamic_axes={"clip": {0: "batch"}, "logits": {0: "batch"}})
    if metadata:
        import onnx

        proto = onnx.load(path)
        onnx.helper.set_model_props(proto, metadata)
        onnx.save(proto, path)


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: str, metadata: dict[str, str]) -> None:
    traced = torch.jit.trace(model, (example,), check_trace=False)
    torch.jit.save(traced, path, _extra_files=dict(metadata))


def _write_torch_export(model: nn.Module, example: torch.Tensor, path: str, metadata: dict[str, str]) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path, extra_files=dict(metadata))


WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, str, dict[str, str]], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
    "torch-export": _write_torch_export,
}


# ---------------------------------------------------------------------------------------------- runners
def _run_onnx(path: str) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as the eager side uses
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda clip: torch.from_numpy(session.run(None, {name: clip.numpy()})[0])


def _run_torchscript(path: str) -> Runner:
    module = torch.jit.load(path, map_location="cpu")
    return module


def _run_torch_export(path: str) -> Runner:
    return torch.export.load(path).module()


# format -> (file path -> function running the exported model on a CPU clip batch)
RUNNERS: dict[str, Callable[[str], Runner]] = {
    "onnx": _run_onnx,
    "torchscript": _run_torchscript,
    "torch-export": _run_torch_export,
}
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "torch-export": ".pt2"}


# ------------------------------------------------------------------------------------------------ check
def compare_exported(path: str | Path, format: str, model: nn.Module, clips: list[torch.Tensor]) -> float:
    """Max abs difference between the exported file at `path` and eager `model` over `clips` (B, 3, T, H, W)."""
    with _quiet():
        run = RUNNERS[format](str(path))
        worst = 0.0
        with torch.no_grad():
            for clip in clips:
                expected = model(clip)
                got = run(clip)
                if tuple(got.shape) != tuple(expected.shape):
                    raise ExportCheckError(f"{format} export returns shape {tuple(got.shape)} for a clip batch "
                                           f"{tuple(clip.shape)}; eager PyTorch gives {tuple(expected.shape)}")
                diff = (got.float() - expected.float()).abs().max().item()
                if math.isnan(diff):  # max() would silently drop a NaN
                    return diff
                worst = max(worst, diff)
    return worst


def export_model(model: nn.Module, out: str | Path, *, format: str, clip_len: int | None = None,
                 input_size: int | None = None, batch: int = 2, tolerance: float = TOLERANCE,
                 seed: int = 0, metadata: dict[str, str] | None = None) -> ExportResult:
    """Export `model` (switched in place to eval mode, fp32, CPU) and verify the written file against eager PyTorch.

    Args:
        model: a `VideoClassifier` (or any module mapping a clip batch to logits).
        out: file to write; it only appears once the check passed.
        format: "onnx", "torchscript" or "torch-export".
        clip_len: frames per clip T (default: the model config's).
        input_size: crop side H = W in pixels (default: the model config's).
        batch: batch size the check runs (and batch + 1). The example traced has at least 2 clips, since
            torch.export would fix a batch axis traced at size 1.
        tolerance: max abs logit difference accepted.
        seed: seed of the random clips.
        metadata: strings stored in the file (`export_metadata(info)`: the preprocessing record, class names).

    Returns:
        An `ExportResult`; raises `ExportCheckError` when the difference is >= `tolerance`.
    """
    if format not in WRITERS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(WRITERS)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    config = getattr(model, "config", None)
    clip_len = clip_len or getattr(config, "clip_len", None)
    input_size = input_size or getattr(config, "input_size", None)
    if not clip_len or not input_size:
        raise ValueError("clip_len and input_size are needed (the model has no config to take them from)")
    model = model.eval().float().cpu()
    shape = (3, clip_len, input_size, input_size)
    generator = torch.Generator().manual_seed(seed)
    batches = (batch, batch + 1)
    clips = [torch.randn(b, *shape, generator=generator) for b in batches]
    example = clips[0] if batch >= 2 else clips[1]
    out = Path(out)
    result: dict[str, float] = {}

    def write_and_check(tmp: str) -> None:
        try:
            with _quiet(), torch.no_grad():
                WRITERS[format](model, example, tmp, metadata or {})
        except Exception as e:  # exporter failures (unsupported op, guard violation) as one clear error
            first = (str(e).strip().splitlines() or [""])[0]
            raise ExportCheckError(f"{format} export failed: {type(e).__name__}: {first}") from e
        diff = compare_exported(tmp, format, model, clips)
        result["diff"] = diff
        if not diff < tolerance:  # also catches NaN
            raise ExportCheckError(
                f"{format} export does not match eager PyTorch: max abs logit difference {diff:.3g} >= tolerance "
                f"{tolerance:g} on random clips of shape (B, {', '.join(map(str, shape))}), B in {batches}; "
                f"{out} was not written"
            )

    atomic_write(out, write_and_check, suffix=".tmp" + SUFFIXES[format])
    return ExportResult(path=out, format=format, clip_shape=shape, batches=batches, max_abs_diff=result["diff"])
