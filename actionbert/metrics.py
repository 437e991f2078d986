"""Classification metrics from logits: top-k, mean class accuracy, per-class precision/recall, confusion matrix.

Pure functions on tensors; `evaluate.py` feeds them video-level (or clip-level) logits.
"""

from __future__ import annotations

from typing import Sequence

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> int:
    """Rows whose label is among the k highest logits; k is clamped to the class count."""
    k = max(1, min(k, logits.shape[1]))
    return int((logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum())


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage of rows whose label is among the k highest logits (NaN for no rows)."""
    if labels.numel() == 0:
        return float("nan")
    return 100.0 * topk_correct(logits, labels, k) / labels.numel()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts; rows are true classes, columns predicted classes."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict:
    """All the numbers of an evaluation, JSON-able.

    Args:
        logits: (N, K) scores (raw logits; averaging views happens before).
        labels: (N,) true class indices.
        classes: K class names.
    """
    k = len(classes)
    preds = logits.argmax(dim=1)
    cm = confusion_matrix(preds, labels, k)
    support = cm.sum(dim=1)
    predicted = cm.sum(dim=0)
    diag = cm.diag()
    recall = torch.where(support > 0, diag / support.clamp(min=1),
                         torch.full_like(diag, float("nan"), dtype=torch.float))
    precision = torch.where(predicted > 0, diag / predicted.clamp(min=1),
                            torch.full_like(diag, float("nan"), dtype=torch.float))
    present = support > 0
    return {
        "num_samples": int(labels.numel()),
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "top5_k": min(5, k),
        "mean_class_accuracy": 100.0 * recall[present].float().mean().item() if present.any() else float("nan"),
        "per_class": [
            {"class": name, "support": int(support[i]), "precision": _pct(precision[i]), "recall": _pct(recall[i])}
            for i, name in enumerate(classes)
        ],
        "confusion_matrix": cm.tolist(),
    }


def _pct(x: torch.Tensor) -> float | None:
    v = float(x)
    return None if v != v else round(100.0 * v, 4)
