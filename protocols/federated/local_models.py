"""The models a party trains on its own rows in federated averaging, behind one interface.

A :class:`LocalModel` is a torch ``nn.Module`` factory plus what federated
averaging needs around it: its parameters as one flat vector (what is summed on
shares), local mini-batch SGD, logits for evaluation, and, for differential
privacy, a bound on how far one row can move the locally trained parameters. A
network named by the consortium is protocols/federated/local_network.py's
LocalNetwork, with the same methods (its DP bound clips the whole update).

Logistic regression is ``nn.Linear(k, 1)`` with a sigmoid on the logit
(``BCEWithLogitsLoss``), trained in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters


@dataclass(frozen=True)
class RowBound:
    """Per-row loss weights that bound each row's gradient and the loss's smoothness.

    A row x (with its intercept 1, ||x|| its norm) gets the weight
    c = min(1, C/||x||, C R/||x||^2): the weighted logistic loss c l(w; x, y) is then
    convex, C-Lipschitz (its gradient c (sigmoid - y) x has norm <= c ||x|| <= C) and
    beta-smooth with beta = c ||x||^2 / 4 <= C R / 4 (the logistic loss's curvature is
    at most 1/4). R = sqrt(columns + 1) bounds ||x|| when every column lies in [0, 1],
    so only rows with an unscaled column get the third factor.
    """

    clip: float  # C
    radius: float  # R

    @property
    def smoothness(self) -> float:
        return self.clip * self.radius / 4

    def weights(self, design: torch.Tensor) -> torch.Tensor:
        norms = design.norm(dim=1).clamp_min(1e-12)
        return torch.minimum(torch.ones_like(norms), torch.minimum(
            self.clip / norms, self.clip * self.radius / norms**2))


@dataclass(frozen=True)
class LocalModel:
    """A model federated averaging trains locally: a module factory and how to train it."""

    name: str
    module: Callable[[int], nn.Module]  # input columns -> a fresh module (1 logit out)
    convex: bool = False  # logistic loss of a linear model: a DP sensitivity bound exists
    dtype: torch.dtype = torch.float64

    def initial(self, columns: int, seed: int = 0) -> torch.Tensor:
        """The starting global parameters (zeros: every party agrees without messages; `seed`
        is unused)."""
        return torch.zeros(self._count(columns), dtype=self.dtype)

    def _count(self, columns: int) -> int:
        return sum(p.numel() for p in self.module(columns).parameters())

    def _load(self, flat: torch.Tensor, columns: int) -> nn.Module:
        module = self.module(columns).to(self.dtype)
        vector_to_parameters(flat.to(self.dtype).clone(), module.parameters())
        return module

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's logits (rows x 1) for rows x."""
        with torch.no_grad():
            return self._load(flat, x.shape[1])(x.to(self.dtype))

    def train(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, epochs: int,
              batch_size: int, learning_rate: float, generator: torch.Generator,
              bound: RowBound | None = None) -> torch.Tensor:
        """`epochs` passes of mini-batch SGD from `flat` on rows (x, y); the new parameters.

        Each pass takes a fresh permutation from `generator` and steps on its
        floor(rows / batch_size) full batches (a partial last batch is left for the next
        pass: the DP bound needs every step to average exactly batch_size rows).
        """
        with one_thread():
            return self._train(flat, x, y, epochs, batch_size, learning_rate, generator, bound)

    def _train(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, epochs: int,
               batch_size: int, learning_rate: float, generator: torch.Generator,
               bound: RowBound | None) -> torch.Tensor:
        module = self._load(flat, x.shape[1])
        x, y = x.to(self.dtype), y.to(self.dtype)
        weights = torch.ones(x.shape[0], dtype=self.dtype)
        if bound is not None:
            weights = bound.weights(torch.cat([x, torch.ones(x.shape[0], 1, dtype=self.dtype)],
                                              dim=1))
        optimizer = torch.optim.SGD(module.parameters(), lr=learning_rate)
        loss = nn.BCEWithLogitsLoss(reduction="none")
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=generator)
            for k in range(x.shape[0] // batch_size):
                rows = order[k * batch_size:(k + 1) * batch_size]
                optimizer.zero_grad()
                (loss(module(x[rows]), y[rows]).reshape(-1) * weights[rows]).mean().backward()
                optimizer.step()
        return parameters_to_vector(module.parameters()).detach()

    def sensitivity(self, bound: RowBound, epochs: int, batch_size: int,
                    learning_rate: float) -> float | None:
        """How far replacing one row can move the locally trained parameters (L2), or None
        when no bound is known for this model.

        Convex, C-Lipschitz, beta-smooth loss, constant step eta <= 2/beta, `epochs` passes
        of batches of b rows: at most 2 epochs eta C / b [Wu et al. 2017, Bolt-on DP,
        from the growth recursion of Hardt et al. 2016]. The caller checks eta <= 2/beta.
        """
        if not self.convex:
            return None
        return 2 * epochs * learning_rate * bound.clip / batch_size

    def largest_step(self, bound: RowBound) -> float:
        """2/beta: the largest learning rate the sensitivity bound holds for."""
        return 2 / bound.smoothness

    def state_dict(self, flat: list[float], columns: int) -> dict[str, torch.Tensor]:
        """The trained module's state_dict (float32), for export."""
        module = self._load(torch.tensor(flat, dtype=self.dtype), columns)
        return {k: v.float() for k, v in module.state_dict().items()}


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: for models this small a thread pool only adds waiting (25x
    slower on a busy 2-core machine). Party processes already run with one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def row_bound(columns: int, max_grad_norm: float) -> RowBound:
    """C = max_grad_norm, or R = sqrt(columns + 1) (nothing clipped when every column is in
    [0, 1]) when it is 0."""
    radius = math.sqrt(columns + 1)
    return RowBound(max_grad_norm or radius, radius)


MODELS: dict[str, LocalModel] = {
    "logistic-regression": LocalModel("logistic-regression", lambda k: nn.Linear(k, 1),
                                      convex=True),
}
