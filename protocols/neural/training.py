"""Training a network on shares, and the same training in float64 (the plaintext twin).

One step on a mini-batch B of the pooled rows:

1. the forward pass through the secure graph (CrypTen's autograd records it);
2. the gradient of the mean cross-entropy with respect to the class scores,
   p/|B| - y/|B| (protocols/blocks/approximations.softmax_gradient): the loss
   itself is not needed for it;
3. the backward pass (CrypTen's autograd);
4. one SGD-with-momentum update of every parameter in one truncation round
   (protocols/blocks/optimizers.sgd_step).

The loss is computed only when the manifest reveals it, once per epoch for
every row at once (one logarithm call, not one per step): row r of step s
has loss ln S_r - x_{r,y} with x = z - max z and S = sum e^x, which the steps
keep. The twin does the same arithmetic in float64 with PyTorch's autograd on
the original model, from the same initial weights, in the same batch order,
with the same approximations and the same public dropout masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from protocols.api import public_generator
from protocols.blocks import approximations, optimizers
from protocols.blocks.training import batches

PUBLIC_DROPOUT = "crypten-global"  # the joint-seed purpose of CrypTen's dropout masks


@dataclass(frozen=True)
class Settings:
    """The public settings of every step."""

    batch_size: int
    momentum: float
    weight_decay: float
    exp_iterations: int
    classes: int


@dataclass
class EpochLog:
    """What an epoch keeps for its loss: per step, the shifted scores x and the sums S."""

    spans: list[tuple[int, int]]
    shifted: list[Any] = field(default_factory=list)
    sums: list[Any] = field(default_factory=list)


def spans(rows: int, batch_size: int) -> list[tuple[int, int]]:
    """Mini-batches over the pooled row order; a last batch of one row joins the one before
    (BatchNorm needs two rows to estimate a variance)."""
    out = batches(rows, batch_size)
    if len(out) > 1 and out[-1][1] - out[-1][0] < 2:
        out[-2:] = [(out[-2][0], out[-1][1])]
    return out


def scaled_targets(onehot: Any, spans_: list[tuple[int, int]]) -> Any:
    """y / |B| for every row: one-hot bits (scale 1) times the public 1/|B| of the row's batch."""
    factors = torch.cat([torch.full((end - start, 1), 1.0 / (end - start))
                         for start, end in spans_])
    return approximations.fixed(onehot, factors)


def secure_epoch(model: Any, x: Any, targets: Any, lr: float, s: Settings,
                 velocity: list[Any], keep_loss: bool) -> tuple[list[Any], EpochLog]:
    """One epoch of SGD on shares; returns the new velocity and what the loss needs."""
    import crypten

    log = EpochLog(spans(x.size(0), s.batch_size))
    params = [p for _, p in model.named_parameters()]
    for start, end in log.spans:
        model.zero_grad()
        scores = model(x[start:end])
        with crypten.no_grad():
            p_over_b, shifted, sums = approximations.softmax_gradient(scores, end - start,
                                                                       s.exp_iterations)
            grad = p_over_b - targets[start:end]
        scores.backward(grad)
        with crypten.no_grad():
            weights, velocity = optimizers.sgd_step(params, [p.grad for p in params], velocity,
                                                    lr, s.momentum, s.weight_decay)
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)
        if keep_loss:
            log.shifted.append(shifted)
            log.sums.append(sums)
    return velocity, log


def step_losses(log: EpochLog, onehot: Any) -> Any:
    """The mean cross-entropy of every step of the epoch, as shares (steps,).

    ln S_r - x_{r,y}: one product with the one-hot bits (no truncation), one
    logarithm over every row (CrypTen's, S in [1, K]), one public averaging matrix.
    """
    import crypten

    shifted, sums = crypten.cat(log.shifted), crypten.cat(log.sums)
    rows = shifted.size(0)
    picked = (onehot[:rows] * shifted).sum(1, keepdim=True)
    per_row = sums.log() - picked  # (rows, 1)
    return per_row.t().matmul(_averaging(log.spans)).reshape(-1)


def _averaging(spans_: list[tuple[int, int]]) -> torch.Tensor:
    """(rows, steps): column s averages the rows of step s."""
    rows = spans_[-1][1]
    out = torch.zeros(rows, len(spans_))
    for step, (start, end) in enumerate(spans_):
        out[start:end, step] = 1.0 / (end - start)
    return out


def diverged(losses: list[float]) -> int | None:
    """The first step whose loss is not a cross-entropy (NaN, infinite, or beyond what fixed
    point can hold: an overflow), or None."""
    for step, value in enumerate(losses):
        if not math.isfinite(value) or not -1.0 <= value <= LOSS_LIMIT:
            return step
    return None


LOSS_LIMIT = 1e4  # ln K + the largest score gap the exp handles is far below this


# ---------------------------------------------------------------- the plaintext twin

class PublicDropout(nn.Module):
    """nn.Dropout with the secure run's public masks: u > p for u ~ U[0, 1) drawn in order
    from the joint seed's CrypTen-global generator, then scaled by 1/(1 - p)."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        mask = (torch.rand(x.shape, generator=self.generator) > self.p).to(x.dtype)
        return x * mask / (1 - self.p)


def plain_model(model: nn.Module, seed: bytes) -> nn.Module:
    """The twin's copy of the model in float64, its Dropout layers drawing the secure run's
    public masks."""
    generator = public_generator(seed, PUBLIC_DROPOUT)
    twin = _replace_dropout(model, generator)
    return twin.double()


def _replace_dropout(module: nn.Module, generator: torch.Generator) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout):
            setattr(module, name, PublicDropout(child.p, generator))
        else:
            _replace_dropout(child, generator)
    return module


def plain_epoch(model: nn.Module, x: torch.Tensor, onehot: torch.Tensor, lr: float,
                s: Settings, velocity: list[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[float]]:
    """The same epoch in float64; returns the new velocity and every step's loss."""
    params = list(model.parameters())
    losses = []
    for start, end in spans(x.shape[0], s.batch_size):
        model.zero_grad()
        scores = model(x[start:end])
        p_over_b, shifted, sums = approximations.softmax_gradient_plain(
            scores.detach(), end - start, s.exp_iterations)
        y = onehot[start:end]
        scores.backward(p_over_b - y / (end - start))
        losses.append(float((sums.log() - (y * shifted).sum(1, keepdim=True)).mean()))
        with torch.no_grad():
            weights, velocity = optimizers.sgd_step_plain(
                [p.detach() for p in params], [p.grad for p in params], velocity, lr,
                s.momentum, s.weight_decay)
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)
    return velocity, losses
