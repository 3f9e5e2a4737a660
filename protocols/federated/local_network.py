"""A consortium's PyTorch network as a federated-averaging local model.

The model is named as in neural-network (protocols/neural/model.py): a class in
a file beside the consortium file or in an installed package, with its keyword
arguments; its source is in the manifest's code hash. Federated averaging sees
it as one flat float64 vector: every floating-point entry of its state_dict
(parameters, then BatchNorm's running statistics, in state_dict order), so the
secure average covers the buffers as Flower's FedAvg does with the state_dict's
arrays. BatchNorm's integer counter ``num_batches_tracked`` is not averaged.

Local training is mini-batch SGD (momentum optional, restarted each round) on
the mean cross-entropy over the K classes, in float64, on one thread. Dropout
masks come from torch's generator seeded from the round's public local order,
so the plaintext twin reproduces them.

Differential privacy. No bound on one row's influence holds for a non-convex
loss trained for several steps, so the party's whole update is clipped to
``clipping_norm`` S (DP-FedAvg [McMahan et al. 2018]): u_i = Delta_i min(1,
S/||Delta_i||). Replacing any rows of one party -- one row in particular --
moves its clipped update by at most 2S, and its weighted update (n_i/N) u_i by
at most 2S n_i/N (the counts are public and unchanged): the sensitivity the
noise is calibrated to, which protects a whole party's data as well as a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from protocols.api import Params
from protocols.federated.local_models import one_thread
from protocols.neural import model as models


@dataclass(frozen=True)
class LocalNetwork:
    """The consortium's model class, trained locally by each party with cross-entropy."""

    spec: models.ModelSpec
    momentum: float = 0.0
    dtype: torch.dtype = torch.float64

    @property
    def name(self) -> str:
        return self.spec.reference

    def module(self, columns: int, seed: int = 0) -> nn.Module:
        """A fresh module (its final Softmax/LogSoftmax, if any, skipped: trained on scores)."""
        return models.without_final_softmax(models.build(self.spec, seed), columns).to(self.dtype)

    def _keys(self, module: nn.Module) -> list[str]:
        return [k for k, v in module.state_dict().items() if v.is_floating_point()]

    def initial(self, columns: int, seed: int = 0) -> torch.Tensor:
        """The starting global model: the class's initial weights under the joint seed's
        torch seed `seed` (every party builds the same), flattened."""
        return self._flatten(self.module(columns, seed))

    def _flatten(self, module: nn.Module) -> torch.Tensor:
        state = module.state_dict()
        return torch.cat([state[k].reshape(-1).to(self.dtype) for k in self._keys(module)])

    def _load(self, flat: torch.Tensor, columns: int) -> nn.Module:
        module = self.module(columns)
        state = module.state_dict()
        at = 0
        for key in self._keys(module):
            n = state[key].numel()
            state[key] = flat[at:at + n].reshape(state[key].shape).to(self.dtype)
            at += n
        if at != flat.numel():
            raise ValueError(f"{flat.numel()} values for a model of {at}")
        module.load_state_dict(state)
        return module

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The class scores (rows x K) of rows x, in evaluation mode."""
        with torch.no_grad(), one_thread():
            return self._load(flat, x.shape[1]).eval()(x.to(self.dtype))

    def train(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, epochs: int,
              batch_size: int, learning_rate: float, generator: torch.Generator,
              bound: Any = None) -> torch.Tensor:
        """`epochs` passes of mini-batch SGD from `flat` on rows (x, y class indices); the new
        flat model. Each pass takes a fresh permutation from `generator` and steps on its
        floor(rows / batch_size) full batches (`bound` is unused: a network's update is
        clipped as a whole, see the module's docstring)."""
        with one_thread(), torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            module = self._load(flat, x.shape[1]).train()
            x, labels = x.to(self.dtype), y.reshape(-1).long()
            optimizer = torch.optim.SGD(module.parameters(), lr=learning_rate,
                                        momentum=self.momentum)
            loss = nn.CrossEntropyLoss()
            for _ in range(epochs):
                order = torch.randperm(x.shape[0], generator=generator)
                for k in range(x.shape[0] // batch_size):
                    rows = order[k * batch_size:(k + 1) * batch_size]
                    optimizer.zero_grad()
                    loss(module(x[rows]), labels[rows]).backward()
                    optimizer.step()
            return self._flatten(module).detach()

    def state_dict(self, flat: list[float], columns: int) -> dict[str, torch.Tensor]:
        """The trained module's state_dict in the class's own dtypes, for export (a final
        softmax the class has is kept: the file loads into the class as it is)."""
        module = models.build(self.spec)
        own = module.state_dict()
        loaded = self._load(torch.tensor(flat, dtype=self.dtype), columns).state_dict()
        return {k: loaded[k].to(v.dtype) if k in loaded else v for k, v in own.items()}


def clipped(update: torch.Tensor, clipping_norm: float) -> torch.Tensor:
    """The update scaled to L2 norm at most `clipping_norm` (DP-FedAvg's client clipping)."""
    norm = float(update.norm())
    return update if norm <= clipping_norm else update * (clipping_norm / norm)


def network(params: Params) -> LocalNetwork:
    """The local model of `params.model` (a class reference) and `params.model_args`."""
    return LocalNetwork(models.spec(params), momentum=params.momentum)
