"""A test protocol: pools its input by rows or by columns and opens the pooled table to all
(tests only: a real protocol never reveals its inputs)."""

from __future__ import annotations

from typing import Any

from protocols.api import Input, Output, Param, Protocol


def run(session: Any) -> dict[str, Any]:
    p = session.params
    if p.layout == "rows":
        pooled = session.share_rows("data", shuffle=p.shuffle)
    else:
        pooled = session.share_columns("data")
    opened = session.reveal("pooled", {"features": pooled.features, "labels": pooled.labels})
    return {"pooled": {**opened["pooled"], "counts": pooled.counts,
                       "columns": list(pooled.columns),
                       "order": None if pooled.order is None else pooled.order.tolist()}}


PROTOCOL = Protocol(
    name="pooling", version="1", summary="opens the pooled input (tests only)", run=run,
    params=(Param("layout", str, "rows", choices=("rows", "columns")),
            Param("shuffle", bool, True)),
    inputs=(Input("data", labelled=False),),
    outputs=(Output("pooled", "the pooled table, opened"),),
)
