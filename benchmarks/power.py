"""How many test videos and seeds a paired comparison needs: the formula against simulated studies.

Usage: `python benchmarks/power.py [--diff 0.03] [--trials 400] [--replicates 1000]` (a few minutes on 2 cores).

`actionbert.compare.required_videos` gives the number of videos at which a true difference `diff` (0.03 = 3
points of top-1) is called with 80% power, from the normal approximation of the paired test on each video's
seed-averaged difference. Its inputs: psi, the share of (video, seed) pairs on which exactly one model is right
(the discordance rate), k seeds, and rho, the correlation between two seeds' paired differences on one video.

The simulation draws studies of exactly that many videos from `compare.simulate_paired` (known truth: the
given diff, psi and rho, a's accuracy 80%, 4 balanced classes), runs the whole comparison of `actionbert ablate`
(`compare.compare`, with `--replicates` bootstrap and sign-flip draws instead of 5000 to save time) and counts
how often the verdict says "b is better" (power; it should be about 0.80), and, with no true difference, how
often each test rejects (false positives; nominally 0.05): the bootstrap interval alone, the pooled McNemar test
alone, and the verdict, which needs both.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actionbert import compare  # noqa: E402

DISCORDANCE = (0.06, 0.10, 0.20)
DESIGNS = ((1, 0.0), (3, 0.0), (3, 0.5), (5, 0.5))  # (seeds, rho)


def formula_table(diff: float) -> list[str]:
    """Markdown: videos needed for 80% power, per discordance rate (rows) and design (columns)."""
    head = " | ".join(f"k={k}, rho={rho}" for k, rho in DESIGNS)
    lines = [f"| psi | {head} |", "|---|" + "---|" * len(DESIGNS)]
    for psi in DISCORDANCE:
        cells = " | ".join(str(compare.required_videos(diff, psi, seeds=k, rho=rho)) for k, rho in DESIGNS)
        lines.append(f"| {psi:.2f} | {cells} |")
    return lines


def simulate(*, videos: int, seeds: int, diff: float, psi: float, rho: float, trials: int, replicates: int,
             seed: int) -> dict[str, float]:
    """Shares of simulated studies (top-1) in which the CI excludes 0, McNemar's p < 0.05, the verdict calls b
    better, and the verdict calls either model better."""
    rng = np.random.default_rng(seed)
    counts = {"ci": 0, "mcnemar": 0, "better": 0, "called": 0}
    for t in range(trials):
        res = compare.simulate_paired(rng, videos=videos, seeds=seeds, diff=diff, discordance=psi, rho=rho)
        r = compare.compare(res, replicates=replicates, seed=t)["top1"]
        lo, hi = r["ci95"]
        decision = compare.decision(r["ci95"], r["p_value"])
        counts["ci"] += lo > 0 or hi < 0
        counts["mcnemar"] += r["p_value"] < compare.ALPHA
        counts["better"] += decision == 1
        counts["called"] += decision != 0
    return {key: value / trials for key, value in counts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--diff", type=float, default=0.03, help="true difference to detect (0.03 = 3 points)")
    p.add_argument("--trials", type=int, default=400, help="simulated studies per design")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap / sign-flip draws per study")
    args = p.parse_args()
    se = math.sqrt(0.8 * 0.2 / args.trials)
    print(f"Videos for 80% power to detect {100 * args.diff:g} points (formula):\n")
    print("\n".join(formula_table(args.diff)))
    print(f"\nSimulated studies at the formula's video count ({args.trials} each; the power estimate's standard "
          f"error is about {se:.3f} at 0.80). power = share with verdict 'b is better':\n")
    print("| psi | seeds | rho | videos | power (verdict) | CI excludes 0 | McNemar p < 0.05 |")
    print("|---|---|---|---|---|---|---|")
    for psi in (0.10, 0.20):
        for k, rho in ((1, 0.0), (3, 0.5)):
            n = compare.required_videos(args.diff, psi, seeds=k, rho=rho)
            s = simulate(videos=n, seeds=k, diff=args.diff, psi=psi, rho=rho, trials=args.trials,
                         replicates=args.replicates, seed=1)
            print(f"| {psi:.2f} | {k} | {rho} | {n} | {s['better']:.3f} | {s['ci']:.3f} | {s['mcnemar']:.3f} |")
    print(f"\nNo true difference (false positives; nominal {compare.ALPHA}), 400 videos, psi = 0.10:\n")
    print("| seeds | rho | verdict says better or worse | CI excludes 0 | McNemar p < 0.05 |")
    print("|---|---|---|---|---|")
    for k, rho in ((1, 0.0), (3, 0.5), (3, 0.9)):
        s = simulate(videos=400, seeds=k, diff=0.0, psi=0.10, rho=rho, trials=args.trials,
                     replicates=args.replicates, seed=2)
        print(f"| {k} | {rho} | {s['called']:.3f} | {s['ci']:.3f} | {s['mcnemar']:.3f} |")


if __name__ == "__main__":
    main()
