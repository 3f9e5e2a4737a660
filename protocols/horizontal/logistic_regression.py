"""Logistic regression on the parties' pooled data, trained and evaluated on shares.

1. Every party secret-shares its training data (features already encoded and
   scaled with the public ranges of the schema) as the consortium lays it out
   (protocols/blocks/sharing.py): its rows of a horizontal table, shuffled with
   the joint seed; or, for a vertical table, its columns of the rows every
   party has (a private set intersection on the identifiers), in a joint-seed
   order. The weights start at 0 and live only as shares.
2. Training is mini-batch SGD on the cross-entropy gradient in CrypTen's fixed
   point (protocols/blocks/training.py). The sigmoid is SecureML's
   piecewise-linear one by default [MZ17] (one comparison per step instead of
   CrypTen's exp + reciprocal; it trains to the same accuracy here);
   ``sigmoid = "exact"`` uses CrypTen's. After every epoch each party keeps its
   shares of the weights (checkpoint), so a run can resume.
3. Evaluation runs on the parties' test rows; when no party provides any, on
   the last ``test_fraction`` of the shuffled training rows (held out from
   training). It needs no sigmoid: the class is ``logit > 0``, and ROC AUC
   depends only on the order of the scores. The confusion matrix, accuracy,
   precision, recall, F1 and AUC are computed on shares (protocols/blocks/metrics.py).
4. With a minimum group size k in the consortium, each metric computed over fewer
   than k test rows (recall over the positives, a confusion cell, ...) is suppressed,
   the counts compared with k on shares (protocols/blocks/suppression.py).
5. One round reveals the metrics and the weights, each to the parties the
   manifest names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from protocols.api import (
    COLUMNS,
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
from protocols.blocks import approximations, metrics, suppression, training
from protocols.blocks.sharing import join_plain, pool_plain


def run(session: Session) -> dict[str, Any]:
    """Train on the pooled training rows, evaluate, reveal as declared."""
    import crypten

    p = session.params
    train = session.share("train", shuffle=p.shuffle)
    if train is None or train.rows == 0:
        raise ProtocolError("no party provided training rows")
    test = session.share("test", shuffle=False)
    x, y = train.features, train.labels
    if test is None or test.rows == 0:
        keep = _training_rows(train.rows, p.test_fraction)
        if keep == train.rows:
            raise ProtocolError("there are no test rows and test_fraction is 0: nothing to "
                                "evaluate on")
        xt, yt = x[keep:], y[keep:]
        x, y = x[:keep], y[:keep]
    else:
        xt, yt = test.features, test.labels
    rows, features = x.size(0), x.size(1)
    design = crypten.cat([x, crypten.cryptensor(torch.ones(rows, 1), src=0)], dim=1)
    wb = crypten.cryptensor(torch.zeros(features + 1, 1), src=0)
    start = 0
    restored = session.restore()
    if restored is not None:
        start, state = restored
        wb = state["weights"]
        session.progress("resumed", epoch=start, of=p.epochs)
    for epoch in range(start, p.epochs):
        wb = training.logistic_sgd_epoch(design, y, wb, p.batch_size, p.learning_rate,
                                         p.sigmoid)
        session.checkpoint(epoch + 1, {"weights": wb})
        session.progress("epoch", epoch=epoch + 1, of=p.epochs)
    scores = xt.matmul(wb[:-1]) + wb[-1]
    measured = metrics.binary_metrics(scores, yt)
    k = session.min_group_size
    if k > 1:  # [Hundepool et al. 2012, primary cell suppression], on shares
        measured = suppression.guard(
            measured, suppression.binary_metric_groups(measured, xt.size(0)), k)
    opened = session.reveal({"metrics": measured, "weights": wb.reshape(-1)})
    revealed = opened["metrics"]
    if revealed is not None:
        revealed = suppression.unguard(revealed) if k > 1 else metrics.as_plain(revealed)
    return {"metrics": revealed,
            "weights": None if opened["weights"] is None else opened["weights"].tolist()}


def _training_rows(rows: int, test_fraction: float) -> int:
    """How many of the shuffled rows train when the test rows are held out from them."""
    return rows - math.ceil(rows * test_fraction)


def plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
              alone: int | None) -> dict[str, Any] | None:
    """The same training and metrics in float64, rows in the same order as the secure run.

    A vertical table is joined on the identifier; a party alone then trains on its own
    columns of all its rows but the joined test rows, and is evaluated on those with its
    own columns (None for a party without labels: it cannot train alone)."""
    if inputs["train"] and inputs["train"][0].layout == COLUMNS:
        return _plaintext_vertical(inputs, params, seed, alone)
    x, y, origin = pool_plain(inputs["train"], seed, "train", params.shuffle)
    tests = inputs.get("test") or []
    if sum(t.rows for t in tests) == 0:
        keep = _training_rows(x.shape[0], params.test_fraction)
        xt, yt = x[keep:], y[keep:]
        x, y, origin = x[:keep], y[:keep], origin[:keep]
    else:
        xt, yt, _ = pool_plain(tests, seed, "test", shuffle=False)
    if alone is not None:
        mine = origin == alone
        x, y = x[mine], y[mine]
    return _fit_plain(x, y, xt, yt, params)


def _plaintext_vertical(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
                        alone: int | None) -> dict[str, Any] | None:
    if alone is not None and inputs["train"][alone].labels is None:
        return None
    train = join_plain(inputs["train"], seed, "train")
    x, y = train.x, train.y
    tests = inputs.get("test") or []
    if sum(t.rows for t in tests) == 0:
        keep = _training_rows(x.shape[0], params.test_fraction)
        xt, yt, x, y = x[keep:], y[keep:], x[:keep], y[:keep]
        test_blocks = train.blocks
    else:
        test = join_plain(tests, seed, "test")
        xt, yt, test_blocks = test.x, test.y, test.blocks
    if alone is not None:  # its own columns of its training rows and of the rows outside
        own, (more_x, more_y) = train.blocks[alone], train.outside[alone]
        x, y = torch.cat([x[:, own], more_x]), torch.cat([y, more_y])
        xt = xt[:, test_blocks[alone]]
    return _fit_plain(x, y, xt, yt, params)


def _fit_plain(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor,
               params: Params) -> dict[str, Any]:
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    wb = torch.zeros(design.shape[1], 1, dtype=torch.float64)
    for _ in range(params.epochs):
        wb = training.logistic_sgd_epoch_plain(design, y, wb, params.batch_size,
                                               params.learning_rate, params.sigmoid)
    scores = xt @ wb[:-1] + wb[-1]
    return {"metrics": metrics.binary_metrics_plain(scores, yt),
            "weights": wb.reshape(-1).tolist()}


def export_model(weights: list[float], ctx: ExportContext) -> list[Path]:
    """A PyTorch state dict for nn.Linear(k, 1) (model.pt) and what it means (model.json)."""
    w = torch.tensor(weights, dtype=torch.float32)
    ctx.folder.mkdir(parents=True, exist_ok=True)
    model_pt, model_json = ctx.folder / "model.pt", ctx.folder / "model.json"
    torch.save({"weight": w[:-1].reshape(1, -1), "bias": w[-1:].clone()}, model_pt)
    table = ctx.tables.get("train")
    meta = {
        "model": f"torch.nn.Linear({w.numel() - 1}, 1); P(class {_class(table, 1)}) = "
                 "sigmoid(output)",
        "load": "model = torch.nn.Linear(in_features, 1); "
                "model.load_state_dict(torch.load('model.pt'))",
        "in_features": int(w.numel() - 1),
        "columns": list(table.encoded_columns) if table is not None else None,
        "label": table.label if table is not None else None,
        "classes": list(table.classes) if table is not None else None,
        "scaling": {"ranges": {k: list(v) for k, v in table.ranges.items()},
                    "rule": "x' = (x - low) / (high - low) for every column with a range; "
                            "categorical columns one-hot as 'column=value'"}
        if table is not None else None,
        "protocol": ctx.protocol, "parameters": dict(ctx.params),
        "manifest_digest": ctx.manifest_digest, "metrics": ctx.revealed.get("metrics"),
    }
    model_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return [model_pt, model_json]


def _class(table: Any, index: int) -> str:
    return str(table.classes[index]) if table is not None and table.classes else str(index)


PROTOCOL = Protocol(
    name="logistic-regression",
    version="2",
    summary="logistic regression trained by SGD on the parties' pooled rows, evaluated on "
            "shares",
    run=run,
    params=(
        Param("epochs", int, 10, "passes over the training rows", minimum=1),
        Param("batch_size", int, 32, "rows per SGD step", minimum=1),
        Param("learning_rate", float, 1.0, "SGD step size", above=0),
        Param("sigmoid", str, "piecewise", "SecureML's piecewise-linear sigmoid, or CrypTen's "
              "exp + reciprocal", choices=approximations.SIGMOIDS),
        Param("shuffle", bool, True, "mix the parties' rows with the joint seed before training"),
        Param("test_fraction", float, 0.2, "share of the shuffled rows held out for evaluation "
              "when no party provides test rows", minimum=0, maximum=0.9),
    ),
    inputs=(
        Input("train", "labelled rows to train on", classes=2),
        Input("test", "labelled rows to evaluate on", required=False, classes=2),
    ),
    outputs=(
        Output("metrics", "accuracy, precision, recall, F1, ROC AUC and the confusion matrix on "
               "the test rows"),
        Output("weights", "the trained model: one weight per encoded column, then the intercept",
               export=export_model, optional=True),
    ),
    plaintext=plaintext,
    compare="metrics",
)
