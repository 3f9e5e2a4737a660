"""The self-test: a fixed set of secure operations checked against plaintext torch.

Every party draws the same random inputs from the run's joint seed, so each
can compare the revealed result with the plaintext computation. Inputs are
secret-shared from different parties and include negative values. Each result
is opened to every party through ``session.reveal`` (the output "results");
each row reports the max absolute error and the tolerance it must meet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from protocols.api import Output, Protocol, Session, public_generator

# (name, tolerance): fixed point with 16 fractional bits; approximations
# (reciprocal, exp) are the reason for the looser rows.
TOLERANCES: dict[str, float] = {
    "add": 1e-4,
    "mul": 1e-3,
    "matmul": 5e-3,
    "conv2d": 5e-3,
    "lt": 0.0,
    "gt": 0.0,
    "relu": 1e-3,
    "div (private)": 2e-2,
    "div (public)": 1e-3,
    "sigmoid": 1e-2,
    "softmax": 1e-2,
    "nn training step": 1e-2,
}


def _inputs(seed: bytes) -> dict[str, torch.Tensor]:
    g = public_generator(seed, "selftest")

    def randn(*shape: int, scale: float = 2.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    return {
        "x": randn(64),
        "y": randn(64),
        "A": randn(8, 16, scale=1.0),
        "B": randn(16, 4, scale=1.0),
        "img": randn(2, 3, 8, 8, scale=1.0),
        "kernel": randn(4, 3, 3, 3, scale=0.5),
        "den": torch.rand(64, generator=g) * 4 + 0.5,
        "logits": randn(4, 10),
        "features": randn(16, 5, scale=1.0),
        "labels": (torch.rand(16, 1, generator=g) > 0.5).float(),
    }


def _nn_step(crypten: Any, d: dict[str, torch.Tensor], seed: bytes
             ) -> tuple[Any, torch.Tensor]:
    """One SGD step of a small classifier, encrypted (via from_pytorch) and in plaintext."""
    with torch.random.fork_rng():
        torch.manual_seed(public_generator(seed, "selftest-model").initial_seed())
        model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(),
                                    torch.nn.Linear(4, 1))
    lr = 0.5
    plain = [p.detach().clone() for p in model.parameters()]

    reference = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        for p, q in zip(reference.parameters(), plain, strict=True):
            p.copy_(q)
    loss = torch.nn.BCELoss()(torch.sigmoid(reference(d["features"])), d["labels"])
    loss.backward()
    with torch.no_grad():
        expect = torch.cat([(p - lr * p.grad).reshape(-1) for p in reference.parameters()])

    secure = crypten.nn.from_pytorch(model, torch.empty(1, 5)).encrypt(src=0)
    secure.train()
    x = crypten.cryptensor(d["features"], src=1 % crypten.communicator.get().get_world_size())
    y = crypten.cryptensor(d["labels"], src=0)
    out = secure(x).sigmoid()
    secure.zero_grad()
    crypten.nn.BCELoss()(out, y).backward()
    secure.update_parameters(lr)
    got = crypten.cat([p.reshape(-1) for p in secure.parameters()])
    return got, expect


def cases(crypten: Any, seed: bytes) -> dict[str, Callable[[], tuple[Any, torch.Tensor]]]:
    """Each case returns (secure result, plaintext result)."""
    d = _inputs(seed)
    n = crypten.communicator.get().get_world_size()

    def enc(name: str, src: int = 0) -> Any:
        return crypten.cryptensor(d[name], src=src % n)

    return {
        "add": lambda: ((enc("x") + enc("y", 1)), d["x"] + d["y"]),
        "mul": lambda: ((enc("x") * enc("y", 1)), d["x"] * d["y"]),
        "matmul": lambda: (enc("A").matmul(enc("B", 2)), d["A"] @ d["B"]),
        "conv2d": lambda: (
            enc("img", 1).conv2d(enc("kernel"), padding=1),
            torch.nn.functional.conv2d(d["img"], d["kernel"], padding=1),
        ),
        "lt": lambda: ((enc("x") < enc("y", 1)), (d["x"] < d["y"]).float()),
        "gt": lambda: ((enc("x", 2) > 0.5), (d["x"] > 0.5).float()),
        "relu": lambda: (enc("x", 1).relu(), torch.relu(d["x"])),
        "div (private)": lambda: (
            (enc("x") / enc("den", 1)), d["x"] / d["den"]
        ),
        "div (public)": lambda: ((enc("x") / 3.0), d["x"] / 3.0),
        "sigmoid": lambda: (enc("x", 1).sigmoid(), torch.sigmoid(d["x"])),
        "softmax": lambda: (
            enc("logits", 2).softmax(dim=1), torch.softmax(d["logits"], dim=1)
        ),
        "nn training step": lambda: _nn_step(crypten, d, seed),
    }


def run(session: Session) -> dict[str, Any]:
    """Run every case, open its result to all, compare; each party gets the same rows."""
    import crypten

    rows = []
    for name, case in cases(crypten, session.seed).items():
        tic = time.perf_counter()
        secure, expect = case()
        got = session.reveal("results", secure)["results"]
        seconds = time.perf_counter() - tic
        err = float((got.float() - expect.float()).abs().max())
        tol = TOLERANCES[name]
        rows.append({"op": name, "max_error": err, "tolerance": tol, "ok": err <= tol,
                     "seconds": seconds})
        session.progress(name, max_error=err, ok=err <= tol)
    return {"results": rows}


PROTOCOL = Protocol(
    name="selftest",
    version="2",
    summary="a fixed set of secure operations checked against plaintext torch",
    run=run,
    outputs=(Output("results", "each operation's result, opened to compare with plaintext"),),
    passed=lambda result: all(row["ok"] for row in result.get("results") or []),
)
