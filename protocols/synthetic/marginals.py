"""Marginals of a labelled table and rows drawn from them: the pure part of synthetic data.

The model is MST's [McKenna, Miklau & Sheldon 2021, "Winning the NIST Contest"]: a
tree-shaped graphical model fitted to noisy 1-way and 2-way marginals. Here the tree
is fixed before any data is seen: the label joined to every feature (a star rooted at
the label), so no budget goes to choosing it (MST spends a third of its budget on a
private maximum spanning tree; that step is left out). The measured marginals are the
label's counts and, for every feature, its counts by (feature bin, label).

Every encoded feature lies in [0, 1] (ranges scale it, one-hot columns are 0/1) and
is cut into `bins` equal-width bins (values outside are clipped); the layout of the
flat count vector is :func:`layout`. From the noisy counts (post-processing):
negative cells are set to 0; the label's distribution combines its own counts with
the label sums of every 2-way table, weighted by the inverse of their noise variance
(the least-squares estimate that mbi would give on this tree); a row draws its label,
then each feature's bin given the label, then a value uniformly inside the bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Layout:
    """Where each marginal sits in the flat count vector."""

    features: int
    bins: int
    classes: int

    @property
    def size(self) -> int:
        return self.classes + self.features * self.bins * self.classes

    @property
    def marginals(self) -> int:
        """How many marginals are measured (each changes by one cell when a row comes or
        goes: the L2 sensitivity of the vector is sqrt(marginals))."""
        return 1 + self.features


def layout(features: int, bins: int, classes: int) -> Layout:
    return Layout(features, bins, classes)


def binned(x: torch.Tensor | np.ndarray, bins: int) -> np.ndarray:
    """Each value's bin in 0..bins-1 (values clipped to [0, 1])."""
    v = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.minimum((v * bins).astype(np.int64), bins - 1)


def counts(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, bins: int,
           classes: int) -> np.ndarray:
    """The flat vector of this table's marginals: label counts, then for each feature its
    (bin, label) counts, row-major."""
    b = binned(x, bins)
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    rows, features = b.shape
    out = [np.bincount(labels, minlength=classes).astype(np.float64)]
    for j in range(features):
        cell = b[:, j] * classes + labels
        out.append(np.bincount(cell, minlength=bins * classes).astype(np.float64))
    return np.concatenate(out) if rows or features else out[0]


def split(flat: np.ndarray, shape: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(label counts: classes, pair counts: features x bins x classes) of a flat vector."""
    flat = np.asarray(flat, dtype=np.float64)
    label = flat[:shape.classes]
    pairs = flat[shape.classes:].reshape(shape.features, shape.bins, shape.classes)
    return label, pairs


def label_distribution(flat: np.ndarray, shape: Layout) -> np.ndarray:
    """P(label) from the noisy label counts and every 2-way table's label sums, weighted
    by the inverse of their noise variance (1 and bins per cell), negatives clipped."""
    label, pairs = split(flat, shape)
    estimate = (label + pairs.sum(axis=1).sum(axis=0) / shape.bins) / (
        1 + shape.features / shape.bins)
    estimate = np.clip(estimate, 0.0, None)
    total = estimate.sum()
    return estimate / total if total > 0 else np.full(shape.classes, 1 / shape.classes)


def conditionals(flat: np.ndarray, shape: Layout) -> np.ndarray:
    """P(feature bin | label): features x bins x classes, negatives clipped, an empty
    column uniform."""
    _, pairs = split(flat, shape)
    pairs = np.clip(pairs, 0.0, None)
    totals = pairs.sum(axis=1, keepdims=True)
    return np.where(totals > 0, pairs / np.where(totals > 0, totals, 1.0), 1.0 / shape.bins)


def estimated_rows(flat: np.ndarray, shape: Layout) -> int:
    """The number of rows the noisy marginals suggest (at least 1)."""
    label, pairs = split(flat, shape)
    estimate = (label.sum() + pairs.sum() / shape.bins) / (1 + shape.features / shape.bins)
    return max(1, round(float(estimate)))


def sample(flat: np.ndarray, shape: Layout, rows: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """`rows` synthetic rows (features in [0, 1], labels 0..classes-1) from the marginals."""
    p_label = label_distribution(flat, shape)
    p_bins = conditionals(flat, shape)
    y = rng.choice(shape.classes, size=rows, p=p_label)
    x = np.empty((rows, shape.features))
    for j in range(shape.features):
        cdf = np.cumsum(p_bins[j][:, y], axis=0)  # bins x rows
        u = rng.uniform(size=rows) * cdf[-1]
        b = np.minimum((cdf < u).sum(axis=0), shape.bins - 1)
        x[:, j] = (b + rng.uniform(size=rows)) / shape.bins
    return x, y


def fidelity(real_x: np.ndarray, real_y: np.ndarray, synth_x: np.ndarray, synth_y: np.ndarray,
             bins: int, classes: int) -> dict[str, float]:
    """How close the synthetic marginals are to the real ones: the mean total variation
    distance of every feature's 1-way marginal, and of every (feature, label) 2-way one."""
    real = counts(real_x, real_y, bins, classes)
    synth = counts(synth_x, synth_y, bins, classes)
    shape = layout(np.asarray(real_x).shape[1], bins, classes)
    (_, a), (_, b) = split(real, shape), split(synth, shape)
    a = a / max(len(real_y), 1)
    b = b / max(len(synth_y), 1)
    two_way = 0.5 * np.abs(a - b).sum(axis=(1, 2))
    one_way = 0.5 * np.abs(a.sum(axis=2) - b.sum(axis=2)).sum(axis=1)
    return {"tvd_1way": float(one_way.mean()), "tvd_2way": float(two_way.mean())}
