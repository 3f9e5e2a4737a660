"""column-statistics: count, mean, variance and a histogram of every column, on shares.

A complete small protocol in its own package, registered with smpc through an
entry point (see pyproject.toml beside this folder). It shows the whole
contract: parameters, one input, one output, the secure run and its plaintext
twin. Read it top to bottom:

1. every party shares its rows (horizontal partitioning; counts are public);
2. sums and sums of squares are local additions of shares; the mean and the
   variance follow from them with the public row count;
3. a histogram counts, per column, the rows at or above each interior bin
   edge with one batched secure comparison, and takes differences;
4. one round reveals all of it to the parties the manifest names.
"""

from __future__ import annotations

from typing import Any

import torch

from protocols.api import Input, Output, Param, Params, PlainTable, Protocol, ProtocolError
from protocols.blocks.sharing import pool_plain


def run(session: Any) -> dict[str, Any]:
    p = session.params
    pooled = session.share_rows("data", shuffle=False)
    if pooled is None or pooled.rows == 0:
        raise ProtocolError("no party provided rows")
    x, n = pooled.features, pooled.rows
    total = x.sum(0)  # local: sums of shares are shares of sums
    squares = (x * x).sum(0)  # one multiplication round for every cell
    mean = total / n
    variance = squares / n - mean * mean
    edges = _edges(p)
    at_least = (x.unsqueeze(2) >= torch.tensor(edges)).sum(0)  # (columns, bins - 1), one round
    opened = session.reveal("statistics", {"mean": mean, "variance": variance,
                                           "at_least": at_least})["statistics"]
    if opened is None:
        return {"statistics": None}
    return {"statistics": _table(pooled.columns, n, opened["mean"], opened["variance"],
                                 opened["at_least"])}


def _edges(p: Params) -> list[float]:
    """The interior bin edges of `bins` equal bins over [low, high]."""
    low, high = p.histogram_low, p.histogram_high
    return [low + (high - low) * k / p.bins for k in range(1, p.bins)]


def _table(columns: tuple[str, ...], n: int, mean: torch.Tensor, variance: torch.Tensor,
           at_least: torch.Tensor) -> dict[str, Any]:
    """Per column: count, mean, variance, histogram (bin counts, low to high)."""
    out = {}
    for j, column in enumerate(columns):
        ge = [float(n), *at_least[j].tolist(), 0.0]
        out[column] = {"count": n, "mean": float(mean[j]), "variance": float(variance[j]),
                       "histogram": [round(ge[k] - ge[k + 1]) for k in range(len(ge) - 1)]}
    return out


def plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
              alone: int | None) -> dict[str, Any]:
    x, _, origin = pool_plain(inputs["data"], seed, "data", shuffle=False)
    if alone is not None:
        x = x[origin == alone]
    n = x.shape[0]
    mean = x.mean(0)
    variance = (x * x).mean(0) - mean * mean
    at_least = (x.unsqueeze(2) >= torch.tensor(_edges(params), dtype=x.dtype)).sum(0)
    return {"statistics": _table(inputs["data"][0].columns, n, mean, variance, at_least)}


PROTOCOL = Protocol(
    name="column-statistics",
    version="1",
    summary="count, mean, variance and histogram of every column of the pooled rows",
    run=run,
    params=(
        Param("bins", int, 10, "histogram bins", minimum=2, maximum=100),
        Param("histogram_low", float, 0.0, "lower end of the histogram (values below count in "
              "the first bin; scaled columns lie in [0, 1])"),
        Param("histogram_high", float, 1.0, "upper end of the histogram"),
    ),
    inputs=(Input("data", "the rows to describe", labelled=False),),
    outputs=(Output("statistics", "per column: count, mean, variance and histogram"),),
    plaintext=plaintext,
    compare="statistics",
    validate=lambda p: None if p.histogram_low < p.histogram_high else "histogram_low must be "
    "below histogram_high",
)
