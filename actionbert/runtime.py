"""Run-time environment: device choice, torch.distributed (torchrun / DDP), seeding, RNG state capture and
the process's memory allocator.

Devices are chosen at run time ("auto" = CUDA when present, else CPU); no module moves tensors with a hard-coded
CUDA call.
Several processes (GPUs or machines) are started with `torchrun`, which sets RANK / WORLD_SIZE / LOCAL_RANK; the
backend is NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import platform
import random
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from actionbert.errors import DistributedError, UsageError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str, *, timeout_s: float | None = None) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); otherwise a single process.

    `timeout_s`: how long a collective operation waits for the other processes before it fails (None: the
    backend's default, 30 minutes for gloo).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else None
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo", timeout=timeout)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


# what gloo / NCCL say when a peer does not answer in time, or went away
_TIMEOUT_SIGNS = ("timed out", "timeout")
_GONE_SIGNS = ("connection closed by peer", "connection reset by peer", "broken pipe", "connection refused")


def collective_failure(error: BaseException, info: DistInfo, timeout_s: float) -> DistributedError | None:
    """A one-line `DistributedError` for a collective operation that failed because another process stopped
    answering (timeout) or went away; None for any other error.

    torch does not say which rank stopped answering (gloo names the operation, NCCL the waiting rank), so the
    message names the rank that waited and the timeout.
    """
    if not info.enabled:
        return None
    text = str(error).lower()
    detail = (str(error).strip().splitlines() or [""])[0]
    detail = detail.split("] ", 1)[-1] if detail.startswith("[") else detail  # drop gloo's source location
    if any(s in text for s in _TIMEOUT_SIGNS):
        return DistributedError(
            f"rank {info.rank} of {info.world_size}: another process of this run stopped answering: a collective "
            f"operation got no answer within train.dist_timeout_s = {timeout_s:g} s ({detail}); torch does not "
            "say which rank, see the other processes' output (raise train.dist_timeout_s if a process is "
            "legitimately that slow)")
    if any(s in text for s in _GONE_SIGNS):
        return DistributedError(f"rank {info.rank} of {info.world_size}: another process of this run went away "
                                f"({detail}); see the other processes' output for the cause")
    return None


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def select_device(name: str = "auto", *, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda:<local_rank> if CUDA is available, else cpu; otherwise the named device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name!r} requested but CUDA is not available on this machine; use "
                             "--device cpu (or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def cpu_bf16_units() -> str | None:
    """The CPU's bf16 instructions that PyTorch's kernels (oneDNN) use: "AMX" (matrix tiles), "AVX512-BF16" (dot
    products in vector registers), or None: then every bf16 operation is emulated in float32 plus conversions."""
    probe = getattr(torch, "cpu", None)
    if probe is not None and getattr(probe, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if probe is not None and getattr(probe, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


def bf16_is_slow(device: torch.device) -> str | None:
    """Why bf16 autocast would be slower than fp32 on `device`, or None when it is fast there.

    CPU: without bf16 instructions (an AMD EPYC exposing only AVX2, measured 2026-11-30) the demo's training step
    took 6.6x as long in bf16 as in fp32; with AMX it took 0.67x (benchmarks/README.md).
    """
    if device.type == "cpu" and cpu_bf16_units() is None:
        return "this CPU has no bf16 instructions (no AVX512-BF16, no AMX), so bf16 is emulated and slower than fp32"
    return None


def param_dtype(precision: str) -> torch.dtype:
    """The dtype of weights and inputs: float64 for "fp64", else float32 (bf16/fp16 autocast inside)."""
    return torch.float64 if precision == "fp64" else torch.float32


def autocast(device: torch.device, precision: str):
    """Mixed-precision context: bf16 works on CPU and GPU, fp16 only on GPU; fp32 and fp64 = no autocast."""
    if precision in ("fp32", "fp64"):
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise UsageError(f"precision fp16 needs a CUDA device, not {device}; use bf16 or fp32 on the CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """All global RNG states as plain values/tensors (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_reduce_sum(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum a few numbers over all processes (metrics); identity in a single process."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


# ----------------------------------------------------------------------------------------- CPU allocator
KEEP_FREED_MEMORY_ENV = "ACTIONBERT_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h> parameter numbers
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel; once per process.

    PyTorch's CPU allocator is plain `malloc`. glibc serves large blocks (a layer's activations: tens of MB) with
    a fresh `mmap` and returns them with `munmap` when freed (or trims the heap), so every forward pass touches
    new pages and pays one page fault per 4 KiB. On the 2-core VM of `benchmarks/README.md` that cost 7-8 ms per
    29 MB activation: 11% (fp32) to 22% (bf16) of a whole R(2+1)D-34 inference call. With `M_MMAP_MAX = 0` (no
    mmap for large blocks) and a 2 GiB `M_TRIM_THRESHOLD` (no trimming), freed blocks stay in the heap and the
    next call reuses them.

    The price: the process keeps its peak memory until it exits. The CLI applies this for its compute commands
    (train, eval, predict, ablate, demo); set `ACTIONBERT_KEEP_FREED_MEMORY=0` to opt out. Child processes
    started by fork (DataLoader workers) inherit it.

    Returns:
        What was done, e.g. "glibc malloc keeps freed memory" or "unchanged: not glibc".
    """
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1").strip() == "0":
        return f"unchanged: {KEEP_FREED_MEMORY_ENV}=0"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "unchanged: the C library is not glibc"
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError) as err:
        return f"unchanged: mallopt not available ({err})"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, _INT_MAX) != 1:
        return "unchanged: mallopt refused the settings"
    return "glibc malloc keeps freed memory (no mmap, no trim)"
