"""Run-time environment: device choice, precision choice, torch.distributed (torchrun / DDP), seeding, RNG state
capture and the process's memory allocator.

Devices are chosen at run time ("auto" = CUDA when present, else CPU); no module moves tensors with a hard-coded
CUDA call.
Several processes (GPUs or machines) are started with `torchrun`, which sets RANK / WORLD_SIZE / LOCAL_RANK; the
backend is NCCL on CUDA and gloo on the CPU. Process LOCAL_RANK uses GPU LOCAL_RANK of its machine (choose the
GPUs with CUDA_VISIBLE_DEVICES). Only rank 0 reads and writes the run folder; the prepared dataset and its videos
must be at the same paths on every machine (`prepare` writes absolute video paths).
"""

from __future__ import annotations

import ctypes
import datetime
import io
import os
import platform
import random
import socket
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from actionbert.errors import DistributedError, UsageError
from actionbert.precisions import TRAIN_PRECISIONS


class UnsupportedSetup(UsageError):
    """A device, precision or process layout a command cannot run with; the message names the fix."""


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


def env_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when started without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_kind: str, *, timeout_s: float | None = None) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); otherwise a single process.

    `timeout_s`: how long a collective operation waits for the other processes before it fails (None: the
    backend's default, 30 minutes for gloo).
    """
    if env_world_size() <= 1:
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


@contextmanager
def distributed(device_kind: str) -> Iterator[DistInfo]:
    """`init_distributed` for the duration of a command; the process group is destroyed at the end only if this
    call created it (a caller's own group, e.g. one set up by a script around several commands, is kept)."""
    created = env_world_size() > 1 and not dist.is_initialized()
    info = init_distributed(device_kind)
    try:
        yield info
    finally:
        if created:
            shutdown_distributed()


def single_process_only(command: str, hint: str) -> None:
    """Refuse a command that does not split its work over processes when torchrun started several."""
    world = env_world_size()
    if world > 1:
        raise UnsupportedSetup(f"{command} runs in one process, but torchrun started {world} (WORLD_SIZE={world}): "
                               f"each would do the same work and write the same files; {hint}")


def select_device(name: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """"auto" -> cuda:<local_rank> if CUDA is available, else cpu; otherwise the named device.

    `local_rank` defaults to torchrun's LOCAL_RANK (0 without torchrun). Under torchrun with several processes a
    GPU index ("cuda:1") is refused: every process would use that one GPU. On CUDA, cuDNN autotuning is switched
    on (`cudnn.benchmark`): clip shapes are fixed, so each convolution's fastest algorithm is searched once.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UnsupportedSetup(f"device {name!r} requested but CUDA is not available on this machine")
        world = env_world_size()
        if device.index is not None and world > 1:
            raise UnsupportedSetup(
                f"device {name!r} under torchrun ({world} processes) would put every process on GPU {device.index}; "
                "give device cuda (or auto): process LOCAL_RANK then uses GPU LOCAL_RANK (choose the GPUs with "
                "CUDA_VISIBLE_DEVICES)")
        if device.index is None:
            count = torch.cuda.device_count()
            if local_rank >= count:
                raise UnsupportedSetup(
                    f"process LOCAL_RANK={local_rank} needs GPU {local_rank}, but this machine shows {count} GPU(s); "
                    f"start at most {count} process(es) per machine (torchrun --nproc_per_node {count})")
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
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


def threads_beside_workers(device: torch.device, workers: int) -> int | None:
    """Intra-op threads for a model on the CPU while `workers` decoding processes run beside it: the cores this
    process may use (its share under torchrun) less the workers, at least 1; None where that changes nothing
    (a GPU model, no workers, or no more threads than that already).

    Why: a model keeping one OpenMP thread per core waits, at every parallel region, for the thread whose core a
    decoder holds. Measured 2026-12-01 on 2 cores, `predict --out` over 12 videos of 1-18 s with a decode-bound
    model (r2plus1d_local_tiny): 2 workers beside a 2-thread model ran at 1.03x the rate of decoding in-process,
    beside a 1-thread model at 1.57x.
    """
    if device.type != "cpu" or workers <= 0:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    threads = max(1, share - workers)
    return threads if threads < torch.get_num_threads() else None


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block (nothing changes for None), restored after."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def param_dtype(precision: str) -> torch.dtype:
    """The dtype of weights and inputs: float64 for "fp64", else float32 (bf16/fp16 autocast inside)."""
    return torch.float64 if precision == "fp64" else torch.float32
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer read next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------- precision
# What each device runs fast, by CUDA compute capability (tensor-core generations):
#
# | device                                   | fast precisions | "auto" | slow if asked                     |
# |------------------------------------------|-----------------|--------|-----------------------------------|
# | CUDA >= 8.0 (A100, RTX 30/40, L4, H100)  | bf16, fp16      | bf16   | -                                 |
# | CUDA 7.x (V100, T4, RTX 20)              | fp16            | fp16   | bf16: no bf16 tensor cores, cuDNN |
# |                                          |                 |        | falls back to slow conv3d kernels |
# | CUDA < 7.0 (P100, GTX 10)                | fp32            | fp32   | bf16; fp16 (no tensor cores)      |
# | CPU with AMX or AVX512-BF16              | fp32, bf16      | bf16   | fp16 is refused (GPU only)        |
# | CPU without bf16 instructions (AVX2)     | fp32            | fp32   | bf16 (emulated: 6.6x slower)      |
#
# fp16 trains with a gradient scaler; bf16 needs none. fp32 is exact everywhere and never called slow; fp64
# (training only) is for exactness checks. CPUs: `cpu_bf16_units` / `bf16_is_slow`.
PRECISION_CHOICES = TRAIN_PRECISIONS  # actionbert.precisions: "auto", ..., "fp64" (training only)


def cuda_precision_rule(capability: tuple[int, int]) -> tuple[str, dict[str, str]]:
    """("auto" choice, {slow precision: why}) for a CUDA device of this compute capability (table above)."""
    if capability >= (8, 0):
        return "bf16", {}
    no_bf16 = "it has no bf16 tensor cores (cuDNN falls back to slow conv3d kernels)"
    if capability >= (7, 0):
        return "fp16", {"bf16": no_bf16}
    return "fp32", {"bf16": no_bf16, "fp16": "it has no tensor cores (fp16 may be slower than fp32)"}


def resolve_precision(device: torch.device, requested: str) -> tuple[str, str | None]:
    """(precision to use, a note to show the user once or None): "auto" picks the device's fast precision;
    a precision that runs slowly on this device is kept, with a note naming the fast one. fp16 on a CPU is
    refused (UnsupportedSetup)."""
    if requested not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISION_CHOICES)}")
    if device.type != "cuda":
        if requested == "fp16":
            raise UnsupportedSetup("precision fp16 needs a CUDA device; use bf16 (or auto) on the CPU")
        slow = bf16_is_slow(device)
        if requested == "auto":
            return ("fp32", f"precision auto: fp32 ({slow})") if slow else ("bf16", None)
        if requested == "bf16" and slow:
            return "bf16", f"precision bf16 as asked, but {slow}; --precision fp32 (or auto) is faster here"
        return requested, None
    capability = tuple(torch.cuda.get_device_capability(device))
    where = f"{torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]})"
    fast, slow = cuda_precision_rule(capability)
    if requested == "auto":
        return fast, f"precision auto: {fast} on {where}"
    if requested in slow:
        return requested, (f"precision {requested} runs slowly on {where}: {slow[requested]}; "
                           f"{fast} is its fast precision (--precision {fast} or auto)")
    return requested, None


def autocast(device: torch.device, precision: str):
    """Mixed-precision context: bf16 works on CPU and GPU, fp16 only on GPU; fp32 and fp64 = no autocast."""
    if precision in ("fp32", "fp64"):
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise UnsupportedSetup("precision fp16 needs a CUDA device; use bf16 (or auto) on the CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------------- seeds and RNG
def rank_seed(seed: int, rank: int = 0, epoch: int | None = None) -> int:
    """The seed of process `rank`: `seed` itself for rank 0 (one process runs as it always did), otherwise a
    32-bit seed derived from (seed, rank[, epoch]), so processes draw different dropout and token masks."""
    if rank == 0 and epoch is None:
        return seed
    key = [seed, rank] if epoch is None else [seed, rank, epoch]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def seed_everything(seed: int, *, rank: int = 0, epoch: int | None = None) -> None:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) with `rank_seed(seed, rank, epoch)`."""
    seed = rank_seed(seed, rank, epoch)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device | None = None) -> dict:
    """This process's RNG states as plain values/tensors (loadable with weights_only=True): Python, NumPy, the
    CPU generator and, on CUDA, the generator of this process's own GPU."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore `rng_state` output; the CUDA state goes to this process's GPU (only when it runs on one)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and device is not None and device.type == "cuda":
        if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per visible GPU of rank 0
            cuda = cuda[device.index] if device.index < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def gather_rng_states(device: torch.device, info: DistInfo) -> list[dict] | None:
    """Collective: every process's `rng_state`, in rank order, on rank 0 (None on the others)."""
    return gather_to_main(rng_state(device), info)


def restore_rng_states(saved: list[dict] | dict, device: torch.device, info: DistInfo, *, seed: int,
                       epoch: int) -> str | None:
    """Give each process its own saved RNG states; returns a note when the process counts differ.

    Processes beyond the saved ones start from `seed_everything(seed, rank=r, epoch=epoch)`.
    """
    states = [saved] if isinstance(saved, dict) else list(saved)
    if info.rank < len(states):
        set_rng_state(states[info.rank], device)
    else:
        seed_everything(seed, rank=info.rank, epoch=epoch)
    n, w = len(states), info.world_size
    if n == w:
        return None
    if n < w:
        what = f"processes {n}..{w - 1} start from seeds derived from (seed {seed}, rank, epoch {epoch})"
    else:
        what = f"the states of processes {w}..{n - 1} are not used"
    return (f"resuming a {n}-process checkpoint with {w} process(es): {what}; the data shards and random draws "
            f"from now on are those of a {w}-process run")


# --------------------------------------------------------------------------------------- collectives
def all_reduce_sum(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum a few numbers over all processes (metrics); identity in a single process."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Collective: rank 0's `obj` (tensors and plain values, like a checkpoint) on every process."""
    if not info.enabled:
        return obj
    box = [_to_bytes(obj) if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return _from_bytes(box[0])


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Collective: every process's `obj` (tensors and plain values), in rank order, on rank 0 (None elsewhere)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(_to_bytes(obj), out, dst=0)
    return [_from_bytes(b) for b in out] if info.is_main else None


def _to_bytes(obj: Any) -> bytes:
    # torch.save, not plain pickle: pickle cannot carry every tensor dtype (NumPy's RNG key is uint32), and the
    # receiver loads with weights_only=True, as a checkpoint file
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Collective: copy rank 0's buffers (BatchNorm running statistics) to every process."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def raise_together(error: BaseException | None, device: torch.device, info: DistInfo) -> None:
    """Collective: when any process has an error, every process raises (its own, or one that points to the
    others'), instead of the others waiting at their next collective until the timeout."""
    failed = all_reduce_sum([1.0 if error is not None else 0.0], device, info)[0]
    if error is not None:
        raise error
    if failed:
        raise UnsupportedSetup(f"{int(failed)} other process(es) of this run could not start; see their error "
                               f"(this is rank {info.rank} on {socket.gethostname()})")


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
