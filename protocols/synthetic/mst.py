"""DP synthetic data: noisy marginals measured inside MPC, rows drawn by the recipients.

MST [McKenna, Miklau & Sheldon 2021] with its tree fixed before any data is seen
(protocols/synthetic/marginals.py: the label joined to every feature).

1. The row counts are exchanged (public, as in every run); delta must be below
   1/rows. The marginals (the label's counts and each feature's counts by (bin,
   label)) are m = features + 1 count vectors; adding or removing a row changes one
   cell of each by 1. The noise multiplier sigma for m Gaussian releases of L2
   sensitivity 1 at the agreed (epsilon, delta) is calibrated before anything is
   shared (protocols/blocks/accounting.py); the epsilon reported is dp-accounting's
   PLD accountant's for those m releases.
2. Every party counts its own rows in plaintext and secret-shares the counts; they
   are summed on shares (protocols/blocks/aggregation.py), so no party's counts exist
   anywhere but in its owner's memory.
3. Gaussian noise N(0, sigma^2) per cell, drawn from every party's secret contribution
   (protocols/blocks/dp.py), is added on shares; only the noisy marginals are revealed,
   with the epsilon the accountant gives for them.
4. Each recipient draws synthetic rows from the noisy marginals (post-processing: no
   further privacy cost) and writes them as a CSV in the table's columns and units
   (the exporter).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocols.api import (
    DP_REQUIRED,
    Budget,
    ExportContext,
    Input,
    Output,
    Param,
    Params,
    PlainTable,
    Protocol,
    ProtocolError,
    Session,
)
from protocols.blocks import accounting, aggregation, dp
from protocols.synthetic import marginals

MECHANISM = "gaussian (noisy 1-way and 2-way marginals, MST with a fixed tree)"


def run(session: Session) -> dict[str, Any]:
    """Count, sum on shares, add joint noise, reveal the noisy marginals."""
    import crypten

    p = session.params
    if p.noise_coalition >= session.world_size:
        raise ProtocolError(f"noise_coalition {p.noise_coalition} must be below the number of "
                            f"parties ({session.world_size})")
    table = session.table("train")
    if table is None or table.labels is None:
        raise ProtocolError("the protocol needs a labelled 'train' input")
    comm = crypten.communicator.get()
    rows = sum(int(t.item()) for t in comm.all_gather(torch.tensor([table.rows])))
    budget = session.budget("marginals")
    if budget is None:
        raise ProtocolError("'marginals' has no privacy budget in the manifest")
    shape = marginals.layout(table.features.shape[1], p.bins, len(table.classes) or 2)
    sigma, privacy = calibrated(budget, rows, shape, p.noise_coalition)  # 1.
    session.progress("calibrated", noise_multiplier=round(sigma, 4), marginals=shape.marginals)
    mine = torch.from_numpy(marginals.counts(table.features, table.labels, p.bins,
                                             shape.classes))
    total = aggregation.secure_sum(mine)  # 2. [Bonawitz et al. 2017]
    noisy = total + dp.joint_noise(dp.gaussian_contribution(  # 3.
        (shape.size,), sigma, session.world_size, p.noise_coalition))
    opened = session.reveal("marginals", noisy)["marginals"]
    if opened is None:
        return {"marginals": None}
    return {"marginals": described(opened.double().numpy(), shape, table.columns,
                                   table.classes, privacy)}


def calibrated(budget: Budget, rows: int, shape: marginals.Layout, coalition: int
               ) -> tuple[float, dict[str, Any]]:
    """sigma (per cell, sensitivity 1 per marginal) for the budget, and its privacy report;
    ProtocolError when delta is not below 1/rows."""
    if rows == 0:
        raise ProtocolError("no party provided rows")
    if budget.delta <= 0 or budget.delta >= 1 / rows:
        raise ProtocolError(f"'marginals': delta {budget.delta:g} must be > 0 (Gaussian noise) "
                            f"and below 1/rows = 1/{rows} = {1 / rows:.3g}")
    # m Gaussian releases of sensitivity 1 with noise sigma are one Gaussian release of the
    # whole vector (L2 sensitivity sqrt(m)): the analytic Gaussian mechanism's multiplier
    # [Balle & Wang 2018] times sqrt(m); dp-accounting's generic calibration gives the same
    # sigma in 16 s instead of 0.02 s
    sigma = accounting.gaussian_sigma(budget.epsilon, budget.delta) * math.sqrt(shape.marginals)
    return sigma, accounting.report(
        accounting.gaussian_event(sigma, shape.marginals), budget.delta, MECHANISM,
        accounting.ADD_OR_REMOVE, noise_multiplier=sigma, marginals=shape.marginals,
        noise_coalition=coalition)


def described(flat: np.ndarray, shape: marginals.Layout, columns: tuple[str, ...],
              classes: tuple[Any, ...], privacy: dict[str, Any] | None) -> dict[str, Any]:
    """The revealed vector with what a recipient needs to draw rows from it."""
    return {"counts": [float(v) for v in flat], "columns": list(columns),
            "classes": list(classes), "bins": shape.bins, "privacy": privacy}


def shape_of(value: dict[str, Any]) -> marginals.Layout:
    return marginals.layout(len(value["columns"]), value["bins"], len(value["classes"]) or 2)


def synthesize(value: dict[str, Any], rows: int, seed: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Rows drawn from revealed marginals (features in [0, 1], label indices); `rows` 0: as
    many as the marginals suggest."""
    shape = shape_of(value)
    flat = np.asarray(value["counts"], dtype=np.float64)
    n = rows or marginals.estimated_rows(flat, shape)
    generator = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
    return marginals.sample(flat, shape, n, generator)


def plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
              alone: int | None) -> dict[str, Any]:
    """The same marginals without noise (what the noise costs is the difference)."""
    tables = inputs["train"] if alone is None else [inputs["train"][alone]]
    first = tables[0]
    shape = marginals.layout(first.features.shape[1], params.bins, len(first.classes) or 2)
    flat = sum(marginals.counts(t.features, t.labels, params.bins, shape.classes)
               for t in tables)
    return {"marginals": described(np.asarray(flat), shape, first.columns, first.classes, None)}


def export_rows(value: dict[str, Any], ctx: ExportContext) -> list[Path]:
    """synthetic.csv (rows drawn from the marginals, in the table's columns and units) and
    marginals.json (the noisy counts and the privacy spent)."""
    x, y = synthesize(value, ctx.params.rows, bytes.fromhex(ctx.manifest_digest))
    table = ctx.tables.get("train")
    ctx.folder.mkdir(parents=True, exist_ok=True)
    out_csv, out_json = ctx.folder / "synthetic.csv", ctx.folder / "marginals.json"
    header, decoded = decode(x, value["columns"], table)
    label = table.label if table is not None and table.label else "label"
    classes = value["classes"] or [0, 1]
    with out_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*header, label])
        for row, cls in zip(decoded, y, strict=True):
            writer.writerow([*row, classes[int(cls)]])
    out_json.write_text(json.dumps({**value, "rows_written": len(y), "protocol": ctx.protocol,
                                    "manifest_digest": ctx.manifest_digest}, indent=2) + "\n")
    return [out_csv, out_json]


def decode(x: np.ndarray, columns: list[str], table: Any) -> tuple[list[str], list[list[Any]]]:
    """Encoded synthetic features back to the table's columns: a scaled column to its range,
    a categorical one to the first category whose one-hot column came out >= 1/2 (else its
    first category)."""
    ranges = dict(table.ranges) if table is not None else {}
    categories = dict(table.categories) if table is not None else {}
    features = list(table.features) if table is not None else list(columns)
    index = {c: i for i, c in enumerate(columns)}
    out = []
    for row in x:
        values: list[Any] = []
        for col in features:
            if col in categories:
                hits = [v for v in categories[col] if row[index[f"{col}={v}"]] >= 0.5]
                values.append((hits or list(categories[col]))[0])
            elif col in ranges:
                low, high = ranges[col]
                values.append(round(low + float(row[index[col]]) * (high - low), 6))
            else:
                values.append(round(float(row[index[col]]), 6))
        out.append(values)
    return features, out


PROTOCOL = Protocol(
    name="synthetic-data",
    version="1",
    summary="DP synthetic data: noisy 1-way and 2-way marginals measured on shares (MST with "
            "a fixed tree), rows drawn from them by each recipient",
    run=run,
    params=(
        Param("bins", int, 8, "equal-width bins of every scaled feature in [0, 1]", minimum=2,
              maximum=64),
        Param("rows", int, 0, "synthetic rows each recipient draws (0: as many as the noisy "
              "marginals suggest)", minimum=0),
        Param("noise_coalition", int, 1, "the largest coalition of parties the noise still "
              "protects against", minimum=0),
    ),
    inputs=(Input("train", "labelled rows whose marginals are measured"),
            Input("test", "not read: accepted so that a policy naming test rows for the "
                  "model protocols serves this one too", required=False)),
    outputs=(
        Output("marginals", "noisy label counts and (feature bin, label) counts of the pooled "
               "rows, with the privacy spent; recipients draw synthetic rows from them",
               export=export_rows, dp=DP_REQUIRED),
    ),
    plaintext=plaintext,
)
