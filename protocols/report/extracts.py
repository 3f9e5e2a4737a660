"""What the parties would pool instead of computing securely: anonymized or synthetic rows.

* :func:`k_anonymized`: each party generalizes its own rows by Mondrian over the
  quasi-identifier columns (protocols/blocks/anonymity.py) and the extracts are pooled
  in plaintext -- what sharing a k-anonymous extract gives; with the measures of the
  pooled release (k, l-diversity and t-closeness of the label).
* :func:`simulated_marginals`: synthetic-data's noisy marginals computed in the clear
  with the secure run's calibration (a twin for planning, never a release).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from protocols.api import Budget, PlainTable
from protocols.blocks import anonymity
from protocols.synthetic import marginals, mst


def k_anonymized(tables: list[PlainTable], columns: list[int], k: int
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(features, labels) of every party's k-anonymized rows pooled, and the release's
    measures; `columns` are the quasi-identifiers' encoded column indices."""
    parts = []
    for t in tables:
        x = t.features.double().numpy().copy()
        x[:, columns] = anonymity.anonymize(x[:, columns], k)
        parts.append(x)
    x = np.concatenate(parts)
    y = torch.cat([t.labels for t in tables]).double()
    measured = anonymity.measures(x[:, columns], y.numpy().reshape(-1), ordered=False)
    measured["classes_of_rows"] = len(anonymity.equivalence_classes(x[:, columns]))
    return torch.from_numpy(x), y, measured


def extract_bytes(x: torch.Tensor) -> int:
    """The size of the pooled extract as CSV text (what the parties would send)."""
    return sum(len(",".join(f"{v:.6g}" for v in row)) + 3 for row in x.tolist())


def simulated_marginals(tables: list[PlainTable], bins: int, budget: Budget, coalition: int,
                        seed: int) -> dict[str, Any]:
    """synthetic-data's revealed value, simulated: the pooled counts plus Gaussian noise of
    the run's sigma (times sqrt(n / (n - coalition)), every party's contribution)."""
    first = tables[0]
    shape = marginals.layout(first.features.shape[1], bins, len(first.classes) or 2)
    flat = sum(marginals.counts(t.features, t.labels, bins, shape.classes) for t in tables)
    sigma, privacy = mst.calibrated(budget, sum(t.rows for t in tables), shape, coalition)
    spread = math.sqrt(len(tables) / (len(tables) - coalition))
    noisy = np.asarray(flat) + np.random.default_rng(seed).normal(size=shape.size) * (
        sigma * spread)
    return mst.described(noisy, shape, first.columns, first.classes,
                         {**privacy, "mechanism": privacy["mechanism"] + ", simulated"})
