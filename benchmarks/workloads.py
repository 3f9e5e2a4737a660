"""Benchmark workloads shared by every engine (smpc over gRPC, stock CrypTen over gloo).

Each workload takes an already-initialized `crypten` module and a function that
opens a secret result (smpc: `session.reveal`, the only opening its engine
allows; stock CrypTen: `get_plain_text`), runs one secret computation and
returns a dict of results. Nothing here is transport-specific: the caller sets
up the communicator and provider, and times the call.

Plaintext inputs come from a fixed public seed, so every party builds the same
tensors; each party then encrypts only what it owns (`src=` its rank). The
plaintext inputs and references are cached per process, so a warm-up call pays
for building them and the timed calls measure the secure computation.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

SEED = 20240601
"""Public seed all parties use to build identical plaintext inputs."""

LOGREG_LR = 1.0
"""Learning rate of the logistic-regression epoch (plaintext accuracy ~0.955 with it)."""


def _generator(tag: int) -> torch.Generator:
    """A CPU generator seeded from the public seed and a per-input tag."""
    return torch.Generator().manual_seed(SEED + tag)


@functools.cache
def _matmul_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, B, A @ B) for an n x n matmul, A and B ~ randn."""
    gen = _generator(n)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    expected = (a.double() @ b.double()).float()
    return a, b, expected


@functools.cache
def _relu_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, relu(x)) for n elements, x ~ randn."""
    x = torch.randn(n, generator=_generator(1_000_003 + n))
    return x, x.clamp(min=0)


@functools.cache
def _logreg_data(rows: int, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y): X ~ randn(rows, features), y = (X @ w + 0.5 noise > 0) for a random w."""
    gen = _generator(7 + 31 * rows + features)
    x = torch.randn(rows, features, generator=gen)
    w_true = torch.randn(features, 1, generator=gen)
    noise = torch.randn(rows, 1, generator=gen)
    y = ((x @ w_true + 0.5 * noise) > 0).float()
    return x, y


def _accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """Share of rows whose predicted class (x @ w > 0) matches y."""
    pred = (x.double() @ w.double() > 0).double()
    return float((pred == y.double()).double().mean())


@functools.cache
def _plaintext_logreg(rows: int, features: int, batch: int, lr: float) -> float:
    """Accuracy after the same SGD epoch in plaintext float64."""
    x, y = _logreg_data(rows, features)
    xd, yd = x.double(), y.double()
    w = torch.zeros(features, 1, dtype=torch.float64)
    from protocols.blocks.training import batches

    for start, end in batches(rows, batch):
        xb, yb = xd[start:end], yd[start:end]
        grad = xb.t() @ (torch.sigmoid(xb @ w) - yb)
        w -= grad * (lr / (end - start))
    return _accuracy(x, y, w)


def _row_slices(rows: int, parties: int) -> list[tuple[int, int]]:
    """Near-equal contiguous [start, end) row slices, one per party."""
    bounds = [rows * i // parties for i in range(parties + 1)]
    return list(itertools.pairwise(bounds))


Opener = Callable[[Any], torch.Tensor]


def plain_text(secret: Any) -> torch.Tensor:
    """Stock CrypTen's opening (what the gloo baseline uses)."""
    return secret.get_plain_text()


def matmul(crypten: ModuleType, n: int, open_: Opener = plain_text) -> dict[str, Any]:
    """n x n secret matmul (A from party 0, B from party 1), opened at the end."""
    a, b, expected = _matmul_inputs(n)
    world_size = crypten.communicator.get().get_world_size()
    a_enc = crypten.cryptensor(a, src=0)
    b_enc = crypten.cryptensor(b, src=1 % world_size)
    out = open_(a_enc.matmul(b_enc))
    return {"max_error": float((out - expected).abs().max())}


def relu(crypten: ModuleType, n: int, open_: Opener = plain_text) -> dict[str, Any]:
    """ReLU of n secret elements from party 0, opened at the end."""
    x, expected = _relu_inputs(n)
    out = open_(crypten.cryptensor(x, src=0).relu())
    return {"max_error": float((out - expected).abs().max())}


def logreg_epoch(
    crypten: ModuleType,
    rows: int = 10_000,
    features: int = 20,
    batch: int = 128,
    lr: float = LOGREG_LR,
    sigmoid: str = "exact",
    open_: Opener = plain_text,
) -> dict[str, Any]:
    """One epoch of mini-batch SGD logistic regression on row-partitioned secret data.

    Party i encrypts its own contiguous slice of rows (features and labels);
    the weights start at an encrypted zero. Returns the accuracy of the
    opened weights on the plaintext data, next to the accuracy of the same
    epoch (same batches) run in plaintext float64 with the exact sigmoid.
    `sigmoid` 'piecewise' uses SecureML's clip(1/2 + z/4, 0, 1) in the secure run, 'exact'
    smpc's spline, 'crypten' CrypTen's own exp and reciprocal.
    """
    from protocols.blocks.training import logistic_sgd_epoch

    x, y = _logreg_data(rows, features)
    world_size = crypten.communicator.get().get_world_size()
    slices = _row_slices(rows, world_size)
    x_enc = crypten.cat([crypten.cryptensor(x[s:e], src=r) for r, (s, e) in enumerate(slices)])
    y_enc = crypten.cat([crypten.cryptensor(y[s:e], src=r) for r, (s, e) in enumerate(slices)])
    w = crypten.cryptensor(torch.zeros(features, 1), src=0)
    w = logistic_sgd_epoch(x_enc, y_enc, w, batch, lr, sigmoid)
    w_plain = open_(w)
    return {
        "accuracy": _accuracy(x, y, w_plain),
        "plaintext_accuracy": _plaintext_logreg(rows, features, batch, lr),
    }


# ---------------------------------------------------------------- neural networks

DIGITS_MODELS = Path(__file__).resolve().parents[1] / "examples" / "digits" / "models.py"
NN_LR = 0.2
"""Learning rate of the digits epochs (smpc's step adds momentum 0.9, as the example)."""


@functools.cache
def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits, pixels scaled to [0, 1]: (x_train, y_train, x_test, y_test),
    1,438 training rows (23 batches of 64) and 359 test rows in a fixed random order."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=_generator(1797))
    x, y = x[order], y[order]
    return x[:1438], y[:1438], x[1438:], y[1438:]


def _digits_model(name: str) -> torch.nn.Module:
    """The digits example's MLP (64-32-10) or CNN, with weights from the public seed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("smpc_bench_digits_models", DIGITS_MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return getattr(module, name)()


def _shared_rows(crypten: ModuleType, t: torch.Tensor) -> Any:
    """Rows split across the parties, each party sharing its own slice (src=rank)."""
    world_size = crypten.communicator.get().get_world_size()
    return crypten.cat([crypten.cryptensor(t[s:e], src=r)
                        for r, (s, e) in enumerate(_row_slices(t.shape[0], world_size))])


def _rounds(crypten: ModuleType) -> int:
    return int(crypten.communicator.get().get_communication_stats()["rounds"])


def digits_epoch(crypten: ModuleType, model: str = "MLP", loop: str = "smpc",
                 batch: int = 64, open_: Opener = plain_text) -> dict[str, Any]:
    """One training epoch of the digits example's model on its 1,438 training rows.

    `loop` "crypten": stock CrypTen's training loop (crypten.nn.CrossEntropyLoss,
    backward, update_parameters), as its tutorials write it; "smpc": the
    neural-network protocol's step (protocols/neural/training.py: cheap softmax
    gradient, SGD with momentum in one truncation). Both convert the same
    PyTorch model with crypten.nn.from_pytorch. Returns the epoch's own time and
    rounds per step, and the test accuracy of the opened scores.
    """
    import time

    from protocols.neural import training

    x, y, xt, yt = _digits()
    torch_model = _digits_model(model).train()
    x_enc = _shared_rows(crypten, x)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    spans = training.spans(x.shape[0], batch)
    secure = crypten.nn.from_pytorch(torch_model, torch.empty(2, 64)).encrypt(src=0)
    secure.train()
    if loop == "smpc":
        factors = torch.cat([torch.full((e - s, 1), 1.0 / (e - s)) for s, e in spans])
        targets = _shared_rows(crypten, onehot * factors)
        settings = training.Settings(batch, 0.9, 0.0, 8, 10)
        velocity = [crypten.cryptensor(torch.zeros(p.size()), src=0)
                    for _, p in secure.named_parameters()]
    else:
        targets, loss_fn = _shared_rows(crypten, onehot), crypten.nn.CrossEntropyLoss()
    start_rounds, tic = _rounds(crypten), time.perf_counter()
    if loop == "smpc":
        training.secure_epoch(secure, x_enc, targets, NN_LR, settings, velocity, False)
    else:
        for s, e in spans:
            loss = loss_fn(secure(x_enc[s:e]), targets[s:e])
            secure.zero_grad()
            loss.backward()
            secure.update_parameters(NN_LR)
    seconds, rounds = time.perf_counter() - tic, _rounds(crypten) - start_rounds
    secure.eval()
    with crypten.no_grad():
        scores = open_(secure(_shared_rows(crypten, xt)))
    return {"accuracy": float((scores.argmax(1) == yt).float().mean()),
            "epoch_seconds": seconds, "rounds_per_step": rounds / len(spans),
            "steps": len(spans)}


def digits_forward(crypten: ModuleType, model: str = "MLP", rows: int = 64,
                   open_: Opener = plain_text) -> dict[str, Any]:
    """One secure forward pass (evaluation mode) of `rows` digits through the model."""
    _, _, xt, _ = _digits()
    torch_model = _digits_model(model).eval()
    secure = crypten.nn.from_pytorch(torch_model, torch.empty(2, 64)).encrypt(src=0)
    secure.eval()
    with crypten.no_grad():
        out = open_(secure(_shared_rows(crypten, xt[:rows])))
    with torch.no_grad():
        expected = torch_model(xt[:rows])
    return {"max_error": float((out - expected).abs().max())}


# ---------------------------------------------------------------- private inference

_SERVED: dict[str, Any] = {}  # model name -> the model shared once (per process and session)


@functools.cache
def _inference_model(name: str) -> tuple[torch.nn.Module, int]:
    """The benchmark's models with weights from the public seed: logistic regression on 30
    columns (the hospitals example's width), the digits MLP and CNN (64 columns)."""
    if name == "LR":
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            return torch.nn.Linear(30, 1).eval(), 30
    return _digits_model(name).eval(), 64


@functools.cache
def _inference_rows(name: str, rows: int) -> torch.Tensor:
    if name == "LR":
        return _logreg_data(max(rows, 100), 30)[0][:rows]
    return _digits()[2][:rows]


def inference(crypten: ModuleType, model: str = "MLP", rows: int = 1,
              open_: Opener = plain_text) -> dict[str, Any]:
    """One private-inference query: the model (party 0's, shared once per process and
    reused, as `smpc serve` keeps it) scores `rows` rows that party 1 shares; each row's
    class (logit > 0 for LR, the argmax otherwise) is opened. Timed: sharing the rows, the
    forward pass, the class and the opening."""
    from protocols.inference.prediction import _predicted

    torch_model, width = _inference_model(model)
    key = f"{model}:{id(crypten.communicator.get())}"
    if key not in _SERVED:
        secure = crypten.nn.from_pytorch(torch_model, torch.empty(1, width))
        _SERVED[key] = secure.encrypt(src=0).eval()
    x = _inference_rows(model, rows)
    world_size = crypten.communicator.get().get_world_size()
    with crypten.no_grad():
        z = _SERVED[key](crypten.cryptensor(x, src=1 % world_size))
        onehot = _predicted(z)
        predicted = open_(onehot.mul(torch.arange(onehot.size(1))).sum(1))
    with torch.no_grad():
        out = torch_model(x)
    expected = (out.reshape(-1) > 0).long() if out.shape[1] == 1 else out.argmax(1)
    return {"agree": float((predicted.round().long() == expected).float().mean())}


Workload = Callable[..., dict[str, Any]]

STANDARD_EPOCH = "logreg epoch 10k x 20, batch 128"
"""The epoch as CrypTen runs it (its own sigmoid, exp and reciprocal): what the epoch target
compares against."""
DEFAULT_EPOCH = "logreg epoch, piecewise sigmoid"
"""The same epoch as smpc trains by default."""
EXACT_EPOCH = "logreg epoch, exact sigmoid (spline)"
"""The same epoch with smpc's sigmoid = "exact" (a cubic spline within 4e-5)."""

WORKLOADS: dict[str, Workload] = {
    "matmul 256x256": functools.partial(matmul, n=256),
    "matmul 1024x1024": functools.partial(matmul, n=1024),
    "ReLU 100k": functools.partial(relu, n=100_000),
    STANDARD_EPOCH: functools.partial(logreg_epoch, sigmoid="crypten"),
    DEFAULT_EPOCH: functools.partial(logreg_epoch, sigmoid="piecewise"),
    EXACT_EPOCH: logreg_epoch,
    "digits MLP epoch, CrypTen's loop": functools.partial(digits_epoch, loop="crypten"),
    "digits MLP epoch, smpc's step": digits_epoch,
    "digits CNN epoch, CrypTen's loop": functools.partial(digits_epoch, model="CNN",
                                                          loop="crypten"),
    "digits CNN epoch, smpc's step": functools.partial(digits_epoch, model="CNN"),
    "digits MLP forward, 64 rows": digits_forward,
    "digits CNN forward, 64 rows": functools.partial(digits_forward, model="CNN"),
}
"""Benchmark rows: name -> callable taking the initialized crypten module."""

for _model in ("LR", "MLP", "CNN"):
    for _rows in (1, 100):
        WORKLOADS[f"inference {_model}, {_rows} row{'s' if _rows > 1 else ''}"] = \
            functools.partial(inference, model=_model, rows=_rows)

NN_WORKLOADS: tuple[str, ...] = tuple(n for n in WORKLOADS if n.startswith("digits"))
INFERENCE_WORKLOADS: tuple[str, ...] = tuple(n for n in WORKLOADS if n.startswith("inference"))
"""One private-inference query per model and row count (benchmarks/inference.py)."""
"""The neural-network rows (their own table: smpc against CrypTen-gloo-TTP)."""

EXPENSIVE: frozenset[str] = frozenset({STANDARD_EPOCH, DEFAULT_EPOCH, EXACT_EPOCH,
                                       *(n for n in NN_WORKLOADS if "epoch" in n)})
"""Rows too slow to be worth a warm-up run before timing."""
