"""Paired comparison of two models (actionbert.compare) and its use by the ablation: NumPy only, seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actionbert import compare
from actionbert.ablate import AblationRow, comparable_pairs, grid_comparisons
from actionbert.compare import PairedResults

ITEM_KEYS = {"factor", "a", "b", "metric", "diff", "ci95", "p_value", "videos", "seeds", "verdict"}


def _results(labels, correct_a, correct_b) -> PairedResults:
    return PairedResults(labels=np.array(labels), correct_a=np.array(correct_a, dtype=bool),
                         correct_b=np.array(correct_b, dtype=bool))


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    # Known truth: per (video, seed) b is right where a is wrong 5 points more often than the reverse; 200 videos,
    # 3 seeds whose paired differences correlate (rho 0.5), balanced classes -> true diff 5 points in both metrics.
    # Measured coverage with these seeds: 0.945 (top-1) and 0.939 (mean class accuracy) over 800 trials; a longer
    # run (4000 trials, 1000 replicates) gives 0.945 / 0.941: at 200 videos the percentile interval runs half a
    # point to one point short of 95%.
    rng = np.random.default_rng(7)
    trials, covered = 800, np.zeros(2)
    for t in range(trials):
        res = compare.simulate_paired(rng, videos=200, seeds=3, diff=0.05, discordance=0.2, rho=0.5)
        ci = compare.bootstrap_ci(res, replicates=500, seed=t)  # (2, 2): [lo, hi] per metric
        covered += (ci[:, 0] <= 5.0) & (5.0 <= ci[:, 1])
    coverage = covered / trials
    tolerance = 3 * math.sqrt(0.95 * 0.05 / trials)  # 3 binomial standard deviations of the estimate: 0.023
    assert np.all(np.abs(coverage - 0.95) < tolerance), coverage


def test_simulated_truth_has_the_requested_difference_discordance_and_correlation():
    res = compare.simulate_paired(np.random.default_rng(0), videos=100_000, seeds=3, diff=0.05, discordance=0.2,
                                  rho=0.5, accuracy=0.8)
    d = res.correct_b.astype(float) - res.correct_a  # (k, n)
    assert d.mean() == pytest.approx(0.05, abs=0.003)
    assert (d != 0).mean() == pytest.approx(0.2, abs=0.003)
    assert res.correct_a.mean() == pytest.approx(0.8, abs=0.003)
    assert np.corrcoef(d[0], d[1])[0, 1] == pytest.approx(0.5, abs=0.02)


def test_mcnemar_p_values_equal_the_exact_binomial_by_hand():
    for n in (1, 5, 12):
        assert compare.mcnemar_p(0, n) == pytest.approx(2 * 0.5 ** n)  # all discordant pairs favour b
        assert compare.mcnemar_p(n, 0) == pytest.approx(2 * 0.5 ** n)
    assert compare.mcnemar_p(3, 7) == pytest.approx(2 * (1 + 10 + 45 + 120) / 1024)  # 2 P(X <= 3), X ~ B(10, 1/2)
    assert compare.mcnemar_p(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert compare.mcnemar_p(4, 4) == 1.0 and compare.mcnemar_p(0, 0) == 1.0


def test_mcnemar_pools_the_discordant_pairs_of_every_seed():
    # seed 0: b right alone on 2 videos; seed 1: b right alone on 1, a right alone on 1 -> b = 1, c = 3
    res = _results([0, 1, 0, 1], [[1, 0, 0, 1], [0, 1, 1, 0]], [[1, 1, 1, 1], [1, 0, 1, 0]])
    assert compare.mcnemar(res) == (1, 3, pytest.approx(2 * (1 + 4) / 16))


def test_differences_in_both_metrics_by_hand():
    # class 0: a 1 of 3 right, b 2 of 3; class 1: both right -> top-1 50 -> 75, mean class acc 66.7 -> 83.3
    res = _results([0, 0, 0, 1], [[1, 0, 0, 1]], [[1, 1, 0, 1]])
    out = compare.compare(res, replicates=200)
    assert out["top1"]["diff"] == pytest.approx(25.0)
    assert out["mean_class_accuracy"]["diff"] == pytest.approx(100 / 6)
    assert out["top1"]["p_value"] == 1.0  # one discordant pair: p = 2 * 0.5
    assert (out["top1"]["videos"], out["top1"]["seeds"]) == (4, 1)


def test_identical_heads_give_an_interval_at_zero_and_within_noise():
    rng = np.random.default_rng(3)
    correct = rng.random((3, 300)) < 0.7
    res = PairedResults(labels=np.arange(300) % 5, correct_a=correct, correct_b=correct.copy())
    out = compare.compare(res, replicates=500)
    for metric, r in out.items():
        assert r["diff"] == 0 and r["ci95"] == [0.0, 0.0] and r["p_value"] == 1.0
        assert compare.verdict("tgap", "bert", metric, r).endswith("the difference is within noise")


def test_equally_good_heads_with_independent_errors_are_within_noise():
    res = compare.simulate_paired(np.random.default_rng(11), videos=400, seeds=3, diff=0.0, discordance=0.2,
                                  rho=0.3)  # one draw of equally good heads
    out = compare.compare(res, replicates=1000)
    for metric, r in out.items():
        assert r["ci95"][0] < 0 < r["ci95"][1]
        assert compare.decision(r["ci95"], r["p_value"]) == 0


def test_a_clear_difference_is_called_and_the_result_is_deterministic():
    res = compare.simulate_paired(np.random.default_rng(5), videos=400, seeds=3, diff=0.08, discordance=0.15)
    one, two = compare.compare(res, seed=1), compare.compare(res, seed=1)
    assert one == two
    line = compare.verdict("tgap", "bert", "top1", one["top1"])
    assert line.startswith("top-1: bert − tgap = +") and "over 400 videos × 3 seeds" in line
    assert line.endswith("bert is better on this data")
    flipped = PairedResults(res.labels, res.correct_b, res.correct_a)
    assert compare.verdict("tgap", "bert", "top1", compare.compare(flipped)["top1"]).endswith(
        "tgap is better on this data")


def test_verdict_rule_needs_both_the_interval_and_the_p_value():
    assert compare.decision((0.5, 3.0), 0.01) == 1
    assert compare.decision((-3.0, -0.5), 0.01) == -1
    assert compare.decision((0.5, 3.0), 0.2) == 0  # interval excludes 0, test does not reject
    assert compare.decision((-0.5, 3.0), 0.01) == 0  # test rejects, interval includes 0


def _preds(ids, labels, predicted):
    return [{"video_id": v, "label": y, "predicted": p} for v, y, p in zip(ids, labels, predicted)]


def test_paired_results_align_videos_drop_failures_and_select_classes():
    ids, labels = ["v1", "v2", "v3"], ["run", "run", "jump"]
    a = [_preds(ids, labels, ["run", "jump", "jump"])]
    b = [_preds(ids[:2], labels[:2], ["run", "run"])]  # v3 failed in b's run: left out of both
    res = compare.paired_results(a, b)
    assert res.videos == 2 and res.correct_a.tolist() == [[True, False]] and res.correct_b.tolist() == [[True, True]]
    assert compare.paired_results(a, a, classes=["jump"]).videos == 1
    with pytest.raises(ValueError, match="same seeds"):
        compare.paired_results(a, b + b)
    with pytest.raises(ValueError, match="different true labels"):
        compare.paired_results(a, [_preds(ids, ["jump", "run", "jump"], labels)])
    with pytest.raises(ValueError, match="no video"):
        compare.paired_results(a, b, classes=["swim"])


def test_required_videos_formula_and_its_limits():
    z = 1.959964, 0.841621
    by_hand = (z[0] * math.sqrt(0.1) + z[1] * math.sqrt(0.1 - 0.03 ** 2)) ** 2 / 0.03 ** 2
    assert compare.required_videos(0.03, 0.1) == math.ceil(by_hand) == 870
    assert compare.required_videos(0.03, 0.1, seeds=3, rho=1.0) == 870  # copies of one seed add nothing
    assert compare.required_videos(0.03, 0.1, seeds=3, rho=0.0) == math.ceil(by_hand / 3)
    with pytest.raises(ValueError):
        compare.required_videos(0.3, 0.1)


def _row(values: dict, correct_by_seed: list[list[int]]) -> AblationRow:
    ids = [f"v{i}" for i in range(len(correct_by_seed[0]))]
    labels = ["run" if i % 2 else "jump" for i in range(len(ids))]
    runs = [_preds(ids, labels, [y if ok else "other" for y, ok in zip(labels, seed)]) for seed in correct_by_seed]
    return AblationRow(values=values, predictions=runs)


def test_ablation_comparison_items_have_the_promised_shape():
    rows = [_row({"model.head": "tgap"}, [[1, 0, 1, 0, 1, 1], [1, 0, 0, 0, 1, 1]]),
            _row({"model.head": "bert"}, [[1, 1, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1]])]
    items, notes = grid_comparisons(rows)
    assert not notes and [i["metric"] for i in items] == ["top1", "mean_class_accuracy"]
    for item in items:
        assert set(item) == ITEM_KEYS
        assert (item["factor"], item["a"], item["b"], item["videos"], item["seeds"]) == ("model.head", "tgap", "bert",
                                                                                          6, 2)
        assert len(item["ci95"]) == 2 and 0 <= item["p_value"] <= 1 and item["verdict"].count("bert − tgap") == 1
    assert items[0]["diff"] == pytest.approx(100 * 3 / 12)  # bert right on 3 more of 12 (video, seed) pairs


def test_a_two_factor_grid_compares_each_factor_at_each_value_of_the_other():
    grid = [{"model.head": h, "model.reduction": r} for h in ("tgap", "bert") for r in ("frmb", "frab")]
    rows = [_row(v, [[1, 0, 1, 0]]) for v in grid]
    pairs = [(f, a.values[f], b.values[f], {k: v for k, v in a.values.items() if k != f})
             for f, a, b in comparable_pairs(rows)]
    assert pairs == [("model.head", "tgap", "bert", {"model.reduction": "frmb"}),
                     ("model.head", "tgap", "bert", {"model.reduction": "frab"}),
                     ("model.reduction", "frmb", "frab", {"model.head": "tgap"}),
                     ("model.reduction", "frmb", "frab", {"model.head": "bert"})]
    items, _ = grid_comparisons(rows)
    assert len(items) == 8 and all(set(i) == ITEM_KEYS | {"at"} for i in items)
    assert "top-1, reduction=frmb: bert − tgap = +0.0 points" in items[0]["verdict"]
    rows[0].predictions.clear()  # a grid point without per-video results is named, not compared
    items, notes = grid_comparisons(rows)
    assert len(items) == 4 and len(notes) == 2 and "no per-video results" in notes[0]
