"""Cheaper secure approximations of nonlinear functions, each with its plaintext twin.

CrypTen's sigmoid (exp by repeated squaring, then a Newton-Raphson reciprocal)
costs about 40 rounds and most of a training step's compute. For training, the
piecewise-linear sigmoid of SecureML (Mohassel & Zhang, 2017) needs one batched
comparison and one multiplication:

    sigmoid(z) ~ clip(1/2 + z/4, 0, 1) = relu(z/4 + 1/2) - relu(z/4 - 1/2)

It has the true sigmoid's value and slope at 0 and saturates at |z| >= 2 (error
at most 0.12, at |z| = 2). The accuracy it trains to is checked against the
exact sigmoid in plaintext by the tests and the benchmark.
"""

from __future__ import annotations

from typing import Any

import torch

SIGMOIDS = ("piecewise", "exact")


def piecewise_sigmoid(z: Any) -> Any:
    """clip(1/2 + z/4, 0, 1) on a CrypTen tensor: one comparison of 2x the elements."""
    return piecewise_sigmoid_of_quarter(z * 0.25)


def piecewise_sigmoid_of_quarter(q: Any) -> Any:
    """The same sigmoid given q = z/4 (a caller that already holds z/4 saves the product)."""
    import crypten

    ramps = crypten.stack([q + 0.5, q - 0.5]).relu()
    return ramps[0] - ramps[1]


def piecewise_sigmoid_plain(z: torch.Tensor) -> torch.Tensor:
    """The same function in plaintext."""
    return (0.5 + z / 4).clamp(0.0, 1.0)


def sigmoid(z: Any, method: str) -> Any:
    """`method` 'piecewise' or 'exact' (CrypTen's own) on a CrypTen tensor."""
    if method == "piecewise":
        return piecewise_sigmoid(z)
    if method == "exact":
        return z.sigmoid()
    raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {method!r}")


def sigmoid_plain(z: torch.Tensor, method: str) -> torch.Tensor:
    """The plaintext twin of `sigmoid`."""
    return piecewise_sigmoid_plain(z) if method == "piecewise" else torch.sigmoid(z)
