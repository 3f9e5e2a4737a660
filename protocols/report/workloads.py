"""The models `smpc tradeoff` compares, one :class:`Workload` per consortium protocol.

A workload says, for the model a consortium trains, how to train it in plaintext on
any rows (each party alone, pooled, a k-anonymized extract, synthetic rows), its
logits and per-row losses (evaluation and membership inference), and which smpc
protocols give its private variants with which settings: MPC as the consortium runs
it, DP-SGD inside MPC, federated averaging with secure aggregation, with and without
distributed DP. A variant a model does not have yet is None, and the trade-off marks
its rows "not available".

Only logistic regression is here. A neural-network workload (issue 13's protocols)
plugs in as another entry of :data:`WORKLOADS` keyed by its protocol name, with its
own `fit`/`logits` and its DP and federated protocols (or None).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from protocols.api import Params, PlainTable, public_generator
from protocols.blocks import metrics, training
from protocols.report import membership


@dataclass(frozen=True)
class Workload:
    """One model family, as the trade-off trains, scores and privatizes it."""

    protocol: str  # the consortium's protocol (the MPC row runs it as it is)
    # plaintext training on rows (x, y) with the consortium's parameters -> the model
    fit: Callable[[torch.Tensor, torch.Tensor, Params, bytes], Any]
    logits: Callable[[Any, torch.Tensor], torch.Tensor]
    losses: Callable[[Any, torch.Tensor, torch.Tensor], np.ndarray]
    weights_of: Callable[[Any], Any]  # a revealed 'weights' output -> the model
    dp_protocol: str | None = None  # DP-SGD inside MPC
    dp_parameters: Callable[[Params, int], dict[str, Any]] | None = None
    federated_model: str | None = None  # federated-averaging's `model`
    federated_parameters: Callable[[Params, int, bool], dict[str, Any]] | None = None

    def evaluate(self, model: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Accuracy, precision, recall, F1, AUC of the model on rows (x, y)."""
        return metrics.binary_metrics_plain(self.logits(model, x).double().reshape(-1, 1),
                                            y.double())

    def leak(self, model: Any, members: tuple[torch.Tensor, torch.Tensor],
             non_members: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        """Yeom et al.'s membership advantage of the model (membership.py)."""
        return membership.advantage(self.losses(model, *members),
                                    self.losses(model, *non_members))


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, params: Params, seed: bytes) -> list[float]:
    """logistic-regression's training in float64 on these rows (shuffled with the seed, as
    the protocol shuffles the pooled rows)."""
    order = torch.randperm(x.shape[0], generator=public_generator(seed, "tradeoff:fit"))
    x, y = x[order].double(), y[order].double().reshape(-1, 1)
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    wb = torch.zeros(design.shape[1], 1, dtype=torch.float64)
    for _ in range(params.epochs):
        wb = training.logistic_sgd_epoch_plain(design, y, wb, params.batch_size,
                                               params.learning_rate, params.sigmoid)
    return wb.reshape(-1).tolist()


def _logistic_logits(weights: list[float], x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(weights, dtype=torch.float64)
    return x.double() @ w[:-1] + w[-1]


def _logistic_weights(revealed: Any) -> list[float]:
    """'weights' as logistic-regression ([w..., b]), dp-logistic-regression and
    federated-averaging ({"weights": [w..., b], ...}) reveal them."""
    return list(revealed["weights"] if isinstance(revealed, dict) else revealed)


def _dp_parameters(params: Params, columns: int) -> dict[str, Any]:
    """DP-SGD as examples/hospitals/consortium-dp.toml tunes it: fewer, larger, noisier steps
    (5 epochs of expected batches of 64, learning rate 4, each example's gradient bounded
    by 1)."""
    return {"epochs": 5, "batch_size": 64, "learning_rate": 4.0, "max_grad_norm": 1.0,
            "sigmoid": params.sigmoid}


def _federated_parameters(params: Params, columns: int, private: bool) -> dict[str, Any]:
    """federated-averaging as examples/hospitals/consortium-federated.toml and
    benchmarks/dp_fl.py tune it; with DP the step stays below 2/beta of the row bound
    (C = 1, R = sqrt(columns + 1)) so that the sensitivity bound holds."""
    if not private:
        return {"model": "logistic-regression", "rounds": 10, "local_epochs": 2,
                "batch_size": 16, "learning_rate": 1.0}
    largest = 2 / (1.0 * math.sqrt(columns + 1) / 4)
    return {"model": "logistic-regression", "rounds": 20, "local_epochs": 1, "batch_size": 16,
            "learning_rate": round(min(1.4, 0.97 * largest), 4), "max_grad_norm": 1.0}


LOGISTIC = Workload(
    protocol="logistic-regression",
    fit=_fit_logistic,
    logits=_logistic_logits,
    losses=membership.logistic_losses,
    weights_of=_logistic_weights,
    dp_protocol="dp-logistic-regression",
    dp_parameters=_dp_parameters,
    federated_model="logistic-regression",
    federated_parameters=_federated_parameters,
)

WORKLOADS: dict[str, Workload] = {"logistic-regression": LOGISTIC}


def pooled(tables: list[PlainTable]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every party's rows, in rank order: (features, labels)."""
    x = torch.cat([t.features for t in tables]).double()
    y = torch.cat([t.labels for t in tables if t.labels is not None]).double()
    return x, y
