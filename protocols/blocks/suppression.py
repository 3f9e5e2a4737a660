"""The consortium's minimum group size: statistics over fewer rows are suppressed, on shares.

A revealed statistic (a per-class metric, a confusion cell, a histogram bin, a group
mean) says something about the rows it is computed over; over very few rows it says
something about individuals. With ``min_group_size = k`` in the consortium (part of
the manifest), every statistic guarded here is released only when each row count it
depends on is at least k (primary cell suppression, as statistical offices do):

1. the counts are compared with k on shares (CrypTen's secure comparison): a secret
   verdict bit per statistic (the product of its counts' bits);
2. the statistic is multiplied by its verdict on shares, so a suppressed value is 0
   before anything is opened;
3. the masked values and the verdicts are revealed together, as one declared output
   (:func:`guard` builds it; :func:`unguard` turns a suppressed value into None). The
   verdict is all that is opened about a count that is not itself released.

A count that is public anyway (the number of test rows) is decided in the clear.
Complementary suppression (hiding other cells from which a suppressed one could be
recomputed, e.g. from a released total) is not done: docs/decisions.md.
"""

from __future__ import annotations

from typing import Any

import torch

SHOWN = "shown"  # the key of the verdicts in a guarded output
VALUES = "values"


class Every:
    """A vector of row counts a single (scalar) statistic depends on as a whole: its verdict
    is 1 only when every count is >= k (e.g. macro-F1 over every class's counts)."""

    def __init__(self, counts: Any) -> None:
        self.counts = counts


def verdict(counts: list[Any], k: int) -> Any:
    """1 where every count is >= k, else 0: shares when a count is secret (the public ones
    decided in the clear and multiplied in), else a number."""
    public = float(all(c >= k for c in counts if isinstance(c, int | float)))
    secret = [_all(c.counts.ge(k)) if isinstance(c, Every) else c.ge(k)
              for c in counts if not isinstance(c, int | float)]  # on shares
    if not secret:
        return public
    bit = secret[0]
    for other in secret[1:]:
        bit = bit * other
    return bit * public


def _all(bits: Any) -> Any:
    """The product of a vector of secret bits (a tree of multiplications on shares)."""
    import crypten

    bits = bits.reshape(-1)
    while bits.size(0) > 1:
        half = bits.size(0) // 2
        product = bits[:half] * bits[half:2 * half]
        bits = product if bits.size(0) % 2 == 0 else crypten.cat([product, bits[2 * half:]])
    return bits[0]


def guard(values: dict[str, Any], groups: dict[str, list[Any]], k: int) -> dict[str, Any]:
    """{"values": each statistic times its verdict, "shown": each verdict}, on shares.

    `groups[name]` lists the row counts `values[name]` is computed over (shares or public
    numbers; a count may have the statistic's shape, e.g. a matrix of cell counts); a
    statistic without groups is released as it is."""
    masked, shown = {}, {}
    for name, value in values.items():
        counts = groups.get(name)
        if not counts:
            masked[name] = value
            continue
        bit = verdict(counts, k)
        masked[name] = value * bit
        shown[name] = bit
    return {VALUES: masked, SHOWN: shown}


def unguard(opened: dict[str, Any]) -> dict[str, Any]:
    """The revealed statistics with each suppressed one (or matrix cell) replaced by None."""
    out: dict[str, Any] = {}
    for name, value in opened[VALUES].items():
        bit = opened[SHOWN].get(name)
        plain = value.tolist() if isinstance(value, torch.Tensor) else value
        if bit is None:
            out[name] = plain
            continue
        shown = bit.tolist() if isinstance(bit, torch.Tensor) else bit
        out[name] = _keep(plain, shown)
    return out


def _keep(value: Any, shown: Any) -> Any:
    if isinstance(value, list):
        if not isinstance(shown, list):
            shown = [shown] * len(value)
        return [_keep(v, s) for v, s in zip(value, shown, strict=True)]
    return value if round(float(shown)) == 1 else None


def binary_metric_groups(measured: dict[str, Any], rows: int) -> dict[str, list[Any]]:
    """The row counts behind each of protocols/blocks/metrics.py's binary metrics, from its
    confusion matrix [[tn, fp], [fn, tp]] (shares) and the public number of test rows:
    accuracy over every row; precision over the predicted positives; recall over the
    positives; F1 over both; AUC over the positives and the negatives; each confusion
    cell over its own rows."""
    c = measured["confusion_matrix"]
    tn, fp, fn, tp = c[0, 0], c[0, 1], c[1, 0], c[1, 1]
    predicted, positives, negatives = tp + fp, tp + fn, tn + fp
    return {"accuracy": [rows], "precision": [rows, predicted], "recall": [rows, positives],
            "f1": [rows, predicted, positives], "auc": [rows, positives, negatives],
            "confusion_matrix": [c]}


def multiclass_metric_groups(measured: dict[str, Any], rows: int) -> dict[str, list[Any]]:
    """The row counts behind each of protocols/blocks/metrics.py's multi-class metrics, from
    its K x K confusion matrix (rows: true class, columns: predicted; shares) and the public
    number of test rows: accuracy over every row; each class's precision over the rows
    predicted as it, its recall over its rows, its F1 over both; macro-F1 over every class's
    (it would give away a suppressed class's F1 otherwise); each confusion cell over its own
    rows."""
    c = measured["confusion_matrix"]
    predicted, actual = c.sum(0), c.sum(1)
    return {"accuracy": [rows], "precision": [rows, predicted], "recall": [rows, actual],
            "f1": [rows, predicted, actual],
            "macro_f1": [rows, Every(predicted), Every(actual)], "confusion_matrix": [c]}
