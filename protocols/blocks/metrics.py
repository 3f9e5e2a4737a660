"""Evaluation metrics computed on shares, each with its plaintext twin: binary (logits)
and multi-class (class scores).

Only the metrics are revealed, never a prediction. Counts are divided by the
public row count before any secret division, so every secret divisor lies in
(0, 1], where CrypTen's Newton-Raphson reciprocal is accurate.
"""

from __future__ import annotations

from typing import Any

import torch

from protocols.blocks import approximations

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


MULTICLASS_METRICS = ("accuracy", "macro_f1", "precision", "recall", "f1", "confusion_matrix")


def one_hot(labels: Any, classes: int) -> Any:
    """Class indices (n, 1) as shares -> (n, K) one-hot bits (scale 1): one batched equality."""
    return labels.eq(torch.arange(classes, dtype=torch.float32))


def multiclass_metrics(scores: Any, labels: Any, classes: int) -> dict[str, Any]:
    """Accuracy, per-class precision, recall and F1, macro-F1 and the K x K confusion matrix
    (rows: true class, columns: predicted) of class scores (n, K), as shares.

    The prediction is each row's first argmax (CrypTen's argmax; with the dealer, one
    batch of pairwise comparisons and an AND tree, parties/engine/hooks.py);
    the confusion matrix is one product of the true and predicted one-hot bits (no
    truncation: counts are exact integers). Each ratio of counts a/b (precision
    tp/predicted, recall tp/true, F1 = 2 tp/(predicted + true)) is a c * 1/(b c + eps)
    with the same public c ~ 1/n on both sides, so the secret divisor lies in (0, 1]
    and a class that never occurs gives exactly 0.
    """
    import crypten

    n = scores.size(0)
    confusion = _confusion_counts(scores, labels, classes)  # (K, K) counts, scale 1
    hits = confusion.reshape(-1)[torch.arange(classes) * (classes + 1)]  # the diagonal
    predicted_k, true_k = confusion.sum(0), confusion.sum(1)
    numerators = approximations.fixed(crypten.stack([hits, hits, hits * 2]), 1.0 / n)
    divisors = approximations.fixed(crypten.stack([predicted_k, true_k, predicted_k + true_k]),
                                    1.0 / n)
    precision, recall, f1 = numerators * (divisors + 1e-4).reciprocal()
    return {"accuracy": approximations.fixed(hits.sum()).div(n), "macro_f1": f1.mean(),
            "precision": precision, "recall": recall, "f1": f1,
            "confusion_matrix": approximations.fixed(confusion)}


def _confusion_counts(scores: Any, labels: Any, classes: int) -> Any:
    predicted = scores.argmax(dim=1, one_hot=True)
    return one_hot(labels, classes).t().matmul(predicted)


def multiclass_confusion(scores: Any, labels: Any, classes: int) -> Any:
    """The K x K confusion counts (rows: true class, columns: the first argmax) of class
    scores (n, K) and class indices (n, 1), as fixed-point shares (for noise and reveal)."""
    return approximations.fixed(_confusion_counts(scores, labels, classes))


def from_multiclass_confusion(matrix: list[list[float]]) -> dict[str, Any]:
    """Accuracy, per-class precision, recall and F1, macro-F1 from a (possibly noisy) K x K
    confusion matrix, every cell first rounded and clamped to >= 0 (post-processing)."""
    counts = torch.tensor([[max(0.0, float(round(v))) for v in row] for row in matrix],
                          dtype=torch.float64)
    hits, pred, true = counts.diagonal(), counts.sum(0), counts.sum(1)
    precision = torch.where(pred > 0, hits / pred.clamp(min=1), torch.zeros_like(hits))
    recall = torch.where(true > 0, hits / true.clamp(min=1), torch.zeros_like(hits))
    total = precision + recall
    f1 = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-12),
                     torch.zeros_like(hits))
    n = float(counts.sum())
    return {"accuracy": float(hits.sum()) / n if n else 0.0, "macro_f1": float(f1.mean()),
            "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "confusion_matrix": counts.tolist()}


def multiclass_metrics_plain(scores: torch.Tensor, labels: torch.Tensor, classes: int
                             ) -> dict[str, Any]:
    """The same metrics of class scores in float64 (a class never predicted or never present
    has precision or recall 0)."""
    predicted = scores.argmax(1)
    actual = labels.reshape(-1).long()
    confusion = torch.zeros(classes, classes, dtype=torch.float64)
    confusion.index_put_((actual, predicted), torch.ones_like(actual, dtype=torch.float64),
                         accumulate=True)
    hits = confusion.diagonal()
    pred, true = confusion.sum(0), confusion.sum(1)
    precision = torch.where(pred > 0, hits / pred.clamp(min=1), torch.zeros_like(hits))
    recall = torch.where(true > 0, hits / true.clamp(min=1), torch.zeros_like(hits))
    total = precision + recall
    f1 = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-12),
                     torch.zeros_like(hits))
    return {"accuracy": float(hits.sum() / actual.numel()), "macro_f1": float(f1.mean()),
            "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "confusion_matrix": confusion.tolist()}
