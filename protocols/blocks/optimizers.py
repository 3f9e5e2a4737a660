"""Optimizers on shares: mini-batch SGD with momentum and weight decay, and its twin.

PyTorch's SGD [Sut13]: v <- mu v + g + wd w, w <- w - lr v (v starts at 0).
On shares every parameter's update is a public linear map of (v, g, w), so
the whole model's step is one public matrix product of the stacked, flattened
tensors and one truncation round, whatever the number of parameter tensors
(CrypTen's update_parameters truncates tensor by tensor).

Adam is not offered: its second moment squares gradients whose entries are
mostly 1e-4 to 1e-2, which underflow CrypTen's 16 fractional bits (2^-16 =
1.5e-5), and its 1/sqrt(v) would add an inverse square root (~25 rounds) to
every step (docs/decisions.md).

[Sut13] Sutskever, Martens, Dahl, Hinton. On the importance of initialization and
        momentum in deep learning. ICML 2013.
"""

from __future__ import annotations

import math
from typing import Any

import torch

SCHEDULES = ("constant", "step", "cosine")


def learning_rate(base: float, schedule: str, epoch: int, epochs: int, step_every: int,
                  gamma: float) -> float:
    """The public learning rate of `epoch` (0-based): constant, x gamma every `step_every`
    epochs (torch's StepLR), or cosine annealing from base to 0 (torch's CosineAnnealingLR)."""
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * gamma ** (epoch // step_every)
    if schedule == "cosine":
        return base * (1 + math.cos(math.pi * epoch / epochs)) / 2
    raise ValueError(f"learning-rate schedule must be one of {SCHEDULES}, got {schedule!r}")


def sgd_step(weights: list[Any], grads: list[Any], velocity: list[Any], lr: float,
             momentum: float, weight_decay: float) -> tuple[list[Any], list[Any]]:
    """One SGD step on shares for every parameter tensor at once: (new weights, new velocity).

    [v' ; lr v'] = [[mu, 1, wd], [lr mu, lr, lr wd]] @ [v ; g ; w]: one public
    product, one truncation round.
    """
    import crypten

    v, g, w = (crypten.cat([t.reshape(-1) for t in ts]) for ts in (velocity, grads, weights))
    rows, coefficients = [v, g], [[momentum, 1.0], [lr * momentum, lr]]
    if weight_decay:
        rows.append(w)
        coefficients[0].append(weight_decay)
        coefficients[1].append(lr * weight_decay)
    mixed = crypten.stack(rows).t().matmul(torch.tensor(coefficients).t())  # (n, 2)
    return _split(w - mixed[:, 1], weights), _split(mixed[:, 0], weights)


def _split(flat: Any, like: list[Any]) -> list[Any]:
    out, at = [], 0
    for t in like:
        n = t.numel() if hasattr(t, "numel") else int(torch.Size(t.size()).numel())
        out.append(flat[at:at + n].reshape(t.size()))
        at += n
    return out


def sgd_step_plain(weights: list[torch.Tensor], grads: list[torch.Tensor],
                   velocity: list[torch.Tensor], lr: float, momentum: float,
                   weight_decay: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The same step in float64."""
    new_v = [momentum * v + g + weight_decay * w for v, g, w in zip(velocity, grads, weights,
                                                                    strict=True)]
    return [w - lr * v for w, v in zip(weights, new_v, strict=True)], new_v
