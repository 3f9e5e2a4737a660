"""Training loops on shares, each with its plaintext twin."""

from __future__ import annotations

from typing import Any

import torch

from protocols.blocks import approximations


def batches(rows: int, batch: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) mini-batches over the pooled row order."""
    return [(s, min(s + batch, rows)) for s in range(0, rows, batch)]


def logistic_sgd_epoch(x: Any, y: Any, w: Any, batch_size: int, lr: float, sigmoid: str) -> Any:
    """One epoch of mini-batch SGD for logistic regression on shares; returns the new w.

    x (rows, k) holds a column of ones for the intercept, y (rows, 1) is 0/1,
    w (k, 1). The update is plain gradient descent on the cross-entropy:

        w <- w - lr/|B| * X_B^T (sigmoid(X_B w) - y_B)

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


def logistic_sgd_epoch_plain(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                             batch_size: int, lr: float, sigmoid: str) -> torch.Tensor:
    """The same epoch in float64 (x with its column of ones)."""
    for start, end in batches(x.shape[0], batch_size):
        err = approximations.sigmoid_plain(x[start:end] @ w, sigmoid) - y[start:end]
        w = w - x[start:end].T @ err * (lr / (end - start))
    return w
