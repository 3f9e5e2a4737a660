"""Logistic regression on horizontally partitioned data, trained and evaluated on shares.

Each party secret-shares its own rows (features already scaled with the
public ranges of the schema); the weights live only as shares. Training is
mini-batch SGD on the cross-entropy gradient, in CrypTen's fixed point:

    w <- w - lr/|B| * X_B^T (sigmoid(X_B w + b) - y_B)          (plain GD on shares)

The sigmoid is SecureML's piecewise-linear one by default (one comparison per
step instead of CrypTen's exp + reciprocal, ~5x fewer rounds; it trains to the
same accuracy here, see protocols/approximations.py); `sigmoid = "exact"` uses
CrypTen's. Evaluation needs no sigmoid at all: the class is `logit > 0` and
ROC AUC depends only on the order of the scores, which the logits already have.

Evaluation runs on the test rows, themselves spread across the parties. The
confusion matrix, accuracy, precision, recall, F1 and ROC AUC are computed on
shares (AUC as the Mann-Whitney statistic over all positive/negative pairs);
only these metrics are revealed, to the parties the manifest names for
"metrics". The weights are revealed only to the parties named for "weights".
"""

from __future__ import annotations

from typing import Any

import torch

from protocols.blocks import approximations
from protocols.session import Session

NAME = "logistic-regression"
VERSION = "1"
OUTPUTS = ("metrics", "weights")
DEFAULTS: dict[str, Any] = {"epochs": 10, "batch_size": 32, "learning_rate": 1.0,
                            "sigmoid": "piecewise"}


def parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The protocol's parameters with defaults filled in, checked for type and range."""
    out = {**DEFAULTS, **params}
    unknown = sorted(set(out) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {NAME} (known: {sorted(DEFAULTS)})")
    if not isinstance(out["epochs"], int) or out["epochs"] < 1:
        raise ValueError(f"epochs must be a positive integer, got {out['epochs']!r}")
    if not isinstance(out["batch_size"], int) or out["batch_size"] < 1:
        raise ValueError(f"batch_size must be a positive integer, got {out['batch_size']!r}")
    if not isinstance(out["learning_rate"], int | float) or out["learning_rate"] <= 0:
        raise ValueError(f"learning_rate must be positive, got {out['learning_rate']!r}")
    if out["sigmoid"] not in approximations.SIGMOIDS:
        raise ValueError(f"sigmoid must be one of {list(approximations.SIGMOIDS)}, "
                         f"got {out['sigmoid']!r}")
    return out


def batches(rows: int, batch: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) mini-batches over the pooled row order."""
    return [(s, min(s + batch, rows)) for s in range(0, rows, batch)]


def run(session: Session) -> dict[str, Any]:
    """Train on the parties' training rows, evaluate on their test rows, reveal as declared."""
    import crypten

    p = parameters(session.parameters)
    assert session.train is not None and session.test is not None
    x, y = _share_rows(crypten, session, session.train)
    rows, features = x.size(0), x.size(1)
    design = crypten.cat([x, crypten.cryptensor(torch.ones(rows, 1), src=0)], dim=1)
    w = crypten.cryptensor(torch.zeros(features, 1), src=0)
    b = crypten.cryptensor(torch.zeros(1), src=0)
    start = 0
    restored = session.restore()
    if restored is not None:
        start, state = restored
        w, b = state["w"], state["b"]
        session.progress("resumed", epoch=start, of=p["epochs"])
    for epoch in range(start, p["epochs"]):
        wb = sgd_epoch(design, y, crypten.cat([w, b.reshape(1, 1)]), p["batch_size"],
                       p["learning_rate"], p["sigmoid"])
        w, b = wb[:-1], wb[-1:].reshape(-1)
        session.checkpoint(epoch + 1, {"w": w, "b": b})
        session.progress("epoch", epoch=epoch + 1, of=p["epochs"])
    xt, yt = _share_rows(crypten, session, session.test)
    metrics = secure_metrics(xt.matmul(w) + b, yt)
    revealed = {"metrics": {k: _scalar(session.reveal("metrics", v)) for k, v in metrics.items()}}
    weights = session.reveal("weights", crypten.cat([w.reshape(-1), b.reshape(-1)]))
    revealed["weights"] = None if weights is None else weights.tolist()
    return revealed


def sgd_epoch(x: Any, y: Any, w: Any, batch_size: int, lr: float, sigmoid: str) -> Any:
    """One epoch of mini-batch SGD on shares: x (rows, k), y (rows, 1), w (k, 1); returns w.

    Rounds per step: the forward product, the sigmoid, the gradient product.
    Each row of x is scaled once per epoch by its batch's public step lr/|B|
    (one truncation for all steps), so the update w -= (step X_B)^T err needs
    no truncation of its own. With the piecewise sigmoid the epoch runs on
    w/4 (the step also carries the 1/4): z/4 = X_B (w/4) feeds
    clip(1/2 + z/4, 0, 1) = relu(z/4 + 1/2) - relu(z/4 - 1/2) directly, with
    no multiplication by 1/4 per step.
    """
    import crypten

    with crypten.no_grad():  # gradients are written out: skip CrypTen's autograd dispatch
        return _sgd_epoch(x, y, w, batch_size, lr, sigmoid)


def _sgd_epoch(x: Any, y: Any, w: Any, batch_size: int, lr: float, sigmoid: str) -> Any:
    spans = batches(x.size(0), batch_size)
    quarter = 0.25 if sigmoid == "piecewise" else 1.0
    steps = torch.cat([torch.full((end - start, 1), lr * quarter / (end - start))
                       for start, end in spans])
    x_step = x * steps
    w = w * quarter if sigmoid == "piecewise" else w
    for start, end in spans:
        z = x[start:end].matmul(w)
        if sigmoid == "piecewise":
            err = approximations.piecewise_sigmoid_of_quarter(z) - y[start:end]
        else:
            err = approximations.sigmoid(z, sigmoid) - y[start:end]
        w = w - x_step[start:end].t().matmul(err)
    return w * 4 if sigmoid == "piecewise" else w


def _scalar(value: Any) -> Any:
    if value is None:
        return None
    return value.tolist() if value.numel() > 1 else float(value.item())


def _share_rows(crypten: Any, session: Session, table: Any) -> tuple[Any, Any]:
    """Every party shares its own rows; the pooled tensor is their concatenation in rank order.

    Row counts are public (each party announces its count; shapes are public in MPC).
    """
    comm = crypten.communicator.get()
    counts = comm.all_gather(torch.tensor([table.features.shape[0]], dtype=torch.long))
    feats = table.features.shape[1]
    xs, ys = [], []
    for rank, count in enumerate(int(c.item()) for c in counts):
        mine = rank == session.rank
        xs.append(crypten.cryptensor(table.features if mine else torch.empty(count, feats),
                                     src=rank))
        ys.append(crypten.cryptensor(table.labels if mine else torch.empty(count, 1), src=rank))
    return crypten.cat(xs), crypten.cat(ys)


def secure_metrics(scores: Any, labels: Any) -> dict[str, Any]:
    """Confusion matrix, accuracy, precision, recall, F1 and ROC AUC of logits, as shares.

    Counts are divided by the public row count first, so every secret divisor
    lies in (0, 1] where CrypTen's Newton-Raphson reciprocal is accurate.
    """
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
    # AUC = P(score of a positive > score of a negative) over all pairs [Mann-Whitney]
    s = scores.reshape(-1)
    yv = labels.reshape(-1)
    greater = s.unsqueeze(1) > s.unsqueeze(0)  # greater[i, j] = s_i > s_j
    pairs = yv.unsqueeze(1) * (1 - yv).unsqueeze(0)
    share_pos = positives / n
    auc = ((greater * pairs).sum() / (n * n)) / (share_pos * (1 - share_pos) + eps / n)
    confusion = crypten_stack([tn, fp, fn, tp]).reshape(2, 2)
    return {
        "accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
        "auc": auc, "confusion_matrix": confusion,
    }


def crypten_stack(values: list[Any]) -> Any:
    import crypten

    return crypten.stack([v.reshape(1) for v in values]).reshape(-1)


# ---------------------------------------------------------------- plaintext reference

def plaintext(train: list[tuple[torch.Tensor, torch.Tensor]],
              test: list[tuple[torch.Tensor, torch.Tensor]],
              params: dict[str, Any]) -> dict[str, Any]:
    """The same training and metrics in float64 on pooled data (for comparison only)."""
    p = parameters(params)
    x = torch.cat([t[0] for t in train]).double()
    y = torch.cat([t[1] for t in train]).double()
    w = torch.zeros(x.shape[1], 1, dtype=torch.float64)
    b = torch.zeros(1, dtype=torch.float64)
    for _ in range(p["epochs"]):
        for start, end in batches(x.shape[0], p["batch_size"]):
            err = approximations.sigmoid_plain(x[start:end] @ w + b, p["sigmoid"]) - y[start:end]
            step = p["learning_rate"] / (end - start)
            w = w - x[start:end].T @ err * step
            b = b - err.sum(0) * step
    xt = torch.cat([t[0] for t in test]).double()
    yt = torch.cat([t[1] for t in test]).double()
    return plain_metrics(xt @ w + b, yt)


def plain_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """The same metrics of logits in float64."""
    pred = (scores > 0).double()
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
