"""GPU check (issue 18): run the CUDA paths once, end to end, on one GPU, and print one table.

Steps (in order; a failed step does not stop the others unless they need its output):

- env: torch, CUDA, GPU name and compute capability, GPU count.
- tests: the test suite with CUDA visible (`--suite fast`: without the slow end-to-end tests; `full`; `none`).
- data: a tiny synthetic dataset (`actionbert.data.make_synthetic_dataset`), prepared with its frame cache.
- train/eval/predict in fp32, fp16 and bf16: the CLI commands on a tiny R(2+1)D + BERT (2 epochs).
- resume fp16: 1 more epoch from last.pt (gradient scaler state restored).
- ddp train / ddp resume: 2 processes with torchrun. NCCL on 2+ GPUs; on one GPU both processes share it over
  gloo (NCCL refuses two ranks on one GPU), by a small launcher that opens the gloo group and points both at
  cuda:0. Each process runs in a folder of its own (the run folder is relative), as on machines without a
  shared filesystem: the resume works only if rank 0 reads last.pt and broadcasts it.
- ddp eval: `actionbert eval` sharded over the same 2 processes; its report must equal the 1-process one.
- ddp failed batch: 2 processes, batch 1, one unreadable training video: the stand-in step (SyncBN on 2+ GPUs).
- export: ONNX (or TorchScript without onnx) of the fp32 checkpoint, checked against eager PyTorch.
- speed: the speed benchmark's inference rows (`benchmarks/speed.py`'s models and inputs), on this device:
  eager fp32 (naive) against `prepare_for_inference` in fp32, fp16 and bf16, clips/s (CUDA synchronized);
  eager by default (`--compile`: compiled where it pays, minutes more).
- one line per defect only a GPU shows: cudnn.benchmark on; fp16 BERT finite on CUDA; the precision table's
  choice for this GPU and its measured bf16/fp16 speed ratio; per-process CUDA RNG states in the 2-process
  checkpoint; the auto-compile timer waits for the GPU; validation of the 2-process run equals a 1-process
  evaluation of its last.pt; `--device cuda:0` under torchrun refused in one line.

Run (about 5-8 minutes on one GPU, most of it the test suite):
    python benchmarks/gpu_check.py                 # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run       # anywhere: the plan, nothing run
    python benchmarks/gpu_check.py --device cpu    # the steps that need no GPU, on the CPU (checks this script)
Without CUDA and without --device cpu it says "no CUDA" and exits 0. Exit code 1 when a step failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from actionbert import runtime  # noqa: E402
from actionbert.checkpoint import load_checkpoint  # noqa: E402
from actionbert.cli import main as cli  # noqa: E402

PRECISIONS = ("fp32", "fp16", "bf16")
CONFIG = """
model: {{backbone: r2plus1d_tiny, head: bert, clip_len: 16, input_size: 32}}
data: {{root: {data}, resize: [36, 48], num_workers: 2}}
train: {{out: run, epochs: 2, batch_size: 4, lr: 1.0e-3, seed: 0}}
"""
# one process per torchrun rank, each in a folder of its own (no shared run folder); on a single GPU both open
# a gloo group themselves and use cuda:0 (actionbert then joins that group instead of starting NCCL)
LAUNCHER = """
import os, sys
node = os.path.join(sys.argv[1], "node" + os.environ["RANK"])
os.makedirs(node, exist_ok=True)
os.chdir(node)
if sys.argv[2] == "share-gpu":
    import torch.distributed as dist
    os.environ["LOCAL_RANK"] = "0"
    dist.init_process_group("gloo")
from actionbert.cli import main
code = main(sys.argv[3:])
sys.exit(code)
"""


class Skip(Exception):
    """A step that does not apply here (the reason is its key column)."""


class Ctx:
    def __init__(self, device: str, work: Path, suite: str, quick: bool, compile_speed: bool = False) -> None:
        self.device, self.work, self.suite, self.quick = device, work, suite, quick
        self.compile_speed = compile_speed
        self.cuda = device == "cuda"
        self.gpus = torch.cuda.device_count() if self.cuda else 0
        self.data = work / "prepared"
        self.config = work / "config.yaml"
        self.video = work / "videos"
        self.speed_rows: list[dict] = []

    def run_dir(self, precision: str) -> Path:
        return self.work / f"run_{precision}"

    def need_cuda(self) -> None:
        if not self.cuda:
            raise Skip("needs CUDA")


def quiet_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run an actionbert command in this process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(argv)
    return code, out.getvalue(), err.getvalue()


def ok_cli(argv: list[str]) -> str:
    code, out, err = quiet_cli(argv)
    if code != 0:
        raise RuntimeError(f"actionbert {argv[0]} exited {code}: {(err or out).strip()[-400:]}")
    return out + err


def torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def launcher_args(ctx: Ctx, folder: str) -> list[str]:
    launcher = ctx.work / "launch.py"
    launcher.write_text(LAUNCHER)
    share = "share-gpu" if ctx.cuda and ctx.gpus < 2 else "own-device"
    return [str(launcher), str(ctx.work / folder), share]


# ------------------------------------------------------------------------------------------------ steps
def step_env(ctx: Ctx) -> str:
    if not ctx.cuda:
        return f"torch {torch.__version__}, CPU only"
    cap = torch.cuda.get_device_capability(0)
    return (f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)} "
            f"(cc {cap[0]}.{cap[1]}), {ctx.gpus} GPU(s)")


def step_tests(ctx: Ctx) -> str:
    if ctx.suite == "none":
        raise Skip("--suite none")
    marks = ["-m", "not slow"] if ctx.suite == "fast" else []
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *marks, "tests"],
                          cwd=ROOT, capture_output=True, text=True, timeout=540,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    summary = next((line for line in reversed(proc.stdout.splitlines()) if " in " in line and "passed" in line),
                   proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:])
    if proc.returncode != 0:
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        raise RuntimeError(f"{summary}; {'; '.join(failed[:5])}")
    return summary.strip("= ")


def step_data(ctx: Ctx) -> str:
    from actionbert.data import make_synthetic_dataset, prepare_dataset

    raw = make_synthetic_dataset(ctx.video, num_classes=3, videos_per_class=8, num_frames=24, size=(48, 64),
                                 clip_len=16, seed=0)
    report = prepare_dataset(raw, ctx.data, val_fraction=0.25, seed=0, cache=True, cache_short_side=36)
    ctx.config.write_text(CONFIG.format(data=ctx.data))
    return f"{report.counts['train']} train / {report.counts['val']} val videos"


def step_train(ctx: Ctx, precision: str) -> str:
    if precision == "fp16" and not ctx.cuda:
        code, _, err = quiet_cli(["train", str(ctx.config), "--out", str(ctx.run_dir(precision)), "--precision",
                                  "fp16", "--device", ctx.device, "--quiet"])
        if code == 2 and err.count("\n") == 1 and not ctx.run_dir(precision).exists():
            raise Skip("needs CUDA (refused in one line on the CPU, nothing written)")
        raise RuntimeError(f"fp16 on the CPU: exit {code}, {err.strip()[-300:]}")
    text = ok_cli(["train", str(ctx.config), "--out", str(ctx.run_dir(precision)), "--precision", precision,
                   "--device", ctx.device, "--quiet"])
    history = load_checkpoint(ctx.run_dir(precision) / "last.pt")["history"]
    losses = [r[k] for r in history for k in ("train_loss", "val_loss")]
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite losses {losses}")
    note = " (said: slow here)" if "runs slowly" in text else ""
    return f"val top-1 {history[-1]['val_top1']:.1f}%, loss {history[-1]['train_loss']:.3f}{note}"


def step_eval(ctx: Ctx, precision: str) -> str:
    if not (ctx.run_dir(precision) / "last.pt").is_file():
        raise Skip("no checkpoint")
    out = ctx.work / f"eval_{precision}"
    ok_cli(["eval", str(ctx.run_dir(precision) / "last.pt"), "--data", str(ctx.data), "--views", "0x5",
            "--precision", precision, "--device", ctx.device, "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    if not math.isfinite(report["video"]["top1"]):
        raise RuntimeError("video top-1 is not a number")
    return f"video top-1 {report['video']['top1']:.1f}% on {report['evaluated_videos']} videos"


def step_predict(ctx: Ctx, precision: str) -> str:
    if not (ctx.run_dir(precision) / "last.pt").is_file():
        raise Skip("no checkpoint")
    video = sorted(p for p in ctx.video.rglob("*") if p.suffix in (".mp4", ".avi"))[0]
    code, out, err = quiet_cli(["predict", str(ctx.run_dir(precision) / "last.pt"), str(video), "--json",
                                "--precision", precision, "--device", ctx.device])
    if code != 0:
        raise RuntimeError(err.strip()[-300:])
    top = json.loads(out)[0]["topk"][0]
    if not math.isfinite(top["probability"]):
        raise RuntimeError(f"probability {top['probability']}")
    return f"{video.name}: {top['label']} {top['probability']:.3f}"


def step_resume(ctx: Ctx) -> str:
    precision = "fp16" if ctx.cuda else "bf16"
    run = ctx.run_dir(precision)
    ok_cli(["train", str(ctx.config), "--out", str(run), "--resume", "--epochs", "3", "--quiet"])
    ckpt = load_checkpoint(run / "last.pt")
    scale = ckpt["scaler"].get("scale")
    return f"{precision}: epochs {[r['epoch'] for r in ckpt['history']]}" + (f", loss scale {scale:g}" if scale else "")


def step_ddp_train(ctx: Ctx, resume: bool) -> str:
    args = ["train", str(ctx.config), "--quiet", "--device", ctx.device]
    args += ["--resume", "--epochs", "3"] if resume else []
    proc = torchrun([*launcher_args(ctx, "ddp"), *args], ctx.work)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout).strip()[-600:])
    ckpt = load_checkpoint(ctx.work / "ddp" / "node0" / "run" / "last.pt")
    backend = "NCCL" if ctx.cuda and ctx.gpus >= 2 else "gloo"
    if resume and (ctx.work / "ddp" / "node1" / "run").exists():
        raise RuntimeError("rank 1 wrote a run folder")
    return f"{backend}, epochs {[r['epoch'] for r in ckpt['history']]}, val top-1 {ckpt['history'][-1]['val_top1']:.1f}%"


def step_ddp_eval(ctx: Ctx) -> str:
    model = ctx.work / "ddp" / "node0" / "run" / "last.pt"
    if not model.is_file():
        raise Skip("no 2-process checkpoint")
    out = ctx.work / "eval_ddp"
    proc = torchrun([*launcher_args(ctx, "ddp_eval"), "eval", str(model), "--data", str(ctx.data), "--views",
                     "0x5", "--device", ctx.device, "--out", str(out), "--eager", "--batch-size", "1"], ctx.work)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout).strip()[-600:])
    ok_cli(["eval", str(model), "--data", str(ctx.data), "--views", "0x5", "--device", ctx.device, "--out",
            str(ctx.work / "eval_one"), "--eager", "--batch-size", "1"])
    two, one = (json.loads((d / "report.json").read_text()) for d in (out, ctx.work / "eval_one"))
    if two["predictions"] != one["predictions"] or two["clip"]["num_clips"] != one["clip"]["num_clips"]:
        raise RuntimeError("the 2-process report differs from the 1-process one")
    return f"video top-1 {two['video']['top1']:.1f}% = 1 process, {two['clip']['num_clips']} clips each once"


def step_ddp_failed_batch(ctx: Ctx) -> str:
    """2 processes, batch 1 each, one training video unreadable: the process that draws it runs the stand-in
    step (with SyncBN on 2+ GPUs: its collective with count 0). Must finish, count the failure, stay finite."""
    import csv

    from actionbert.data.cache import CACHE_DIRNAME, cache_file

    broken = ctx.work / "prepared_broken"
    shutil.copytree(ctx.data, broken)
    with open(broken / "train.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    garbage = ctx.work / "garbage.mp4"  # the first training video becomes unreadable (and loses its cache)
    garbage.write_bytes(os.urandom(4096))
    rows[0]["path"] = str(garbage)
    cache_file(broken / CACHE_DIRNAME, rows[0]["video_id"]).unlink(missing_ok=True)
    with open(broken / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    config = ctx.work / "config_broken.yaml"
    config.write_text(CONFIG.format(data=broken).replace("batch_size: 4", "batch_size: 1"))
    sync_bn = ["--sync-bn"] if ctx.cuda and ctx.gpus >= 2 else []
    proc = torchrun([*launcher_args(ctx, "ddp_broken"), "train", str(config), "--quiet", "--epochs", "1",
                     "--device", ctx.device, *sync_bn], ctx.work)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout).strip()[-600:])
    row = load_checkpoint(ctx.work / "ddp_broken" / "node0" / "run" / "last.pt")["history"][-1]
    if row["failures"] < 1 or not math.isfinite(row["train_loss"]):
        raise RuntimeError(f"failures {row['failures']}, train loss {row['train_loss']}")
    return f"{'SyncBN, ' if sync_bn else ''}{row['failures']} failure(s), train loss {row['train_loss']:.3f}"


def step_export(ctx: Ctx) -> str:
    try:
        import onnx  # noqa: F401

        fmt, suffix = "onnx", ".onnx"
    except ImportError:
        fmt, suffix = "torchscript", ".ts"
    text = ok_cli(["export", str(ctx.run_dir("fp32") / "last.pt"), "--format", fmt, "--out",
                   str(ctx.work / f"model{suffix}")])
    return f"{fmt}: max abs diff vs eager " + text.strip().splitlines()[-1].split(":")[-2].strip()


def step_speed(ctx: Ctx) -> str:
    from speed import MODELS, bench_input, bench_model, count_flops

    from actionbert.inference import prepare_for_inference

    device = torch.device(ctx.device)
    keys, batches = (["r18"], [1]) if ctx.quick or not ctx.cuda else (["r18", "r34"], [1, 4])
    best = ""
    for key in keys:
        model = bench_model(key).eval()
        paths = {"naive": model.to(device)}
        for precision in PRECISIONS:
            if precision == "fp16" and not ctx.cuda:
                continue
            paths[precision] = prepare_for_inference(model, precision=precision, device=device,
                                                     compile="auto" if ctx.compile_speed else False)
        for batch in batches:
            x = bench_input(key, batch, seed=batch).to(device)
            flops = count_flops(MODELS[key][1], batch, train=False)
            for name, fn in paths.items():
                seconds = _time_calls(fn, x, device)
                ctx.speed_rows.append({"model": MODELS[key][0], "batch": batch, "path": name,
                                       "clips_per_s": batch / seconds, "tflop_s": flops / seconds / 1e12})
            best = max(ctx.speed_rows[-len(paths):], key=lambda r: r["clips_per_s"])
            best = f"{best['model']} b{batch}: best {best['path']} {best['clips_per_s']:.1f} clips/s"
    return best


def _time_calls(fn, x: torch.Tensor, device: torch.device, repeats: int | None = None) -> float:
    cuda = device.type == "cuda"  # on the CPU this script only checks itself: one warm-up, one timed call
    repeats = repeats or (10 if cuda else 1)
    with torch.inference_mode():
        for _ in range(4 if cuda else 1):  # warm-up: autotuning, "auto" compilation of a heavy shape (2nd call)
            fn(x)
        times = []
        for _ in range(repeats):
            runtime.synchronize(device)
            t0 = time.perf_counter()
            fn(x)
            runtime.synchronize(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------ lines only a GPU shows
def gpu_cudnn_benchmark(ctx: Ctx) -> str:
    ctx.need_cuda()
    torch.backends.cudnn.benchmark = False
    runtime.select_device("cuda")
    if not torch.backends.cudnn.benchmark:
        raise RuntimeError("select_device('cuda') left cudnn.benchmark off")
    return "on after select_device"


def gpu_fp16_bert(ctx: Ctx) -> str:
    ctx.need_cuda()
    from actionbert.models import build_model

    torch.manual_seed(0)
    model = build_model(backbone="r2plus1d_tiny", head="bert", num_classes=5, clip_len=16, input_size=32)
    model = model.to("cuda").eval()
    x = torch.randn(4, 3, 16, 32, 32, device="cuda")
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cuda", dtype=torch.float16):
            half, attention = model.forward_with_attention(x)
    if not (torch.isfinite(half).all() and torch.isfinite(attention).all()):
        raise RuntimeError("non-finite fp16 logits or attention")
    diff = float((half.float() - ref).abs().max() / ref.abs().max())
    if diff > 1e-2:
        raise RuntimeError(f"fp16 logits differ from fp32 by {diff:.1e} (relative)")
    return f"finite, max rel. diff vs fp32 {diff:.1e}"


def gpu_precision_table(ctx: Ctx) -> str:
    """The table's choice for this GPU, and a measurement that it is right: bf16 vs fp16 R(2+1)D-18 forward."""
    ctx.need_cuda()
    from speed import bench_input, bench_model

    device = torch.device("cuda", 0)
    auto, _ = runtime.resolve_precision(device, "auto")
    slow = [p for p in ("bf16", "fp16") if runtime.resolve_precision(device, p)[1]]
    model, x = bench_model("r18").to(device).eval(), bench_input("r18", 4, seed=0).to(device)
    seconds = {}
    for precision, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        seconds[precision] = _time_calls(lambda x, dtype=dtype: _autocast_call(model, x, dtype), x, device)
    ratio = seconds["bf16"] / seconds["fp16"]
    if "bf16" in slow and ratio < 1.2:
        raise RuntimeError(f"the table calls bf16 slow here, but it takes {ratio:.2f}x the fp16 time")
    if auto == "bf16" and ratio > 1.3:
        raise RuntimeError(f"auto picks bf16, but it takes {ratio:.2f}x the fp16 time")
    return f"auto={auto}; slow: {', '.join(slow) or 'none'}; measured bf16/fp16 time {ratio:.2f}"


def _autocast_call(model, x, dtype):
    with torch.autocast("cuda", dtype=dtype):
        return model(x)


def gpu_rng_per_rank(ctx: Ctx) -> str:
    ctx.need_cuda()
    path = ctx.work / "ddp" / "node0" / "run" / "last.pt"
    if not path.is_file():
        raise Skip("no 2-process checkpoint")
    rng = load_checkpoint(path)["rng"]
    if len(rng) != 2 or not all("cuda" in r for r in rng):
        raise RuntimeError(f"expected 2 per-process states with a CUDA entry, got {len(rng)}")
    if torch.equal(rng[0]["cuda"], rng[1]["cuda"]) or torch.equal(rng[0]["torch"], rng[1]["torch"]):
        raise RuntimeError("both processes have the same generator state (one seed for all ranks)")
    return "2 processes, each its own CPU and CUDA state"


def gpu_compile_timer(ctx: Ctx) -> str:
    """The first eager call's time ("auto" compiles a shape when it is >= 0.1 s) must include the GPU's work, not
    only the kernel launches: compare with a synchronized timing of the same call."""
    ctx.need_cuda()
    from speed import bench_input, bench_model

    from actionbert.inference import prepare_for_inference

    device = torch.device("cuda", 0)
    model, x = bench_model("r18"), bench_input("r18", 16, seed=0).to(device)
    prepare_for_inference(model, device=device, compile=False)(x)  # cuDNN autotuning of this shape, done once
    prepared = prepare_for_inference(model, device=device, compile=False)
    prepared(x)
    recorded = prepared.report.eager_shapes[tuple(x.shape)]
    synced = _time_calls(prepared, x, device, repeats=3)
    if recorded < 0.5 * synced:
        raise RuntimeError(f"first-call time {recorded * 1e3:.1f} ms < half the synchronized {synced * 1e3:.1f} ms")
    return f"first call {recorded * 1e3:.1f} ms vs synchronized call {synced * 1e3:.1f} ms"


def gpu_ddp_validation(ctx: Ctx) -> str:
    ctx.need_cuda()
    from actionbert.config import config_from_dict
    from actionbert.models import VideoClassifier
    from actionbert.train import build_datasets, evaluate_loader, make_loader

    path = ctx.work / "ddp" / "node0" / "run" / "last.pt"
    if not path.is_file():
        raise Skip("no 2-process checkpoint")
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    model = VideoClassifier(cfg.model)
    model.load_state_dict(ckpt["model_state"])
    device = torch.device("cuda", 0)
    model = model.to(device, memory_format=torch.channels_last_3d)
    _, val_ds, _ = build_datasets(cfg)
    loader = make_loader(val_ds, batch_size=cfg.train.batch_size, shuffle=False, seed=0, info=runtime.DistInfo(),
                         workers=0)
    one = evaluate_loader(model, loader, device=device, info=runtime.DistInfo(), precision=cfg.train.precision,
                          memory_format=torch.channels_last_3d)
    row = ckpt["history"][-1]
    if row["val_top1"] != one["top1"] or abs(row["val_loss"] - one["loss"]) > 1e-3 * max(1.0, abs(one["loss"])):
        raise RuntimeError(f"reported {row['val_top1']:.1f}% / {row['val_loss']:.5f}, last.pt gives "
                           f"{one['top1']:.1f}% / {one['loss']:.5f}")
    return f"val top-1 {one['top1']:.1f}%, loss {one['loss']:.4f} = reported"


def gpu_device_index_refused(ctx: Ctx) -> str:
    ctx.need_cuda()
    model = ctx.run_dir("fp32") / "last.pt"
    proc = torchrun(["-m", "actionbert", "eval", str(model), "--data", str(ctx.data), "--device", "cuda:0",
                     "--out", str(ctx.work / "refused")], ctx.work, timeout=120)
    if proc.returncode == 0 or "every process on GPU 0" not in proc.stderr:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return "refused in one line"


# ------------------------------------------------------------------------------------------------- plan
def plan(ctx: Ctx) -> list[tuple[str, object]]:
    steps: list[tuple[str, object]] = [("env", step_env), ("tests", step_tests), ("data", step_data)]
    for p in PRECISIONS:
        steps += [(f"train {p}", lambda c, p=p: step_train(c, p)), (f"eval {p}", lambda c, p=p: step_eval(c, p)),
                  (f"predict {p}", lambda c, p=p: step_predict(c, p))]
    steps += [("resume", step_resume), ("ddp train (2 processes)", lambda c: step_ddp_train(c, False)),
              ("ddp resume, rank 0 reads", lambda c: step_ddp_train(c, True)), ("ddp eval (sharded)", step_ddp_eval),
              ("ddp failed batch (4)", step_ddp_failed_batch),
              ("export", step_export), ("speed: inference rows", step_speed),
              ("gpu: cudnn.benchmark (7)", gpu_cudnn_benchmark), ("gpu: fp16 BERT finite (1)", gpu_fp16_bert),
              ("gpu: precision table (5)", gpu_precision_table), ("gpu: per-rank CUDA RNG (2, 3)", gpu_rng_per_rank),
              ("gpu: compile timer synced (7)", gpu_compile_timer),
              ("gpu: ddp val = last.pt (9)", gpu_ddp_validation),
              ("gpu: cuda:0 under torchrun (6)", gpu_device_index_refused)]
    return steps


def table(rows: list[dict]) -> str:
    lines = ["| step | status | seconds | key number |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']:.1f} | {r['key']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="print the steps and exit")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--suite", choices=["fast", "full", "none"], default=None,
                   help="test suite: fast (not slow; default on CUDA), full, none (default on the CPU)")
    p.add_argument("--quick", action="store_true", help="speed rows for R(2+1)D-18 batch 1 only")
    p.add_argument("--compile", action="store_true",
                   help="speed rows with torch.compile where it pays (as predict/eval run; adds minutes of "
                        "compilation); default: the prepared copy run eagerly")
    p.add_argument("--only", nargs="+", metavar="TEXT", help="run only the steps whose name contains one of these")
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed at the end)")
    p.add_argument("--json", type=Path, help="also write the rows (and speed rows) here")
    args = p.parse_args(argv)
    suite = args.suite or ("fast" if args.device == "cuda" else "none")
    ctx = Ctx(args.device, args.work or Path("."), suite, args.quick, args.compile)
    steps = [(n, f) for n, f in plan(ctx) if not args.only or any(t in n for t in args.only)]
    if args.dry_run:
        print("\n".join(f"{i + 1:2d}. {name}" for i, (name, _) in enumerate(steps)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA: nothing to check on this machine (--dry-run lists the steps, --device cpu runs the ones "
              "that need no GPU)")
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    ctx.work, ctx.data, ctx.config, ctx.video = work, work / "prepared", work / "config.yaml", work / "videos"
    os.environ.setdefault("OMP_NUM_THREADS", "4")
    rows = []
    try:
        for name, fn in steps:
            t0 = time.perf_counter()
            try:
                status, key = "ok", fn(ctx)
            except Skip as s:
                status, key = "skip", str(s)
            except Exception as e:  # noqa: BLE001 - a failed step is a row of the table, the others still run
                status, key = "FAIL", f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
            rows.append({"step": name, "status": status, "seconds": time.perf_counter() - t0, "key": key})
            print(f"{status:4s} {name}: {key}", file=sys.stderr, flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    if ctx.speed_rows:
        how = "compiled where it pays" if ctx.compile_speed else "prepared copy run eagerly (--compile to compile)"
        print(f"\nInference on {ctx.device}, medians of synchronized calls; naive = eager fp32 model; fp32/fp16/bf16 ="
              f" prepare_for_inference, {how}.\n\n| model | batch | path | clips/s | TFLOP/s |\n|---|---|---|---|---|")
        for r in ctx.speed_rows:
            print(f"| {r['model']} | {r['batch']} | {r['path']} | {r['clips_per_s']:.1f} | {r['tflop_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "speed": ctx.speed_rows}, indent=2))
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
