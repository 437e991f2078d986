"""The machine's dense-compute peak per dtype: the best of several dense kernels, not one library's matmul.

Why several: on an AMD EPYC (Zen 5, AVX-512 with avx512_bf16, no AMX) MKL's fp32 `torch.mm` reached 219 GFLOP/s
while oneDNN's fp32 3D convolutions reached 494-521; a peak taken from `torch.mm` alone made the benchmark print
model paths at 201% of "peak". So the peak is the best rate over large matrix products and large channels-last
oneDNN convolutions (2D and 3D, the layer shapes a video ResNet runs), per dtype, and the kernel that set it is
printed with it. FLOPs: 2 per multiply-add, as the model rows count them (direct convolution, no Winograd/FFT
discount).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Kernel:
    label: str
    flops: int
    call: Callable[[], object]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _mm(n: int, dtype: torch.dtype) -> Kernel:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return Kernel(f"mm {n}^3", 2 * n**3, lambda: torch.mm(a, b))


def _conv(batch: int, channels: int, frames: int, size: int, kernel: tuple[int, ...], dtype: torch.dtype) -> Kernel:
    """A same-padded convolution (stride 1) in channels-last memory format, channels -> channels."""
    spatial = (frames, size, size) if len(kernel) == 3 else (size, size)
    fmt = torch.channels_last_3d if len(kernel) == 3 else torch.channels_last
    x = torch.randn(batch, channels, *spatial).to(dtype).contiguous(memory_format=fmt)
    w = torch.randn(channels, channels, *kernel).to(dtype).contiguous(memory_format=fmt)
    conv = F.conv3d if len(kernel) == 3 else F.conv2d
    pad = tuple(k // 2 for k in kernel)
    flops = 2 * batch * math.prod(spatial) * channels * channels * math.prod(kernel)
    shape = "x".join(map(str, kernel))
    return Kernel(f"conv{len(kernel)}d {shape} c{channels} {'x'.join(map(str, spatial))} b{batch} channels-last",
                  flops, lambda: conv(x, w, padding=pad))


def dense_kernels(dtype: torch.dtype, quick: bool = False) -> list[Kernel]:
    """Candidate kernels: square matrix products and ResNet-like convolutions (3x3x3 and 1x3x3 in 3D, 3x3 2D)."""
    sizes = [1024, 2048] if quick else [1024, 2048, 3072, 4096]
    kernels = [_mm(n, dtype) for n in sizes]
    kernels += [_conv(1, 256, 8, 28, (3, 3, 3), dtype), _conv(1, 128, 16, 28, (3, 3, 3), dtype),
                _conv(2, 256, 8, 28, (1, 3, 3), dtype), _conv(8, 256, 0, 28, (3, 3), dtype)]
    return kernels


def rate(kernel: Kernel, repeats: int) -> float:
    """GFLOP/s of the kernel's best of `repeats` timed calls (after one warm-up that creates the primitive)."""
    kernel.call()
    return kernel.flops / min(_timed(kernel.call) for _ in range(repeats)) / 1e9


def dense_peak(dtype: torch.dtype, repeats: int = 5, quick: bool = False) -> tuple[float, Kernel, list[tuple]]:
    """(best GFLOP/s, the kernel that reached it, [(label, GFLOP/s)] for every candidate)."""
    measured = [(k, rate(k, repeats)) for k in dense_kernels(dtype, quick)]
    best, best_rate = max(measured, key=lambda kr: kr[1])
    return best_rate, best, [(k.label, r) for k, r in measured]


class PeakProbe:
    """The peak kernel's rate sampled inside every timing round, next to the model timings.

    On a shared machine the peak measured at the start can come from a quieter moment than the model timings;
    the median of these samples is the peak under the same conditions ("of round peak" in the tables).
    """

    def __init__(self, kernels: dict[str, Kernel]) -> None:
        self.kernels = kernels
        self.samples: dict[str, list[float]] = {k: [] for k in kernels}

    def sample(self) -> None:
        for k, kernel in self.kernels.items():
            self.samples[k].append(rate(kernel, 3))

    def median(self, k: str) -> float:
        return statistics.median(self.samples[k])
