"""k-anonymity by Mondrian generalization, and the measures of an anonymized release.

Pure functions on numpy arrays (rows x quasi-identifier columns); no I/O.

* :func:`mondrian`: strict multidimensional Mondrian partitioning [LeFevre, DeWitt &
  Ramakrishnan 2006, "Mondrian Multidimensional K-Anonymity", ICDE]: split the
  partition on the quasi-identifier with the widest range (normalized by the table's
  range) at its median, as long as both halves keep at least k rows; a partition no
  dimension can cut is a leaf.
* :func:`generalize`: every leaf's quasi-identifiers replaced by the midpoint of the
  leaf's range on each column (the release's value for "[low, high]"), so rows of one
  leaf share their quasi-identifiers: an equivalence class of at least k rows.
* The measures of a release, over its equivalence classes (rows with identical
  quasi-identifiers): :func:`k_anonymity` (the smallest class) [Sweeney 2002];
  :func:`l_diversity` (distinct sensitive values in the poorest class) and
  :func:`entropy_l_diversity` (exp of the smallest class entropy) [Machanavajjhala et
  al. 2007]; :func:`t_closeness` (largest earth mover's distance between a class's
  sensitive distribution and the table's) [Li, Li & Venkatasubramanian 2007]: the
  ordered distance for a numeric attribute, the equal distance for a categorical one.
"""

from __future__ import annotations

import numpy as np


def equivalence_classes(qi: np.ndarray) -> list[np.ndarray]:
    """The row indices of each group of rows with identical quasi-identifier values."""
    qi = np.asarray(qi)
    if qi.ndim == 1:
        qi = qi.reshape(-1, 1)
    if qi.shape[0] == 0:
        return []
    _, inverse = np.unique(qi, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def k_anonymity(qi: np.ndarray) -> int:
    """k of the release: the size of its smallest equivalence class."""
    return min(len(c) for c in equivalence_classes(qi))


def l_diversity(qi: np.ndarray, sensitive: np.ndarray) -> int:
    """Distinct l-diversity: the fewest distinct sensitive values in any class."""
    sensitive = np.asarray(sensitive)
    return min(len(np.unique(sensitive[c])) for c in equivalence_classes(qi))


def entropy_l_diversity(qi: np.ndarray, sensitive: np.ndarray) -> float:
    """Entropy l-diversity: exp(the smallest entropy of a class's sensitive values)."""
    sensitive = np.asarray(sensitive)
    entropies = []
    for c in equivalence_classes(qi):
        _, counts = np.unique(sensitive[c], return_counts=True)
        p = counts / counts.sum()
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.exp(min(entropies)))


def t_closeness(qi: np.ndarray, sensitive: np.ndarray, ordered: bool) -> float:
    """t of the release: the largest earth mover's distance between a class's distribution
    of the sensitive attribute and the whole table's.

    `ordered` (a numeric attribute): the ordered distance over its m distinct values,
    sum_i |r_1 + ... + r_i| / (m - 1) with r the difference of the two distributions;
    otherwise (categorical) the equal distance, sum_i |r_i| / 2.
    """
    sensitive = np.asarray(sensitive)
    values, index = np.unique(sensitive, return_inverse=True)
    index = index.reshape(-1)
    m = len(values)
    overall = np.bincount(index, minlength=m) / len(index)
    worst = 0.0
    for c in equivalence_classes(qi):
        r = np.bincount(index[c], minlength=m) / len(c) - overall
        if ordered:
            emd = float(np.abs(np.cumsum(r)).sum() / (m - 1)) if m > 1 else 0.0
        else:
            emd = float(np.abs(r).sum() / 2)
        worst = max(worst, emd)
    return worst


def mondrian(qi: np.ndarray, k: int) -> list[np.ndarray]:
    """Strict Mondrian partitions of the rows (index arrays, each of at least k rows).

    The cut of a partition [LeFevre et al. 2006, Algorithm 1]: the dimension with the
    widest normalized range first; split value its median; left = values <= median,
    right = the rest; allowed when both sides hold >= k rows, else the next dimension.
    """
    qi = np.asarray(qi, dtype=np.float64)
    if qi.ndim == 1:
        qi = qi.reshape(-1, 1)
    rows = qi.shape[0]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if rows < k:
        raise ValueError(f"{rows} rows cannot be {k}-anonymous")
    span = qi.max(axis=0) - qi.min(axis=0) if rows else np.ones(qi.shape[1])
    span[span == 0] = 1.0
    done: list[np.ndarray] = []
    todo = [np.arange(rows)]
    while todo:
        part = todo.pop()
        cut = _cut(qi[part], span, k)
        if cut is None:
            done.append(part)
            continue
        left, right = cut
        todo += [part[right], part[left]]
    return sorted(done, key=lambda p: int(p[0]))


def _cut(block: np.ndarray, span: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(left mask, right mask) of the allowed median cut of `block`, or None."""
    if block.shape[0] < 2 * k:
        return None
    widths = (block.max(axis=0) - block.min(axis=0)) / span
    for dim in np.argsort(-widths, kind="stable"):
        if widths[dim] == 0:
            break
        column = block[:, dim]
        median = np.sort(column)[(len(column) - 1) // 2]  # the lower median
        left = column <= median
        if k <= left.sum() <= len(column) - k:
            return left, ~left
    return None


def generalize(qi: np.ndarray, partitions: list[np.ndarray]) -> np.ndarray:
    """The quasi-identifiers with each partition's rows set to the midpoint of its range."""
    qi = np.asarray(qi, dtype=np.float64)
    out = qi.copy()
    for part in partitions:
        block = qi[part]
        out[part] = (block.min(axis=0) + block.max(axis=0)) / 2
    return out


def anonymize(qi: np.ndarray, k: int) -> np.ndarray:
    """Mondrian k-anonymization of the quasi-identifiers: :func:`generalize` of
    :func:`mondrian` (rows in the same order)."""
    return generalize(qi, mondrian(qi, k))


def measures(qi: np.ndarray, sensitive: np.ndarray, ordered: bool = False) -> dict[str, float]:
    """k, distinct and entropy l-diversity, and t-closeness of a release."""
    return {"k": k_anonymity(qi), "l_distinct": l_diversity(qi, sensitive),
            "l_entropy": entropy_l_diversity(qi, sensitive),
            "t_closeness": t_closeness(qi, sensitive, ordered)}
