"""Speed of actionbert against this machine's own compute limit (issue 6).

What it measures, all in one run so that every ratio compares numbers taken side by side:

1. The dense-compute peak, fp32 and bf16: the best of several large matrix products and channels-last oneDNN
   convolutions (benchmarks/peak.py; the kernel that set it is printed), measured at the start and again at the
   end of the run (the higher of the two is the reference "peak"). A row above 100% is printed with the reason.
2. Inference, for R(2+1)D-34+BERT (32 frames), ResNeXt-101+BERT+FRAB (64 frames) and R(2+1)D-18+BERT
   (16 frames) at 112x112, batch 1 and 4:
   (a) naive: eager fp32, contiguous tensors, `torch.no_grad` (how the reference runs), in a freshly started
       process of its own with the default malloc; every "vs naive" ratio is against this path;
   (a') naive+malloc: the same code in this process, which is set up as the actionbert CLI sets up its
       processes (`runtime.keep_freed_memory`, unless `--malloc default`): what the malloc set-up alone gives;
   (b) default: `actionbert.inference.prepare_for_inference(model)` (BN folded, channels-last 3D, inference
       mode, torch.compile with freezing where it pays), in this process;
   (c) bf16: the same with `precision="bf16"`.
   Clips/s, GFLOP/s (FLOPs of one forward from `torch.utils.flop_counter.FlopCounterMode`, counted on the meta
   device; 1 multiply-add = 2 FLOPs, as for the matrix product) and the fraction of the measured peak of the
   same precision. The paths are timed round-robin (a, a', b, c, a, a', b, c, ...) after warm-up, so machine
   load drifts affect them alike; medians are reported. Compile time is reported apart, never mixed into the
   throughput. Checks: default-path logits equal the naive ones within 1e-4 (max |diff| / max |naive|), and
   bf16 top-1 equals fp32 top-1 on the benchmark clips.
3. One training step (zero_grad + forward + cross-entropy + backward + AdamW step), naive (fp32, contiguous,
   for-loop AdamW; in the baseline process, and again in this process) against bf16 autocast + channels-last,
   and the same with PyTorch's fused AdamW; round-robin, same model and batch.
4. The demo configuration's loader against its training step: clips/s from a DataLoader over the demo's
   synthetic dataset prepared with the decoded-frame cache (`actionbert.demo.make_demo_data`: its classes,
   backbone, sizes, batch and worker count) against clips/s of the demo's fp32 training step; their ratio must
   be >= 3.

Run: `python benchmarks/speed.py` (full run: about 6 minutes on 2 cores), `--quick` for a smoke run,
`--models r34 r18 --batch 1 --repeats 3` for subsets. Prints markdown tables; `--json FILE` saves raw numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actionbert.inference import prepare_for_inference  # noqa: E402 (after the sys.path line)
from actionbert.models import build_model  # noqa: E402
from actionbert.runtime import bf16_is_slow, keep_freed_memory  # noqa: E402
from peak import DTYPES, PeakProbe, dense_peak  # noqa: E402 (benchmarks/peak.py)

MODELS: dict[str, tuple[str, dict]] = {
    "r34": ("R(2+1)D-34+BERT", dict(backbone="r2plus1d_34", head="bert", clip_len=32)),
    "rx101": ("ResNeXt-101+BERT+FRAB", dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frab")),
    "r18": ("R(2+1)D-18+BERT", dict(backbone="r2plus1d_18", head="bert", clip_len=16)),
}
NUM_CLASSES = 51  # HMDB51
SIZE = 112

# Targets of issue 6 (medians on this machine).
TARGET_FP32_PEAK, TARGET_FP32_SPEEDUP = 0.85, 1.5
TARGET_BF16_PEAK, TARGET_BF16_SPEEDUP = 0.75, 3.0
TARGET_TRAIN_SPEEDUP = 2.0
TARGET_LOADER_RATIO = 3.0


# --------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def round_robin(timers: dict[str, Callable[[], float]], repeats: int,
                probe: PeakProbe | None = None) -> dict[str, list[float]]:
    """Run each timer `repeats` times, interleaved (a, b, c, a, b, c, ...); each returns the seconds of one call."""
    times: dict[str, list[float]] = {k: [] for k in timers}
    for _ in range(repeats):
        if probe is not None:
            probe.sample()
        for k, timer in timers.items():
            times[k].append(timer())
    return times


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics (fresh ones are identities in eval mode, which would make
    the folding check vacuous). Speed does not depend on the values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
                m.running_var.copy_(0.8 + 0.45 * torch.rand(n, generator=g))
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
    return model


# ------------------------------------------------------------------------------ the benchmarked calls
def bench_model(key: str) -> nn.Module:
    """The benchmark's model for `key`: same weights in every process (seeded init, then `trained_like`)."""
    torch.manual_seed(0)
    return trained_like(build_model(num_classes=NUM_CLASSES, **MODELS[key][1]))


def bench_input(key: str, batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, MODELS[key][1]["clip_len"], SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def fingerprint(model: nn.Module) -> float:
    """Sum of every weight and buffer in float64: equal in two processes only if they built the same model."""
    return float(sum(t.double().sum() for t in model.state_dict().values()))


def naive_inference(model: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The reference's way: eager fp32, contiguous tensors, no_grad."""
    def call() -> torch.Tensor:
        with torch.no_grad():
            return model(x)
    return call


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                precision: str) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    opt.step()


TRAIN_WARMUP = 2  # untimed steps per path (the first steps of a fresh model and optimizer are slower)

# (precision, memory format, fused AdamW) of each training path; the reference used PyTorch's for-loop AdamW
TRAIN_SETUPS = {"naive": ("fp32", torch.contiguous_format, False),
                "naive+malloc": ("fp32", torch.contiguous_format, False),
                "bf16+cl": ("bf16", torch.channels_last_3d, False),
                "bf16+cl+fused": ("bf16", torch.channels_last_3d, True),
                "fp32+cl": ("fp32", torch.channels_last_3d, False),  # CPUs without bf16 instructions
                "fp32+cl+fused": ("fp32", torch.channels_last_3d, True)}
# actionbert trains in bf16 where the CPU runs it natively, else in fp32 (runtime.bf16_is_slow; the CLI says so)
BF16_SLOW = bf16_is_slow(torch.device("cpu"))
LOW = "fp32" if BF16_SLOW else "bf16"


def train_call(key: str, batch: int, mode: str) -> Callable[[], None]:
    """One training step of `mode` (zero_grad, forward, cross-entropy, backward, AdamW) on a fixed batch."""
    precision, fmt, fused = TRAIN_SETUPS[mode]
    torch.manual_seed(0)
    model = build_model(num_classes=NUM_CLASSES, **MODELS[key][1]).train().to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    x = bench_input(key, batch, seed=1).contiguous(memory_format=fmt)
    y = torch.arange(batch) % NUM_CLASSES
    return lambda: _train_step(model, opt, x, y, precision)


def _baseline_worker(conn, threads: int) -> None:
    """Body of the baseline process: builds the naive call it is asked for and times single calls of it."""
    torch.set_num_threads(threads)
    call: Callable[[], object] | None = None
    while True:
        op, *args = conn.recv()
        try:
            if op == "stop":
                return
            if op == "infer":
                key, batch, seed = args
                model = bench_model(key).eval()
                call = naive_inference(model, bench_input(key, batch, seed))
                out = call()
                call()  # the same 2 warm-up calls as in the main process
                conn.send(("ok", (out, fingerprint(model))))
            elif op == "train":
                call = train_call(*args, mode="naive")
                for _ in range(TRAIN_WARMUP):
                    call()
                conn.send(("ok", None))
            elif op == "time":
                conn.send(("ok", timed(call)))
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as err:  # noqa: BLE001 - reported to the main process, which raises it
            conn.send(("error", f"{type(err).__name__}: {err}"))


class BaselineProcess:
    """The naive baseline in a freshly started Python process ("spawn"), driven over a pipe.

    The reference runs in a plain process, so its baseline must not inherit this process's set-up
    (`keep_freed_memory` changes malloc for the whole process). Calls are timed inside the worker (the pipe is
    never timed) and interleaved with the main process's timings by `round_robin`; the two processes never
    compute at the same time.
    """

    def __init__(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_baseline_worker, args=(child, torch.get_num_threads()), daemon=True)
        self.proc.start()

    def request(self, *msg):
        self.conn.send(msg)
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"baseline process failed on {msg[0]!r}: {value}")
        return value

    def time_one(self) -> float:
        return self.request("time")

    def close(self) -> None:
        self.conn.send(("stop",))
        self.proc.join(timeout=30)


# ------------------------------------------------------------------------------------------------ peak
# ----------------------------------------------------------------------------------------------- FLOPs
def _conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """Convolution backward FLOPs with grouped convolutions counted right.

    torch's formula counts the weight gradient of a grouped convolution as if it were dense (`groups` times too
    many FLOPs: 32x for ResNeXt). For a plain convolution, the input gradient and the weight gradient each cost
    exactly what the forward costs, which uses the weight shape (C_out, C_in / groups, k...) and so is right.
    """
    if transposed:
        return flop_counter.conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation,
                                               transposed, output_padding, groups, output_mask, out_shape)
    forward = flop_counter.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=False)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(kw: dict, batch: int, *, train: bool) -> int:
    """FLOPs of one forward (or forward + backward) at this batch, counted on the meta device (no compute)."""
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    with torch.device("meta"):
        model = build_model(num_classes=NUM_CLASSES, **kw).train(train)
        x = torch.empty(batch, 3, kw["clip_len"], SIZE, SIZE)
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            if train:
                F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
            else:
                model(x)
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------- inference
def bench_inference(key: str, batches: list[int], repeats: int, peaks: dict[str, float],
                    probe_kernels: dict, baseline: BaselineProcess, in_process_naive: bool) -> list[dict]:
    name, kw = MODELS[key]
    torch._dynamo.reset()  # a fresh compile budget (Dynamo's recompile limit) per model
    model = bench_model(key).eval()
    paths = (("default", "fp32"),) if BF16_SLOW else (("default", "fp32"), ("bf16", "bf16"))
    prepared = {mode: prepare_for_inference(model, precision=precision) for mode, precision in paths}
    rows = []
    for batch in batches:
        flops = count_flops(kw, batch, train=False)
        x = bench_input(key, batch, seed=batch)
        calls = {mode: (lambda x=x, m=prepared[mode]: m(x)) for mode in prepared}
        if in_process_naive:
            calls = {"naive+malloc": naive_inference(model, x), **calls}
        outputs, warm = {}, {}
        log(f"  {name} b{batch} naive: warm-up in the baseline process")
        t0 = time.perf_counter()
        outputs["naive"], theirs = baseline.request("infer", key, batch, batch)
        warm["naive"] = time.perf_counter() - t0
        ours = fingerprint(model)
        if theirs != ours:
            raise RuntimeError(f"the baseline process built other weights for {name} ({theirs} != {ours})")
        for mode, fn in calls.items():
            log(f"  {name} b{batch} {mode}: warm-up")
            t0 = time.perf_counter()
            outputs[mode] = fn()
            # "auto" compiles a heavy shape on its 2nd call; then 2 more calls (first runs of new kernels)
            for _ in range(1 if mode.startswith("naive") else 3):
                outputs[mode] = fn()
            warm[mode] = time.perf_counter() - t0
        log(f"  {name} b{batch}: timing {repeats} rounds")
        probe = PeakProbe(probe_kernels)
        timers = {"naive": baseline.time_one, **{k: (lambda fn=fn: timed(fn)) for k, fn in calls.items()}}
        times = round_robin(timers, repeats, probe)
        ref = outputs["naive"]
        base = statistics.median(times["naive"])
        for mode in timers:
            t = statistics.median(times[mode])
            peak = peaks["bf16"] if mode == "bf16" else peaks["fp32"]
            report = getattr(prepared.get(mode), "report", None)
            path = (report.summary() if report else "eager fp32 contiguous, no_grad, "
                    + ("own process, default malloc" if mode == "naive" else "this process"))
            row = {"model": name, "key": key, "batch": batch, "mode": mode, "seconds": t, "times": times[mode],
                   "clips_per_s": batch / t, "gflops_per_clip": flops / batch / 1e9, "gflop_s": flops / t / 1e9,
                   "peak_fraction": flops / t / 1e9 / peak, "speedup": base / t, "warmup_s": warm[mode],
                   "round_peak": probe.median("bf16" if mode == "bf16" else "fp32"),
                   "compile_s": report.compiled_shapes.get(tuple(x.shape), 0.0) if report else 0.0, "path": path}
            if mode in ("default", "naive+malloc"):
                row["rel_diff_vs_naive"] = rel_diff(outputs[mode], ref)
            if mode == "bf16":
                row["rel_diff_vs_naive"] = rel_diff(outputs[mode], ref)
                row["top1_agree"] = int((outputs[mode].argmax(1) == ref.argmax(1)).sum())
                top2 = ref.topk(2, dim=1).values
                row["min_top1_margin"] = float((top2[:, 0] - top2[:, 1]).min())
            rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------- training
def bench_train(key: str, batch: int, repeats: int, peaks: dict[str, float], probe_kernels: dict,
                baseline: BaselineProcess, in_process_naive: bool) -> list[dict]:
    name, _ = MODELS[key]
    flops = count_flops(MODELS[key][1], batch, train=True)
    modes = (["naive+malloc"] if in_process_naive else []) + [f"{LOW}+cl", f"{LOW}+cl+fused"]
    log(f"  {name} train b{batch} naive: warm-up in the baseline process")
    baseline.request("train", key, batch)
    calls = {}
    for mode in modes:
        calls[mode] = train_call(key, batch, mode)
        log(f"  {name} train b{batch} {mode}: warm-up")
        for _ in range(TRAIN_WARMUP):
            calls[mode]()
    log(f"  {name} train b{batch}: timing {repeats} rounds")
    probe = PeakProbe(probe_kernels)
    timers = {"naive": baseline.time_one, **{k: (lambda fn=fn: timed(fn)) for k, fn in calls.items()}}
    times = round_robin(timers, repeats, probe)
    base = statistics.median(times["naive"])
    rows = []
    for mode in timers:
        t = statistics.median(times[mode])
        peak = peaks["bf16"] if mode.startswith("bf16") else peaks["fp32"]
        rows.append({"model": name, "key": key, "batch": batch, "mode": mode, "seconds": t, "times": times[mode],
                     "clips_per_s": batch / t, "gflop_s": flops / t / 1e9, "peak_fraction": flops / t / 1e9 / peak,
                     "speedup": base / t, "gflops_per_clip": flops / batch / 1e9,
                     "round_peak": probe.median("bf16" if mode.startswith("bf16") else "fp32")})
    return rows


# ---------------------------------------------------------------------------------------------- loader
def bench_loader(repeats: int, videos_per_class: int) -> dict:
    """Demo configuration: DataLoader throughput over the demo's cached synthetic dataset (its classes, sizes and
    preprocessing, `videos_per_class` per class) vs the throughput of its training step."""
    from torch.utils.data import DataLoader

    from actionbert.config import resolve
    from actionbert.data import collate_clips
    from actionbert.demo import DemoConfig, base_config, make_demo_data
    from actionbert.train.loaders import build_datasets

    demo = DemoConfig(videos_per_class=videos_per_class)
    workers, precision, channels_last = demo.workers, "fp32", False  # the demo's step where bf16 is emulated
    with tempfile.TemporaryDirectory(prefix="actionbert-speed-") as tmp:
        log(f"  loader: writing the demo's videos ({videos_per_class} per class) and preparing the cache")
        prepared = make_demo_data(demo, Path(tmp))
        dataset, _, classes = build_datasets(base_config(demo, prepared))
        cfg = resolve(base_config(demo, prepared), num_classes=len(classes))
        loader = DataLoader(dataset, batch_size=demo.batch_size, shuffle=True, num_workers=workers,
                            collate_fn=collate_clips, drop_last=True, persistent_workers=workers > 0)

        def epoch() -> int:
            n = 0
            for batch in loader:
                n += batch["video"].shape[0]
            return n

        clips = epoch()  # warm-up: worker start, page cache
        loader_times = [timed(epoch) for _ in range(repeats)]
        loader_rate = clips / statistics.median(loader_times)

        torch.manual_seed(0)
        m = cfg.model
        model = build_model(backbone=m.backbone, head="bert", num_classes=m.num_classes, clip_len=m.clip_len,
                            input_size=m.input_size, dropout=m.dropout, head_options=m.head_options)
        fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        model = model.train().to(memory_format=fmt)
        opt = torch.optim.AdamW(model.parameters(), lr=demo.lr)
        x = next(iter(loader))["video"].contiguous(memory_format=fmt)  # (B, 3, T, S, S)
        y = torch.arange(x.shape[0]) % len(classes)
        steps = max(3, clips // demo.batch_size)

        def step():
            _train_step(model, opt, x, y, precision)

        for _ in range(3):
            step()
        step_times = [timed(step) for _ in range(steps * repeats)]
        model_rate = x.shape[0] / statistics.median(step_times)
        if workers > 0:
            del loader  # stop persistent workers before the folder goes
    return {"config": f"{demo.backbone}+bert, {demo.clip_len}x{demo.crop}x{demo.crop}, resize {demo.resize}, "
                      f"batch {demo.batch_size}, {workers} worker(s), train {precision}"
                      f"{' channels-last' if channels_last else ''}",
            "clips_per_epoch": clips, "loader_clips_per_s": loader_rate, "model_clips_per_s": model_rate,
            "ratio": loader_rate / model_rate}


# ------------------------------------------------------------------------------------------------ report
def md_table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key, "")
            cells.append(format(v, fmt) if fmt and isinstance(v, (int, float)) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (f"{datetime.now():%Y-%m-%d %H:%M}, nproc {os.cpu_count()}, {cpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
            f"load average at start {load[0]:.2f}")


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine from /proc/stat, CPU seconds of this process and its children)."""
    import resource

    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        busy = math.nan
    return busy, own


def print_peaks(start: dict, end: dict, peaks: dict) -> None:
    print("## Peak: best dense kernel per dtype (GFLOP/s; see benchmarks/peak.py)\n\n"
          "| dtype | start of run | end of run | peak used |\n|---|---|---|---|")
    for k in peaks:
        print(f"| {k} | {start[k][0]:.0f} ({start[k][1].label}) | {end[k][0]:.0f} ({end[k][1].label}) "
              f"| {peaks[k]:.0f} |")
    print("\nEvery candidate at the start of the run:\n\n| dtype | kernel | GFLOP/s |\n|---|---|---|")
    for k, (_, _, every) in start.items():
        for label, gflops in every:
            print(f"| {k} | {label} | {gflops:.0f} |")
    print()


def print_over_peak(rows: list[dict]) -> None:
    """Say why, for any row above its dtype's peak: it ran a kernel faster than every candidate of the peak."""
    over = [r for r in rows if r["peak_fraction"] > 1.0]
    for r in over:
        print(f"\nNote: {r['model']} b{r['batch']} {r['mode']} runs at {r['peak_fraction']:.0%} of the peak: its "
              "counted FLOPs are those of direct convolution, so a kernel that does fewer (Winograd, fused "
              "layers) or one faster than every candidate of benchmarks/peak.py lifts it above; the peak "
              "candidates should then gain that kernel.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per measurement (median reported)")
    p.add_argument("--train-batch", type=int, default=1, help="batch of the training-step measurement")
    p.add_argument("--train-models", nargs="+", choices=list(MODELS), default=None,
                   help="models of the training-step measurement (default: --models)")
    p.add_argument("--skip", nargs="*", default=[], choices=["inference", "train", "loader"])
    p.add_argument("--quick", action="store_true", help="smoke run: R(2+1)D-18 only, batch 1, 2 repeats")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--malloc", choices=["keep", "default"], default="keep",
                   help="keep: set the process up as the actionbert CLI does (runtime.keep_freed_memory: glibc "
                        "malloc reuses freed blocks; applies to every path, the naive one included); default: "
                        "leave malloc alone")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batch, args.repeats = ["r18"], [1], 2
    train_models = args.train_models or args.models
    started = time.perf_counter()
    busy0, own0 = cpu_seconds()
    malloc = keep_freed_memory() if args.malloc == "keep" else "unchanged: --malloc default"
    info = f"{machine()}, malloc: {malloc}"
    print(f"# actionbert speed benchmark\n\n{info}\n")

    log("peak: dense kernels (matrix products, channels-last convolutions)")
    dtypes = {k: dt for k, dt in DTYPES.items() if not (k == "bf16" and BF16_SLOW)}
    if BF16_SLOW:
        print(f"bf16 rows skipped: {BF16_SLOW}; actionbert trains in fp32 here.\n")
    peak_start = {k: dense_peak(dt, quick=args.quick) for k, dt in dtypes.items()}
    results: dict = {"machine": info, "peak_start": {k: (v[0], v[1].label, v[2]) for k, v in peak_start.items()}}
    provisional = {k: v[0] for k, v in peak_start.items()}
    probe_kernels = {k: v[1] for k, v in peak_start.items()}  # the kernel that set each dtype's peak
    inference, training, loader = [], [], None
    in_process_naive = args.malloc == "keep"  # else the in-process naive path would equal the baseline's
    baseline = BaselineProcess() if {"inference", "train"} - set(args.skip) else None
    try:
        if "inference" not in args.skip:
            for key in args.models:
                log(f"inference: {MODELS[key][0]}")
                inference += bench_inference(key, args.batch, args.repeats, provisional, probe_kernels, baseline,
                                             in_process_naive)
        if "train" not in args.skip:
            for key in train_models:
                log(f"training step: {MODELS[key][0]}")
                training += bench_train(key, args.train_batch, args.repeats, provisional, probe_kernels, baseline,
                                        in_process_naive)
    finally:
        if baseline is not None:
            baseline.close()
    if "loader" not in args.skip:
        log("loader vs model: demo configuration")
        loader = bench_loader(args.repeats, videos_per_class=4 if args.quick else 8)

    log("peak: dense kernels again")
    peak_end = {k: dense_peak(dt, quick=args.quick) for k, dt in dtypes.items()}
    peaks = {k: max(peak_start[k][0], peak_end[k][0]) for k in peak_start}
    for row in inference + training:  # fractions against the higher of the two peak measurements
        row["peak_fraction"] = row["gflop_s"] / (peaks["bf16"] if row["mode"].startswith("bf16") else peaks["fp32"])
        row["round_peak_fraction"] = row["gflop_s"] / row["round_peak"]
    results.update(peak_end={k: (v[0], v[1].label, v[2]) for k, v in peak_end.items()}, peak=peaks, inference=inference, training=training, loader=loader)

    print_peaks(peak_start, peak_end, peaks)
    if inference:
        print("\n## Inference (112x112; medians of round-robin timings)\n")
        print(md_table(inference, [("model", "model", ""), ("batch", "batch", "d"), ("mode", "path", ""),
                                   ("gflops_per_clip", "GFLOP/clip", ".1f"), ("clips_per_s", "clips/s", ".2f"),
                                   ("gflop_s", "GFLOP/s", ".0f"), ("peak_fraction", "of peak", ".0%"),
                                   ("round_peak_fraction", "of round peak", ".0%"), ("speedup", "vs naive", ".2f"),
                                   ("compile_s", "compile s", ".0f")]))
        print("\nof peak: fp32 paths against the fp32 peak, bf16 against the bf16 peak (the higher of start and end). "
              "of round peak: against the median matrix-product rate sampled inside the same timing rounds. "
              "compile s: first compiled call of that shape (compilation + one run), not included in clips/s.")
    if training:
        print("\n## Training step (forward + backward + AdamW; medians of round-robin timings)\n")
        print(md_table(training, [("model", "model", ""), ("batch", "batch", "d"), ("mode", "path", ""),
                                  ("gflops_per_clip", "GFLOP/clip", ".1f"), ("clips_per_s", "clips/s", ".3f"),
                                  ("gflop_s", "GFLOP/s", ".0f"), ("peak_fraction", "of peak", ".0%"),
                                  ("round_peak_fraction", "of round peak", ".0%"), ("speedup", "vs naive", ".2f")]))
    if loader:
        print(f"\n## Loader vs model (demo: {loader['config']})\n")
        print(f"| loader clips/s | training-step clips/s | ratio |\n|---|---|---|\n"
              f"| {loader['loader_clips_per_s']:.1f} | {loader['model_clips_per_s']:.1f} | {loader['ratio']:.1f} |")

    print_over_peak(inference + training)
    print("\n## Checks and targets\n")
    for r in inference:
        if r["mode"] in ("default", "naive+malloc"):
            print(f"- {r['model']} b{r['batch']}: {r['mode']} vs naive max rel. diff {r['rel_diff_vs_naive']:.1e} "
                  f"({verdict(r['rel_diff_vs_naive'] <= 1e-4)}: <= 1e-4)")
        if r["mode"] == "bf16":
            print(f"- {r['model']} b{r['batch']}: bf16 top-1 agrees with fp32 on {r['top1_agree']}/{r['batch']} "
                  f"clips (smallest fp32 top-1 margin {r['min_top1_margin']:.3g}; rel. diff "
                  f"{r['rel_diff_vs_naive']:.1e})")
    for r in inference:
        if r["key"] == "r34" and r["batch"] == 1 and r["mode"] in ("default", "bf16"):
            bf16 = r["mode"] == "bf16"
            peak_t, speed_t = (TARGET_BF16_PEAK, TARGET_BF16_SPEEDUP) if bf16 else (TARGET_FP32_PEAK,
                                                                                    TARGET_FP32_SPEEDUP)
            same = next((n for n in inference if n["key"] == r["key"] and n["batch"] == r["batch"]
                         and n["mode"] == "naive+malloc"), None)
            extra = f"; {same['seconds'] / r['seconds']:.2f}x the naive path run in this process" if same else ""
            print(f"- target {r['model']} b1 {r['mode']}: {r['peak_fraction']:.0%} of the {'bf16' if bf16 else 'fp32'}"
                  f" peak ({verdict(r['peak_fraction'] >= peak_t)}: >= {peak_t:.0%}; {r['round_peak_fraction']:.0%} "
                  f"of the round peak); {r['speedup']:.2f}x naive ({verdict(r['speedup'] >= speed_t)}: >= {speed_t}x)"
                  f"{extra}")
    for r in training:  # actionbert's training step: bf16 (fp32 without bf16 instructions) + channels-last, fused
        if r["mode"] == f"{LOW}+cl+fused":
            loop = next((f for f in training if f["key"] == r["key"] and f["mode"] == f"{LOW}+cl"), None)
            same = next((f for f in training if f["key"] == r["key"] and f["mode"] == "naive+malloc"), None)
            extra = f"; with the for-loop AdamW {loop['speedup']:.2f}x" if loop else ""
            if same:
                extra += f"; {same['seconds'] / r['seconds']:.2f}x the naive step run in this process"
            print(f"- target training step {r['model']} b{r['batch']}: actionbert's step ({LOW}, channels-last, fused "
                  f"AdamW) {r['speedup']:.2f}x the naive fp32 step ({verdict(r['speedup'] >= TARGET_TRAIN_SPEEDUP)}:"
                  f" >= {TARGET_TRAIN_SPEEDUP}x){extra}")
    if loader:
        ok = verdict(loader["ratio"] >= TARGET_LOADER_RATIO)
        print(f"- target loader / model (demo): {loader['ratio']:.1f} ({ok}: >= {TARGET_LOADER_RATIO})")
    minutes = (time.perf_counter() - started) / 60
    busy1, own1 = cpu_seconds()
    others = max(0.0, (busy1 - busy0) - (own1 - own0))
    share = others / (minutes * 60 * (os.cpu_count() or 1))
    print(f"\nTotal run time {minutes:.1f} min. Other processes used {others:.0f} CPU-seconds during the run "
          f"({share:.0%} of the machine's {os.cpu_count()} cores); this run used {own1 - own0:.0f}.")
    results["other_processes_cpu_share"] = share
    results["minutes"] = minutes
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
