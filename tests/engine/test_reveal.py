"""Openings: refused outside session.reveal (naming the line), open_to in one round."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from parties.engine import reveal
from parties.engine.communicator import GrpcCommunicator
from parties.engine.reveal import RevealError
from tests.engine.harness import run_parties

HERE = Path(__file__)


def _line(marker: str) -> int:
    """The line of this file that carries `marker` in a comment."""
    lines = HERE.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.endswith(f"# {marker}"))


def _refusal(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except RevealError as exc:
        return str(exc)
    return "not refused"


def _peeking_protocol(comm: GrpcCommunicator) -> dict[str, str]:
    """A protocol that tries every way CrypTen has to open a secret directly."""
    import crypten
    from crypten.mpc.primitives import ArithmeticSharedTensor as AST
    from crypten.mpc.primitives import BinarySharedTensor as BST

    x = crypten.cryptensor(torch.tensor([1.0, -2.0]), src=0)
    bits = x > 0
    model = crypten.nn.Linear(2, 1).encrypt(src=0)
    return {
        "get_plain_text": _refusal(lambda: x.get_plain_text()),  # PEEK-1
        "reveal": _refusal(lambda: x.reveal(dst=0)),  # PEEK-2
        "arithmetic": _refusal(lambda: x._tensor.get_plain_text()),  # PEEK-3
        "binary": _refusal(lambda: bits.to(crypten.mpc.ptype.binary)._tensor.reveal()),  # PEEK-4
        "batch": _refusal(lambda: AST.reveal_batch([x._tensor])),  # PEEK-5
        "xor batch": _refusal(lambda: BST.reveal_batch([BST(torch.tensor([3]))])),  # PEEK-6
        "decrypt": _refusal(lambda: model.decrypt()),  # PEEK-7
    }


def test_direct_openings_are_refused_naming_the_protocol_line() -> None:
    for got in run_parties(3, _peeking_protocol):
        for i, (what, message) in enumerate(got.items(), 1):
            assert f"tests/engine/test_reveal.py:{_line(f'PEEK-{i}')}" in message, what
            assert "outside session.reveal" in message and "session.reveal(" in message


def test_openings_pass_inside_allow_openings_or_with_the_guard_off() -> None:
    def party(comm: GrpcCommunicator) -> list[torch.Tensor]:
        import crypten

        x = crypten.cryptensor(torch.tensor([1.5, -2.0]), src=1)
        with reveal.allow_openings():
            inside = x.get_plain_text()
        return [inside, _refusal(lambda: x.get_plain_text())]

    for inside, after in run_parties(2, party):
        assert torch.equal(inside, torch.tensor([1.5, -2.0]))
        assert after != "not refused"  # the guard is back after the block

    def unguarded(comm: GrpcCommunicator) -> torch.Tensor:
        import crypten

        return crypten.cryptensor(torch.tensor([4.0]), src=0).get_plain_text()

    assert all(torch.equal(v, torch.tensor([4.0]))
               for v in run_parties(2, unguarded, refuse_openings=False))


# ---------------------------------------------------------------- CrypTen under the guard

def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {"x": torch.randn(20, generator=g) * 2, "y": torch.randn(20, generator=g) * 2,
            "A": torch.randn(4, 6, generator=g), "B": torch.randn(6, 3, generator=g),
            "img": torch.randn(1, 2, 5, 5, generator=g), "k": torch.randn(3, 2, 3, 3, generator=g),
            "den": torch.rand(20, generator=g) * 3 + 0.5, "logits": torch.randn(3, 5, generator=g),
            "features": torch.randn(8, 5, generator=g),
            "labels": (torch.rand(8, 1, generator=g) > 0.5).float(),
            "w1": torch.randn(4, 5, generator=g) * 0.5, "b1": torch.randn(4, generator=g) * 0.1,
            "w2": torch.randn(1, 4, generator=g) * 0.5, "b2": torch.randn(1, generator=g) * 0.1}


def _plain_training_step(d: dict[str, torch.Tensor], lr: float) -> torch.Tensor:
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        for p, w in zip(model.parameters(), (d["w1"], d["b1"], d["w2"], d["b2"]), strict=True):
            p.copy_(w)
    torch.nn.BCELoss()(torch.sigmoid(model(d["features"])), d["labels"]).backward()
    return torch.cat([(p - lr * p.grad).reshape(-1) for p in model.parameters()]).detach()


def _secure_training_step(crypten: Any, d: dict[str, torch.Tensor], lr: float) -> list[Any]:
    model = crypten.nn.Sequential(crypten.nn.Linear(5, 4), crypten.nn.ReLU(),
                                  crypten.nn.Linear(4, 1))
    with torch.no_grad():
        for p, w in zip(model.parameters(), (d["w1"], d["b1"], d["w2"], d["b2"]), strict=True):
            p.copy_(w)
    model.encrypt(src=0)
    model.train()
    x = crypten.cryptensor(d["features"], src=1)
    y = crypten.cryptensor(d["labels"], src=0)
    model.zero_grad()
    crypten.nn.BCELoss()(model(x).sigmoid(), y).backward()
    model.update_parameters(lr)
    return [p.reshape(-1) for p in model.parameters()]


CASES: dict[str, tuple[Callable[[Any, Callable[..., Any], dict], Any],
                       Callable[[dict], torch.Tensor], float]] = {
    "mul": (lambda c, e, d: e("x") * e("y", 1), lambda d: d["x"] * d["y"], 1e-3),
    "matmul": (lambda c, e, d: e("A").matmul(e("B", 2)), lambda d: d["A"] @ d["B"], 5e-3),
    "conv2d": (lambda c, e, d: e("img", 1).conv2d(e("k"), padding=1),
               lambda d: torch.nn.functional.conv2d(d["img"], d["k"], padding=1), 5e-3),
    "lt": (lambda c, e, d: e("x") < e("y", 1), lambda d: (d["x"] < d["y"]).float(), 0.0),
    "gt": (lambda c, e, d: e("x", 2) > 0.5, lambda d: (d["x"] > 0.5).float(), 0.0),
    "relu": (lambda c, e, d: e("x", 1).relu(), lambda d: torch.relu(d["x"]), 1e-3),
    "abs": (lambda c, e, d: e("x").abs(), lambda d: d["x"].abs(), 1e-3),
    "binary round trip": (lambda c, e, d: e("x").to(c.mpc.ptype.binary).to(c.mpc.ptype.arithmetic),
                          lambda d: d["x"], 1e-3),
    "div (private)": (lambda c, e, d: e("x") / e("den", 1), lambda d: d["x"] / d["den"], 2e-2),
    "div (public)": (lambda c, e, d: e("x") / 3.0, lambda d: d["x"] / 3.0, 1e-3),
    "sigmoid": (lambda c, e, d: e("x", 1).sigmoid(), lambda d: torch.sigmoid(d["x"]), 1e-2),
    "softmax": (lambda c, e, d: e("logits", 2).softmax(dim=1),
                lambda d: torch.softmax(d["logits"], dim=1), 1e-2),
    "max": (lambda c, e, d: e("x").max(), lambda d: d["x"].max(), 1e-3),
    "nn training step": (lambda c, e, d: c.cat(_secure_training_step(c, d, 0.5)),
                         lambda d: _plain_training_step(d, 0.5), 1e-2),
}


def _every_case(comm: GrpcCommunicator) -> dict[str, torch.Tensor | None]:
    import crypten

    d, n = _inputs(), comm.get_world_size()

    def enc(name: str, src: int = 0) -> Any:
        return crypten.cryptensor(d[name], src=src % n)

    results = {name: case(crypten, enc, d) for name, (case, _, _) in CASES.items()}
    opened = reveal.open_to(list(results.values()), [[0]] * len(results))
    return dict(zip(results, opened, strict=True))


@pytest.mark.parametrize("dealer", [True, False], ids=["dealer", "insecure-tfp"])
def test_crypten_operations_work_under_the_guard(dealer: bool) -> None:
    got = run_parties(3, _every_case, dealer=dealer)[0]  # nothing was refused on any party
    d = _inputs()
    for name, (_, plain, tolerance) in CASES.items():
        err = float((got[name].float() - plain(d).float()).abs().max())
        assert err <= tolerance, (name, err)


# ---------------------------------------------------------------- open_to

@pytest.mark.parametrize("n", [2, 3, 4])
def test_open_to_gives_each_value_to_its_recipients_in_one_round(n: int) -> None:
    recipients = [[0], list(range(n)), [n - 1], [], [1, 0]]

    def party(comm: GrpcCommunicator) -> tuple[list[Any], int, int]:
        import crypten

        x = crypten.cryptensor(torch.tensor([1.25, -3.5, 0.0]), src=n - 1)
        y = crypten.cryptensor(torch.tensor([[2.0, -1.0]]), src=0)
        values = [x * 2, x.to(crypten.mpc.ptype.binary), y._tensor, x, x < 0]
        before = comm.get_communication_stats()["rounds"], comm.mesh.stats()["messages_sent"]
        opened = reveal.open_to(values, recipients)
        after = comm.get_communication_stats()["rounds"], comm.mesh.stats()["messages_sent"]
        return opened, after[0] - before[0], after[1] - before[1]

    want = [torch.tensor([2.5, -7.0, 0.0]), torch.tensor([1.25, -3.5, 0.0]),
            torch.tensor([[2.0, -1.0]]), torch.tensor([1.25, -3.5, 0.0]), torch.tensor([0, 1, 0])]
    for rank, (opened, rounds, messages) in enumerate(run_parties(n, party)):
        assert rounds == 1
        # one message to each other party that receives at least one value
        assert messages == len({r for rs in recipients for r in rs} - {rank})
        for i, to in enumerate(recipients):
            if rank in to:
                assert torch.allclose(opened[i].float(), want[i].float(), atol=1e-4), (rank, i)
            else:
                assert opened[i] is None, (rank, i)


def test_open_to_refuses_bad_arguments_before_any_message() -> None:
    def party(comm: GrpcCommunicator) -> list[str]:
        import crypten

        x = crypten.cryptensor(torch.ones(2), src=0)
        out = []
        for values, to in (([x], []), ([x], [[2]]), ([torch.ones(2)], [[0]])):
            try:
                reveal.open_to(values, to)
                out.append("opened")
            except (ValueError, TypeError) as exc:
                out.append(str(exc))
        return out

    for got in run_parties(2, party):
        assert got[0] == "1 values to open but 0 recipient lists"
        assert got[1] == "value 0 is to be opened to ranks [2], outside 0..1"
        assert got[2].startswith("value 0 to open is a Tensor, not a CrypTen MPCTensor")
