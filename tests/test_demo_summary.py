"""The demo's headline numbers: group accuracy from per-class rows, mean and std over seeds, summary.json's shape."""

import statistics

import pytest

from actionbert.demo_summary import (group_accuracy, mean_std, per_class_by_head, pooled_std, summarize,
                                     summary_table, temporal_summary)

CLASSES = ["red_then_blue", "blue_then_red", "red_twice", "slide_left"]


def rows(recalls, support=(10, 10, 10, 20)):
    return [{"class": c, "support": s, "recall": r} for c, s, r in zip(CLASSES, support, recalls)]


def report(recalls, reversed_recalls):
    return {"video": {"per_class": rows(recalls)},
            "temporal_check": {"reversed": {"per_class": rows(reversed_recalls)},
                               "shuffled": {"per_class": rows([50.0] * 4)}}}


# per seed: the order-only pair, then the controls; seeds listed out of order (seed2 first)
EVALUATIONS = {
    "x/head-tgap/seed2": report([60.0, 40.0, 100.0, 90.0], [40.0, 60.0, 100.0, 0.0]),
    "x/head-tgap/seed0": report([50.0, 50.0, 100.0, 100.0], [50.0, 50.0, 100.0, 0.0]),
    "x/head-tgap/seed1": report([40.0, 50.0, 90.0, 100.0], [60.0, 40.0, 90.0, 0.0]),
    "x/head-bert/seed0": report([100.0, 100.0, 100.0, 95.0], [0.0, 10.0, 100.0, 0.0]),
    "x/head-bert/seed1": report([90.0, 100.0, 100.0, 100.0], [0.0, 0.0, 100.0, 0.0]),
    "x/head-bert/seed2": report([100.0, 90.0, 90.0, 100.0], [10.0, 0.0, 90.0, 0.0]),
}


def test_group_accuracy_weights_classes_by_their_videos():
    assert group_accuracy(rows([0.0, 100.0, 50.0, 100.0]), ["red_then_blue", "blue_then_red"]) == 50.0
    assert group_accuracy(rows([0.0, 100.0, 50.0, 100.0]), ["red_twice", "slide_left"]) == pytest.approx(250 / 3)
    assert group_accuracy(rows([0.0] * 4, support=(0, 0, 10, 10)), ["red_then_blue"]) is None


def test_summary_json_shape_and_numbers():
    summary = summarize(EVALUATIONS, CLASSES, seconds=123.456)
    assert list(summary) == ["seeds", "seconds", "order_only", "control", "all"]
    assert summary["seeds"] == 3 and summary["seconds"] == 123.5
    tgap = summary["order_only"]["tgap"]
    assert list(tgap) == ["per_seed", "mean", "std"] and list(summary["order_only"]) == ["tgap", "bert"]
    assert tgap["per_seed"] == [50.0, 45.0, 50.0]  # seed order: 0, 1, 2
    assert tgap["mean"] == pytest.approx(145 / 3, abs=1e-4)
    assert tgap["std"] == pytest.approx(statistics.stdev([50.0, 45.0, 50.0]), abs=1e-4)  # ddof=1
    assert summary["control"]["bert"]["per_seed"] == pytest.approx([(100 * 10 + 95 * 20) / 30, 100.0,
                                                                     (90 * 10 + 100 * 20) / 30], abs=1e-4)
    assert summary["all"]["tgap"]["per_seed"][0] == pytest.approx((50 * 10 + 50 * 10 + 100 * 10 + 100 * 20) / 50)
    assert mean_std([70.0])["std"] is None and mean_std([None, None])["mean"] is None


def test_temporal_check_and_table():
    temporal = temporal_summary(EVALUATIONS, CLASSES)
    assert temporal["reversed"]["bert"]["per_seed"] == [5.0, 0.0, 5.0]
    assert temporal["reversed"]["tgap"]["mean"] == 50.0 and temporal["shuffled"]["bert"]["mean"] == 50.0
    summary = summarize(EVALUATIONS, CLASSES, seconds=1.0)
    lines = summary_table(summary, temporal)
    assert lines[2].startswith("| tgap | 48.3 ± 2.9 |") and lines[3].startswith("| bert | 96.7 ± 2.9 |")
    a, b = summary["order_only"]["tgap"], summary["order_only"]["bert"]
    assert pooled_std(a, b) == pytest.approx(2.8868, abs=1e-3)
    assert "- BERT − TGAP, order-only classes: +48.3 points = 16.7 x the pooled seed std (2.89)" in lines
    assert per_class_by_head(EVALUATIONS)["tgap"]["red_then_blue"] == [50.0, 40.0, 60.0]
