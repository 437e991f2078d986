"""Does the stacked bf16 stem convolution pay on this CPU? Times both forms of `StemConv3d` side by side.

Prints, for ResNeXt-101's stem (7x7x7, 64 frames) and R3D's (3x7x7, 16 frames) at 112x112, batch 1,
channels-last, bf16 autocast: forward and forward+backward milliseconds of the plain `conv3d` and of the stacked
2D form (best of --repeats interleaved rounds), their ratio, and the rule `StemConv3d` applies on this CPU
(stack only with AMX tiles). Run: `python benchmarks/stem.py [--threads N] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actionbert import runtime  # noqa: E402
from actionbert.models.backbones import StemConv3d  # noqa: E402

CASES = {"resnext101 7x7x7, 64 frames": ((7, 7, 7), (3, 3, 3), 64), "r3d 3x7x7, 16 frames": ((3, 7, 7), (1, 3, 3), 16)}


def timers(kernel, padding, frames):
    conv = StemConv3d(3, 64, kernel, stride=(1, 2, 2), padding=padding, bias=False)
    conv = conv.to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 3, frames, 112, 112).contiguous(memory_format=torch.channels_last_3d)

    def run(stacked: bool, backward: bool):
        conv.zero_grad()
        with torch.set_grad_enabled(backward), torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv.forward_stacked(x) if stacked else nn.Conv3d.forward(conv, x)
        if backward:
            y.float().sum().backward()

    return {f"{form} {'fwd+bwd' if bw else 'fwd'}": (lambda s=(form == "stacked"), b=bw: run(s, b))
            for form in ("plain", "stacked") for bw in (False, True)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    units = runtime.cpu_bf16_units()
    print(f"CPU bf16 units: {units or 'none (bf16 emulated)'}; threads {args.threads}; StemConv3d stacks: "
          f"{'yes' if units == 'AMX' else 'no'}\n")
    print("| stem | plain fwd ms | stacked fwd ms | ratio | plain fwd+bwd ms | stacked fwd+bwd ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, case in CASES.items():
        calls = timers(*case)
        for fn in calls.values():
            fn()  # warm-up: primitive creation
        best = {k: float("inf") for k in calls}
        for _ in range(args.repeats):
            for k, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t0)
        ms = {k: v * 1e3 for k, v in best.items()}
        print(f"| {name} | {ms['plain fwd']:.1f} | {ms['stacked fwd']:.1f} | {ms['plain fwd'] / ms['stacked fwd']:.2f}"
              f" | {ms['plain fwd+bwd']:.1f} | {ms['stacked fwd+bwd']:.1f} | "
              f"{ms['plain fwd+bwd'] / ms['stacked fwd+bwd']:.2f} |")
    print("\nratio: plain / stacked time (> 1: stacking pays).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
