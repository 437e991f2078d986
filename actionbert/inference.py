"""The fast inference path: a prepared, frozen copy of a `VideoClassifier` for predict and eval.

The models are convolution-bound (the BERT head is about 0.01% of the FLOPs), so inference speed is the speed
of the 3D convolutions. `prepare_for_inference` makes a private copy of the model and applies, in order, what
is exact or asked for:

```
model --deepcopy--> eval() --fold BN into the preceding Conv3d--> to(device, channels_last_3d)
      --> InferenceModel: inference_mode [+ bf16/fp16 autocast] [+ torch.compile(freezing) per input shape]
```

- BatchNorm folding (eval mode): `y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta` is again a
  convolution with weight `w * gamma / sqrt(var + eps)` and a new bias, so one memory pass per layer disappears.
  A BN is folded only where that is exact: its input is the output of a convolution that feeds nothing else
  (read from a torch.fx trace of the module), and neither module is called twice. The arithmetic itself is
  PyTorch's `torch.nn.utils.fusion.fuse_conv_bn_eval`.
- Channels-last 3D (`N, T, H, W, C` in memory) is the layout oneDNN's convolutions run fastest in on CPUs.
- On CUDA, cuDNN autotuning (`cudnn.benchmark`) is switched on: clip shapes are fixed, so each convolution's
  fastest algorithm is searched once. Timings that decide on compilation wait for the GPU (synchronize).
- `torch.compile` with weight freezing lets Inductor pre-pack the convolution weights and fuse the pointwise
  tails (bias, ReLU, residual add). Compilation happens once per input shape; if it is unavailable or fails, the
  reason is recorded in `InferenceModel.report` and the model runs eagerly. It never raises because of the
  compiler.

On the CPU, a process that runs many calls should also call `actionbert.runtime.keep_freed_memory()` once (the
CLI does): it stops glibc from unmapping freed activations, which otherwise costs a page fault per 4 KiB on every
call (11% in fp32, 22% in bf16 of an R(2+1)D-34 inference call on the 2-core machine of `benchmarks/README.md`).
It changes the whole process's allocator, so this module leaves that decision to the caller.

Outputs equal the eager fp32 model within fp32 rounding (bf16/fp16 are approximations by design). The original
model is never modified, so training can go on with it.
"""

from __future__ import annotations

import copy
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

from actionbert import runtime
from actionbert.precisions import INFERENCE_PRECISIONS

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


# ------------------------------------------------------------------------------------- BatchNorm folding
def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


def find_conv_bn_pairs(module: nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    """Names `(conv, bn)` of every BatchNorm that can be folded exactly into the convolution before it.

    The data flow comes from a torch.fx trace. A module that cannot be traced (data-dependent Python control
    flow, e.g. a shape check) is searched child by child instead, so one untraceable wrapper does not hide the
    convolutions inside it.

    Args:
        module: the module to search (not modified).
        prefix: qualified name of `module` inside the model the names should refer to.
    """
    if not _has_batchnorm(module):
        return []
    try:
        graph = _ConvBNTracer().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means "look inside instead"
        pairs: list[tuple[str, str]] = []
        for name, child in module.named_children():
            pairs += find_conv_bn_pairs(child, f"{prefix}{name}.")
        return pairs
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), _BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if not (isinstance(source, fx.Node) and source.op == "call_module"):
            continue
        conv, bn = module.get_submodule(source.target), module.get_submodule(node.target)
        if _foldable(conv, bn) and len(source.users) == 1 and calls[source.target] == calls[node.target] == 1:
            pairs.append((f"{prefix}{source.target}", f"{prefix}{node.target}"))
    return pairs


class _ConvBNTracer(fx.Tracer):
    """fx tracer that keeps every convolution and BatchNorm as one call, also subclasses from other packages
    (torchvision's `Conv3DSimple`), which the default tracer would trace through."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (_ConvNd, _BatchNorm)) or super().is_leaf_module(m, module_qualified_name)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """A ConvNd followed by a BatchNormNd of the same dimensionality that has running statistics.

    Subclasses count (torchvision's `Conv3DSimple` is an `nn.Conv3d`) as long as they keep the base forward or
    declare `same_function_as_conv` (actionbert's `StemConv3d`: another schedule of the same function).
    """
    for dims, conv_cls in CONVS.items():
        bn_cls = BATCHNORMS[dims]
        if isinstance(conv, conv_cls) and isinstance(bn, bn_cls):
            conv_math = type(conv).forward is conv_cls.forward or getattr(conv, "same_function_as_conv", False)
            same_math = conv_math and type(bn).forward is bn_cls.forward
            return (same_math and bn.track_running_stats and bn.running_mean is not None
                    and conv.out_channels == bn.num_features)
    return False


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of `model` (in eval mode) with every exactly foldable BatchNorm merged into its convolution.

    Each folded BatchNorm is replaced by `nn.Identity`, so the module tree keeps its names and forward methods
    (`forward_with_attention` etc. still work) and `state_dict` keys of the folded BNs disappear.

    Args:
        model: any module; it is not modified.

    Returns:
        (folded copy, qualified names of the folded BatchNorm layers).
    """
    folded = copy.deepcopy(model).eval()
    pairs = find_conv_bn_pairs(folded)
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
            _set_submodule(folded, conv_name, fuse_conv_bn_eval(conv, bn))
            _set_submodule(folded, bn_name, nn.Identity())
    return folded, [bn for _, bn in pairs]


# ---------------------------------------------------------------------------------------------- compile
def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why `torch.compile` cannot be used here (None if it can): no dynamo, or no C++ compiler for CPU code."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return f"torch.compile does not support Python {sys.version_info.major}.{sys.version_info.minor} here"
    except Exception as err:  # noqa: BLE001
        return f"torch._dynamo cannot be imported: {err}"
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++", "cl")):
        return "no C++ compiler on PATH (Inductor's CPU backend needs one)"
    return None


class _Forward(nn.Module):
    """The traced unit: clip batch -> (logits, attention-or-None), with the precision's autocast inside.

    Putting the autocast inside the compiled region makes the precision part of the graph, whatever autocast
    state the caller has.
    """

    def __init__(self, model: nn.Module, device_type: str, precision: str) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = AUTOCAST_DTYPES.get(precision)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.autocast(self.device_type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            return self.model.forward_with_attention(x)


@dataclass
class InferenceReport:
    """What `prepare_for_inference` did, and what the compiler did per input shape.

    Args:
        precision: "fp32", "bf16" or "fp16" (autocast).
        device: where the model runs.
        channels_last: weights and inputs in channels-last 3D layout.
        folded_bn: qualified names of the BatchNorm layers folded into convolutions.
        unfolded_bn: BatchNorm layers left in place (not directly after a single-use convolution).
        compile_mode: the `compile` argument ("auto", True or False).
        compile_error: why compilation is off or failed; None while it works or was not asked for.
        compiled_shapes: input shape -> seconds its first compiled call took (compilation + one run).
        eager_shapes: input shape -> seconds of its first eager call (what "auto" decides on).
    """

    precision: str
    device: str
    channels_last: bool
    folded_bn: list[str] = field(default_factory=list)
    unfolded_bn: list[str] = field(default_factory=list)
    compile_mode: str | bool = "auto"
    compile_error: str | None = None
    compiled_shapes: dict[tuple[int, ...], float] = field(default_factory=dict)
    eager_shapes: dict[tuple[int, ...], float] = field(default_factory=dict)

    @property
    def compiled(self) -> bool:
        return bool(self.compiled_shapes) and self.compile_error is None

    def _eager_reason(self) -> str:
        if self.compile_error:
            return self.compile_error
        return "compile off" if self.compile_mode is False else "no input shape compiled yet"

    def summary(self) -> str:
        comp = ("compiled for " + ", ".join("x".join(map(str, s)) for s in self.compiled_shapes)
                if self.compiled else f"eager ({self._eager_reason()})")
        return (f"{self.precision} on {self.device}, {'channels-last' if self.channels_last else 'contiguous'}, "
                f"{len(self.folded_bn)} BatchNorm folded ({len(self.unfolded_bn)} kept), {comp}")


class InferenceModel(nn.Module):
    """A prepared copy of a `VideoClassifier` for inference; call it like the model.

    Offers the classifier's inference interface: `model(x) -> logits (B, K)`, `forward_with_attention(x) ->
    (logits (B, K), attention (B, heads, T'+1) or None)`, `config`, `num_classes`. Outputs are fp32 whatever the
    precision. Use `prepare_for_inference` to build one.

    Compilation policy (`compile_mode`):
    - True: compile every new input shape on its first call.
    - "auto": run a new shape eagerly once; compile it on its next call if that eager call took at least
      `compile_min_seconds` (a heavy model whose calls will pay back the compile time; tiny models, tests and
      the demo stay eager).
    - False: always eager.
    At most `max_compiled_shapes` shapes are compiled (Dynamo's own recompile limit); further shapes run eagerly.
    Dynamo counts that limit per process over all prepared models, as they share one traced function: a process
    that compiles more than 8 (model, shape) pairs gets eager runs, with a Dynamo warning, after the 8th
    (`torch._dynamo.reset()` starts over).
    """

    def __init__(self, model: nn.Module, report: InferenceReport, *, compile_min_seconds: float = 0.1,
                 max_compiled_shapes: int = 8) -> None:
        super().__init__()
        self.runner = _Forward(model, torch.device(report.device).type, report.precision)
        self.report = report
        self.memory_format = torch.channels_last_3d if report.channels_last else torch.contiguous_format
        self.compile_min_seconds = compile_min_seconds
        self.max_compiled_shapes = max_compiled_shapes
        self._compiled: Callable | None = None
        self._calls: dict[tuple[int, ...], int] = {}  # input shape -> calls so far
        if report.compile_mode is not False and report.compile_error is None:
            try:
                compiled = torch.compile(self.runner, dynamic=False)
                object.__setattr__(self, "_compiled", compiled)  # not a submodule: no second copy of the weights
            except Exception as err:  # noqa: BLE001 - any failure means "run eagerly"
                self._disable_compile(f"torch.compile failed: {type(err).__name__}: {err}")

    # --------------------------------------------------------------------------- the classifier's interface
    @property
    def model(self) -> nn.Module:
        """The prepared (folded, channels-last) classifier; running it directly skips autocast and compile."""
        return self.runner.model

    @property
    def device(self) -> torch.device:
        return next(self.runner.parameters()).device

    @property
    def config(self):
        return self.model.config

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise RuntimeError("an InferenceModel is frozen for inference (BatchNorm folded); train the original "
                               "model and prepare it again")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) clips -> logits (B, K), fp32."""
        return self.forward_with_attention(x)[0]

    @torch.inference_mode()
    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, K) and, for BERT heads, the CLS attention (B, heads, T'+1); both fp32."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip batch of shape (B, 3, T, H, W), got {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        if not x.is_inference():
            # made outside inference mode and already in place: Dynamo guards on that flag, so such a tensor
            # after an inference-mode one (or the reverse) recompiled the shape, seconds per switch (seen with
            # predict's workers); a copy made here keeps one graph per shape
            x = x.clone()
        logits, attention = self._run(x)
        return logits.float(), (attention.float() if attention is not None else None)

    # --------------------------------------------------------------------------------------------- dispatch
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        shape = tuple(x.shape)
        seen = self._calls.get(shape, 0)
        self._calls[shape] = seen + 1
        if self._compiled is None or not self._wants_compiled(shape, seen):
            t0 = time.perf_counter()
            out = self.runner(x)
            if seen == 0:
                runtime.synchronize(x.device)  # CUDA returns before the work is done: time the work, not the launch
                self.report.eager_shapes[shape] = time.perf_counter() - t0
            return out
        first = shape not in self.report.compiled_shapes
        t0 = time.perf_counter()
        try:
            # Freezing (weights as constants: Inductor pre-packs them for oneDNN and folds the autocast casts) is
            # read from Inductor's global config while the first call compiles; passed as
            # `torch.compile(options={"freezing": True})` it does not take effect (measured: bf16 R(2+1)D-18
            # 0.21 s with it, 0.044 s with this patch), hence the scoped patch around the call.
            with torch._inductor.config.patch(freezing=True):
                out = self._compiled(x)
        except Exception as err:  # noqa: BLE001
            out = self.runner(x)  # an error of the model itself (bad input) raises here, as it would eagerly
            self._disable_compile(f"compiling for input {shape} failed: {type(err).__name__}: {err}")
            return out
        if first:
            runtime.synchronize(x.device)
            self.report.compiled_shapes[shape] = time.perf_counter() - t0
        return out

    def _wants_compiled(self, shape: tuple[int, ...], seen: int) -> bool:
        if shape in self.report.compiled_shapes:
            return True
        if len(self.report.compiled_shapes) >= self.max_compiled_shapes:
            return False
        if self.report.compile_mode is True:
            return True
        # "auto": compile a shape the second time it comes, if it is heavy enough to pay back compilation
        return seen >= 1 and self.report.eager_shapes.get(shape, 0.0) >= self.compile_min_seconds

    def _disable_compile(self, reason: str) -> None:
        self._compiled = None
        self.report.compile_error = reason
        self.report.compiled_shapes.clear()
        warnings.warn(f"actionbert: running eagerly, {reason}", RuntimeWarning, stacklevel=3)


def prepare_for_inference(model: nn.Module, *, precision: str = "fp32", device: torch.device | str = "cpu",
                          channels_last: bool = True, fold_bn: bool = True, compile: bool | str = "auto",
                          compile_min_seconds: float = 0.1) -> InferenceModel:
    """Prepare a frozen, fast copy of `model` for inference (see the module docstring). `model` is not changed.

    Args:
        model: a `VideoClassifier` (anything with `forward_with_attention` and `config`).
        precision: "fp32" (exact), "bf16" (autocast; CPU and GPU) or "fp16" (autocast; CUDA only).
        device: where the prepared copy lives and runs; inputs are moved there.
        channels_last: store weights and inputs channels-last 3D (faster oneDNN/cuDNN convolutions).
        fold_bn: fold BatchNorm layers into the preceding convolutions where that is exact.
        compile: True, False or "auto" (see `InferenceModel`).
        compile_min_seconds: "auto" compiles an input shape only if its eager call takes at least this long.

    Returns:
        An `InferenceModel`; its `report` says what was folded and compiled, or why not.
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(INFERENCE_PRECISIONS)}")
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise runtime.UnsupportedSetup("precision fp16 needs a CUDA device; use bf16 (or auto) on the CPU")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed clip shapes: cuDNN's fastest algorithms, searched once
    if fold_bn:
        prepared, folded = fold_batchnorm(model)
    else:
        prepared, folded = copy.deepcopy(model).eval(), []
    prepared.requires_grad_(False)
    prepared = prepared.to(device=device, memory_format=torch.channels_last_3d if channels_last else
                           torch.contiguous_format)
    report = InferenceReport(precision=precision, device=str(device), channels_last=channels_last,
                             folded_bn=folded, compile_mode=compile,
                             unfolded_bn=[n for n, m in prepared.named_modules() if isinstance(m, _BatchNorm)])
    if compile is not False:
        report.compile_error = compile_unavailable_reason(device)
    return InferenceModel(prepared, report, compile_min_seconds=compile_min_seconds).eval()

