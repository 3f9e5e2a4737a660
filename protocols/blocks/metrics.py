"""Evaluation metrics computed on shares, each with its plaintext twin.

Only the metrics are revealed, never a prediction. Counts are divided by the
public row count before any secret division, so every secret divisor lies in
(0, 1], where CrypTen's Newton-Raphson reciprocal is accurate.
"""

from __future__ import annotations

from typing import Any

import torch

BINARY_METRICS = ("accuracy", "precision", "recall", "f1", "auc", "confusion_matrix")


def binary_metrics(scores: Any, labels: Any) -> dict[str, Any]:
    """Confusion matrix, accuracy, precision, recall, F1 and ROC AUC of logits, as shares.

    `scores` are logits (class 1 when > 0), `labels` 0/1, both (n, 1) CrypTen tensors.
    """
    import crypten

    n = scores.size(0)
    predicted = scores > 0  # sigmoid(logit) > 1/2
    tp = (predicted * labels).sum()
    fp = predicted.sum() - tp
    positives = labels.sum()
    fn = positives - tp
    tn = n - tp - fp - fn
    eps = 1e-4
    precision = (tp / n) / ((tp + fp) / n + eps)
    recall = (tp / n) / (positives / n + eps)
    f1 = (precision * recall * 2) / (precision + recall + eps)
    # AUC = P(score of a positive > score of a negative) over all pairs [Mann-Whitney 1947]
    s = scores.reshape(-1)
    yv = labels.reshape(-1)
    greater = s.unsqueeze(1) > s.unsqueeze(0)  # greater[i, j] = s_i > s_j
    pairs = yv.unsqueeze(1) * (1 - yv).unsqueeze(0)
    share_pos = positives / n
    auc = ((greater * pairs).sum() / (n * n)) / (share_pos * (1 - share_pos) + eps / n)
    confusion = crypten.stack([v.reshape(1) for v in (tn, fp, fn, tp)]).reshape(2, 2)
    return {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
            "auc": auc, "confusion_matrix": confusion}


def binary_metrics_plain(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """The same metrics of logits in float64."""
    pred = (scores > 0).double()
    labels = labels.double()
    tp = float((pred * labels).sum())
    fp = float(pred.sum()) - tp
    pos = float(labels.sum())
    fn = pos - tp
    n = labels.shape[0]
    tn = n - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    s, yv = scores.reshape(-1), labels.reshape(-1)
    greater = (s.unsqueeze(1) > s.unsqueeze(0)).double()
    auc = float((greater * (yv.unsqueeze(1) * (1 - yv).unsqueeze(0))).sum()) / max(
        pos * (n - pos), 1.0)
    return {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
            "auc": auc, "confusion_matrix": [[tn, fp], [fn, tp]]}


def as_plain(revealed: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Revealed metric tensors as numbers (scalars) and nested lists (matrices)."""
    return {k: float(v.item()) if v.numel() == 1 else v.tolist() for k, v in revealed.items()}


def confusion(scores: Any, labels: Any) -> Any:
    """The 2x2 confusion matrix [[tn, fp], [fn, tp]] of logits, as shares (no AUC)."""
    import crypten

    n = scores.size(0)
    predicted = scores > 0
    tp = (predicted * labels).sum()
    fp = predicted.sum() - tp
    fn = labels.sum() - tp
    tn = n - tp - fp - fn
    return crypten.stack([v.reshape(1) for v in (tn, fp, fn, tp)]).reshape(2, 2)


def from_confusion(matrix: list[list[float]]) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 from a (possibly noisy) confusion matrix, with
    every cell first rounded and clamped to >= 0 (post-processing of a DP release)."""
    (tn, fp), (fn, tp) = [[max(0.0, float(round(v))) for v in row] for row in matrix]
    n = tn + fp + fn + tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n if n else 0.0, "precision": precision, "recall": recall,
            "f1": f1, "confusion_matrix": [[tn, fp], [fn, tp]]}
