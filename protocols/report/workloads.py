"""The models `smpc tradeoff` compares, one :class:`Workload` per consortium protocol.

A workload says, for the model a consortium trains, how to train it in plaintext on
any rows (each party alone, pooled, a k-anonymized extract, synthetic rows), its
logits and per-row losses (evaluation and membership inference), and which smpc
protocols give its private variants with which settings: MPC as the consortium runs
it, DP-SGD inside MPC, federated averaging with secure aggregation, with and without
distributed DP. A variant a model does not have yet is None, and the trade-off marks
its rows "not available".

Two are here: logistic regression (binary: accuracy, precision, recall, F1, AUC) and the
neural network (K classes: accuracy and macro-F1; its DP variant dp-neural-network, its
federated variant federated-averaging with the same class and clipped updates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from protocols.api import Budget, Params, PlainTable, public_generator
from protocols.blocks import metrics, training
from protocols.federated import local_network
from protocols.federated.local_models import one_thread
from protocols.horizontal import dp_logistic_regression
from protocols.neural import dp_network, network
from protocols.neural import model as models
from protocols.report import membership


@dataclass(frozen=True)
class Workload:
    """One model family, as the trade-off trains, scores and privatizes it."""

    protocol: str  # the consortium's protocol (the MPC row runs it as it is)
    # plaintext training on rows (x, y) with the consortium's parameters -> the model
    fit: Callable[[torch.Tensor, torch.Tensor, Params, bytes], Any]
    logits: Callable[[Any, torch.Tensor], torch.Tensor]
    losses: Callable[[Any, torch.Tensor, torch.Tensor], np.ndarray]
    # a revealed model (the protocols' output `output`, dp_protocol's and federated-averaging's
    # revealed model), the consortium's parameters and the column count -> the model
    weights_of: Callable[[Any, Params, int], Any]
    output: str = "weights"  # the consortium protocol's output that holds the trained model
    dp_protocol: str | None = None  # DP-SGD inside MPC
    dp_parameters: Callable[[Params, int], dict[str, Any]] | None = None
    dp_output: str = "weights"  # dp_protocol's output that holds the model (with "privacy")
    # dp_protocol's plaintext twin WITH its noise (inputs, params, seed, budget) -> that output
    dp_simulate: Callable[[dict[str, list[PlainTable]], Params, bytes, Budget], Any] | None = None
    federated_model: str | None = None  # federated-averaging's `model`
    federated_parameters: Callable[[Params, int, bool], dict[str, Any]] | None = None

    def evaluate(self, model: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Accuracy, precision, recall, F1, AUC of the model on rows (x, y); with K > 2
        classes (one score per class) accuracy, 'f1' = macro-F1 and no AUC."""
        scores = self.logits(model, x).double()
        if scores.dim() == 2 and scores.shape[1] > 1:
            measured = metrics.multiclass_metrics_plain(scores, y, scores.shape[1])
            return {**measured, "f1": measured["macro_f1"], "per_class_f1": measured["f1"],
                    "auc": None}
        return metrics.binary_metrics_plain(scores.reshape(-1, 1), y.double())

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


def _logistic_weights(revealed: Any, params: Params, columns: int) -> list[float]:
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
    dp_simulate=lambda inputs, params, seed, budget: dp_logistic_regression.simulate(
        inputs, params, seed, budget)["weights"],
    federated_model="logistic-regression",
    federated_parameters=_federated_parameters,
)



def _fit_network(x: torch.Tensor, y: torch.Tensor, params: Params, seed: bytes
                 ) -> torch.nn.Module:
    """neural-network's plaintext twin on these rows (shuffled with the seed, as the protocol
    shuffles the pooled rows), one score per class of the model."""
    order = torch.randperm(x.shape[0], generator=public_generator(seed, "tradeoff:fit"))
    classes = int(_network_logits(_fresh(params, x.shape[1]), x[:2]).shape[1])
    with one_thread():
        model, _ = network.fit_plain(x[order].double(), y[order].reshape(-1).long(), params,
                                     seed, classes)
    return model


def _fresh(params: Params, columns: int) -> torch.nn.Module:
    """The consortium's class, built, its final softmax (if any) skipped, in float64."""
    spec = models.spec(params)
    return models.without_final_softmax(models.build(spec), columns).double().eval()


def _network_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), one_thread():
        return model(x.double())


def _network_weights(revealed: Any, params: Params, columns: int) -> torch.nn.Module:
    """The module of a revealed model: neural-network's {key: values}, dp-neural-network's
    {"state_dict": ..., "privacy"} or federated-averaging's {"weights": flat, ...}."""
    if isinstance(revealed, dict) and "weights" in revealed:
        flat = torch.tensor(revealed["weights"], dtype=torch.float64)
        return local_network.network(params)._load(flat, columns).eval()
    state = revealed["state_dict"] if isinstance(revealed, dict) and "state_dict" in revealed \
        else revealed
    module = _fresh(params, columns)
    own = module.state_dict()
    module.load_state_dict({k: torch.tensor(state[k], dtype=v.dtype).reshape(v.shape)
                            if k in state else v for k, v in own.items()})
    return module.eval()


def _dp_network_parameters(params: Params, columns: int) -> dict[str, Any]:
    """DP-SGD as examples/digits/consortium-dp.toml tunes it: 5 epochs of expected batches of
    64, learning rate 2, each example's gradient clipped to norm 1."""
    return {"model": params.model, "model_args": dict(params.model_args), "epochs": 5,
            "batch_size": 64, "learning_rate": 2.0, "max_grad_norm": 1.0}


def _federated_network_parameters(params: Params, columns: int, private: bool
                                  ) -> dict[str, Any]:
    """federated-averaging of the class as examples/digits/consortium-federated.toml tunes it
    (10 rounds of 2 local epochs, batches of 32, learning rate 0.1, momentum 0.9); with DP as
    benchmarks/dp_fl.py runs it: each party's update clipped to norm 1 (DP-FedAvg's S), 2 rounds
    of 5 local epochs (the fewer rounds, the less noise each)."""
    out = {"model": params.model, "model_args": dict(params.model_args), "rounds": 10,
           "local_epochs": 2, "batch_size": 32, "learning_rate": 0.1, "momentum": 0.9}
    return {**out, "rounds": 2, "local_epochs": 5, "clipping_norm": 1.0} if private else out


NETWORK = Workload(
    protocol="neural-network",
    fit=_fit_network,
    logits=_network_logits,
    losses=lambda model, x, y: membership.cross_entropy_losses(_network_logits(model, x), y),
    weights_of=_network_weights,
    output="model",
    dp_protocol="dp-neural-network",
    dp_parameters=_dp_network_parameters,
    dp_output="model",
    dp_simulate=lambda inputs, params, seed, budget: dp_network.simulate(
        inputs, params, seed, budget)["model"],
    federated_model="the consortium's class",
    federated_parameters=_federated_network_parameters,
)

WORKLOADS: dict[str, Workload] = {"logistic-regression": LOGISTIC, "neural-network": NETWORK}


def pooled(tables: list[PlainTable]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every party's rows, in rank order: (features, labels)."""
    x = torch.cat([t.features for t in tables]).double()
    y = torch.cat([t.labels for t in tables if t.labels is not None]).double()
    return x, y
