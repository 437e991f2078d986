"""Paired comparison of two models evaluated on the same test videos with the same k training seeds.

The question an ablation answers is "is b better than a on this data, and by how much?". Both models are
tested on the same videos, so the comparison is paired: a video both get right (or both get wrong) says
nothing about the difference, only the videos on which they disagree do.

```
per-video predictions of a and b, seeds 1..k -> correctness (k, n) of each, true labels (n,)
  -> d = correct_b - correct_a per (seed, video), averaged over seeds -> per-video difference (n,)
  -> diff (points, b - a) of top-1 and of mean class accuracy
  -> 95% CI: percentile bootstrap over videos (the same resampled videos for every seed of both models)
  -> p: exact McNemar on the discordant (video, seed) pairs pooled over seeds (top-1);
        paired sign-flip randomization test over videos (mean class accuracy)
  -> verdict: "better"/"worse" when the CI excludes 0 AND p < 0.05, otherwise "within noise"
```

What the interval means. The bootstrap resamples videos, so it measures how much the difference would move on
another test set drawn like this one, for these trained models; the seeds are averaged over, not resampled
(with 2-3 seeds a bootstrap over seeds is meaningless), so seed-to-seed variation enters only through the
k runs it averages.

Caveat of the pooled McNemar test. It counts every (video, seed) pair as an independent trial; a hard video
tends to be hard for every seed, so with k > 1 the pairs are positively correlated and the p-value is too small
(`benchmarks/power.py`: with 3 seeds whose paired differences correlate 0.5, p < 0.05 in 17% of simulated
studies without a true difference instead of 5%). The verdict therefore also requires the bootstrap interval,
which resamples whole videos and so accounts for that correlation, to exclude 0 (7% in the same simulation).
With k = 1 it is the classical exact McNemar test.

`required_videos` and `simulate_paired` plan a study: how many videos and seeds a difference of a given size
needs (the README's table; `benchmarks/power.py` checks the formula against simulated studies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np
from scipy.stats import binomtest

METRICS = ("top1", "mean_class_accuracy")
METRIC_NAMES = {"top1": "top-1", "mean_class_accuracy": "mean class accuracy"}
ALPHA = 0.05  # the verdict's significance level; the interval is the matching 95% one
REPLICATES = 5000  # bootstrap (and sign-flip) replicates
_CHUNK = 500  # replicates drawn per step: bounds memory to _CHUNK x n; part of what the seed reproduces

#: How to read a comparison, for reports (ablation.md, the demo's REPORT.md).
METHOD_NOTE = (
    f"diff: b − a in points, on the same test videos and seeds. 95% CI: percentile bootstrap over videos "
    f"({REPLICATES} replicates; each resamples the videos once for every seed of both models). p: for top-1 the "
    f"exact McNemar test on the discordant (video, seed) pairs pooled over seeds (with several seeds too small, as "
    f"a video's seeds are not independent: read it with the CI); for mean class accuracy a paired sign-flip "
    f"randomization test over videos. Verdict: better or worse when the CI excludes 0 and p < {ALPHA}, otherwise "
    f"within noise. The interval is about these trained models on another test set like this one; seed-to-seed "
    f"variation enters only through the seeds averaged.")


@dataclass(frozen=True)
class PairedResults:
    """Per-video correctness of two models on the same videos.

    Args:
        labels: (n,) true class index of each video.
        correct_a, correct_b: (k, n) booleans, row s = training seed s (paired by position).
    """

    labels: np.ndarray
    correct_a: np.ndarray
    correct_b: np.ndarray

    @property
    def videos(self) -> int:
        return int(self.labels.shape[0])

    @property
    def seeds(self) -> int:
        return int(self.correct_a.shape[0])


def paired_results(runs_a: Sequence[Sequence[dict]], runs_b: Sequence[Sequence[dict]],
                   classes: Sequence[str] | None = None) -> PairedResults:
    """Align the per-video predictions of two models (one list per seed, seeds paired by position).

    Args:
        runs_a, runs_b: for each seed, the `predictions` of an evaluation report: dicts with `video_id`,
            `label` and `predicted` (class names).
        classes: keep only videos whose true class is one of these (None: all).

    Only videos evaluated in every run of both models are compared (a video that failed in one run is left
    out of all). Raises ValueError when the seed counts differ, a video's label differs between runs, or no
    video is left.
    """
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError(f"paired comparison needs the same seeds for both models, got {len(runs_a)} and "
                         f"{len(runs_b)} runs")
    maps = [{p["video_id"]: p for p in run} for run in (*runs_a, *runs_b)]
    keep = set(classes) if classes is not None else None
    ids = [v for v in maps[0] if all(v in m for m in maps[1:]) and (keep is None or maps[0][v]["label"] in keep)]
    if not ids:
        raise ValueError("no video was evaluated in every run of both models" + (" in these classes" if keep else ""))
    for v in ids:
        if len({m[v]["label"] for m in maps}) != 1:
            raise ValueError(f"video {v!r} has different true labels in different runs")
    names = sorted({maps[0][v]["label"] for v in ids})
    labels = np.array([names.index(maps[0][v]["label"]) for v in ids])
    correct = np.array([[m[v]["predicted"] == m[v]["label"] for v in ids] for m in maps])  # (2k, n)
    k = len(runs_a)
    return PairedResults(labels=labels, correct_a=correct[:k], correct_b=correct[k:])


def mcnemar(res: PairedResults) -> tuple[int, int, float]:
    """Exact McNemar test on the discordant (video, seed) pairs pooled over seeds (see the module caveat).

    Returns (b, c, p): b pairs where only a is right, c where only b is right, and the two-sided exact binomial
    p-value of c out of b + c under p = 1/2 (1.0 when no pair is discordant).
    """
    b = int((res.correct_a & ~res.correct_b).sum())
    c = int((~res.correct_a & res.correct_b).sum())
    return b, c, mcnemar_p(b, c)


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    return 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5).pvalue)


def _metric_diffs(weights: np.ndarray, d: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """(R, 2) differences in points (top-1, mean class accuracy) for R weightings of the videos.

    Args:
        weights: (R, n) how often each video counts (bootstrap counts, or ones).
        d: (R, n) or (n,) per-video difference b - a, averaged over seeds.
        onehot: (n, C) true class of each video.
    """
    contrib = weights * d  # (R, n)
    top1 = contrib.sum(axis=1) / weights.sum(axis=1)
    hits, support = contrib @ onehot, weights @ onehot  # (R, C) each
    recall = np.divide(hits, support, out=np.full(hits.shape, np.nan), where=support > 0)
    mca = np.nanmean(recall, axis=1)  # over the classes present, as in metrics.classification_report
    return 100.0 * np.stack([top1, mca], axis=1)


def _parts(res: PairedResults) -> tuple[np.ndarray, np.ndarray]:
    d = (res.correct_b.astype(float) - res.correct_a.astype(float)).mean(axis=0)  # (n,)
    onehot = np.eye(int(res.labels.max()) + 1)[res.labels]  # (n, C)
    return d, onehot


def bootstrap_ci(res: PairedResults, *, replicates: int = REPLICATES, seed: int = 0,
                 level: float = 1 - ALPHA) -> np.ndarray:
    """(2, 2) percentile intervals [[lo, hi] top-1, [lo, hi] mean class accuracy] in points.

    Each replicate draws n video indices with replacement once and applies them to every seed of both
    models (the seeds stay paired), via the count of each video in the draw.
    """
    d, onehot = _parts(res)
    n = res.videos
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, replicates, _CHUNK):
        r = min(_CHUNK, replicates - start)
        idx = rng.integers(0, n, size=(r, n))
        counts = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n).reshape(r, n)
        stats.append(_metric_diffs(counts.astype(float), d, onehot))
    tail = (1 - level) / 2
    return np.quantile(np.concatenate(stats), [tail, 1 - tail], axis=0).T


def sign_flip_p(res: PairedResults, *, replicates: int = REPLICATES, seed: int = 0) -> float:
    """Two-sided p-value of the mean-class-accuracy difference by a paired randomization test.

    Under "a and b are exchangeable" swapping the two models on a video (all its seeds together) flips the
    sign of its difference; p = (1 + #{|flipped| >= |observed|}) / (1 + replicates).
    """
    d, onehot = _parts(res)
    ones = np.ones((1, res.videos))
    observed = abs(_metric_diffs(ones, d, onehot)[0, 1])
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, replicates, _CHUNK):
        r = min(_CHUNK, replicates - start)
        signs = rng.choice([-1.0, 1.0], size=(r, res.videos))
        flipped = _metric_diffs(np.ones((r, res.videos)), signs * d, onehot)[:, 1]
        extreme += int((np.abs(flipped) >= observed - 1e-9).sum())
    return (1 + extreme) / (1 + replicates)


def compare(res: PairedResults, *, replicates: int = REPLICATES, seed: int = 0) -> dict[str, dict]:
    """metric -> {"diff", "ci95", "p_value", "videos", "seeds"}: points, b - a (see the module docstring)."""
    d, onehot = _parts(res)
    observed = _metric_diffs(np.ones((1, res.videos)), d, onehot)[0]
    ci = bootstrap_ci(res, replicates=replicates, seed=seed)
    p = {"top1": mcnemar(res)[2], "mean_class_accuracy": sign_flip_p(res, replicates=replicates, seed=seed)}
    return {m: {"diff": float(observed[i]), "ci95": [float(ci[i, 0]), float(ci[i, 1])], "p_value": p[m],
                "videos": res.videos, "seeds": res.seeds} for i, m in enumerate(METRICS)}


def decision(diff_ci: Sequence[float], p_value: float) -> int:
    """+1 (b better), -1 (a better) or 0 (within noise): the CI excludes 0 AND p < ALPHA."""
    lo, hi = diff_ci
    if p_value < ALPHA and (lo > 0 or hi < 0):
        return 1 if lo > 0 else -1
    return 0


def verdict(a: str, b: str, metric: str, result: dict, *, where: str = "") -> str:
    """One line a person can act on, e.g. "top-1: bert − tgap = +2.9 points [+0.8, +5.1], p = 0.010 over
    412 videos × 3 seeds: bert is better on this data"."""
    lo, hi = result["ci95"]
    p = result["p_value"]
    p_text = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    outcome = {1: f"{b} is better on this data", -1: f"{a} is better on this data",
               0: "the difference is within noise"}[decision((lo, hi), p)]
    seeds = result["seeds"]
    return (f"{METRIC_NAMES[metric]}{', ' + where if where else ''}: {b} − {a} = {result['diff']:+.1f} points "
            f"[{lo:+.1f}, {hi:+.1f}], {p_text} over {result['videos']} videos × {seeds} seed"
            f"{'s' if seeds != 1 else ''}: {outcome}")


# ---------------------------------------------------------------------------------------------- planning
def required_videos(diff: float, discordance: float, *, seeds: int = 1, rho: float = 0.0,
                    power: float = 0.8, alpha: float = ALPHA) -> int:
    """Videos needed to detect a true difference `diff` (a proportion, 0.03 = 3 points) with `power`.

    Normal approximation of the paired test on the per-video difference averaged over seeds (the bootstrap
    interval's test; for seeds = 1 it is the usual McNemar sample size, Connor 1987):
    n = (z_{1-alpha/2} sqrt(psi f) + z_power sqrt((psi - diff^2) f))^2 / diff^2, f = (1 + (k - 1) rho) / k.

    Args:
        discordance: psi, the share of (video, seed) pairs on which exactly one model is right.
        seeds: k paired seeds per model.
        rho: correlation between seeds of one video's paired difference (0: seeds as good as new videos,
            1: more seeds add nothing).
    """
    if not 0 < abs(diff) <= discordance <= 1:
        raise ValueError(f"need 0 < |diff| <= discordance <= 1, got diff={diff}, discordance={discordance}")
    f = (1 + (seeds - 1) * rho) / seeds
    z = NormalDist().inv_cdf
    root = z(1 - alpha / 2) * math.sqrt(discordance * f) + z(power) * math.sqrt((discordance - diff ** 2) * f)
    return math.ceil(root ** 2 / diff ** 2)


def simulate_paired(rng: np.random.Generator, *, videos: int, seeds: int, diff: float, discordance: float,
                    rho: float = 0.0, accuracy: float = 0.8, classes: int = 4) -> PairedResults:
    """Synthetic paired results of known truth: per (video, seed) P(only b right) - P(only a right) = diff,
    P(exactly one right) = discordance, and a's accuracy `accuracy`.

    Seeds of one video share its outcome with probability sqrt(rho) each (otherwise they draw afresh), so the
    correlation between two seeds' paired differences is rho. Labels are balanced and independent of the
    outcomes, so the true mean-class-accuracy difference equals `diff` too.
    """
    only_a, only_b = (discordance - diff) / 2, (discordance + diff) / 2
    both = accuracy - only_a
    if min(only_a, both, 1 - both - only_a - only_b) < 0:
        raise ValueError("impossible combination of diff, discordance and accuracy")
    probs = [both, only_a, only_b, 1 - both - only_a - only_b]  # outcomes: both, a only, b only, neither
    shared = rng.choice(4, p=probs, size=videos)  # (n,)
    fresh = rng.choice(4, p=probs, size=(seeds, videos))
    outcome = np.where(rng.random((seeds, videos)) < math.sqrt(rho), shared, fresh)  # (k, n)
    return PairedResults(labels=np.arange(videos) % classes, correct_a=np.isin(outcome, (0, 1)),
                         correct_b=np.isin(outcome, (0, 2)))
