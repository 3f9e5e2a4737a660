"""Each dealer-backed primitive reconstructs to the right value for 2, 3 and 4 parties.

The parties run in threads with a simulated dealer and opening
(tests/engine/simulate.py); inputs include the edge values of Z_2^64.
"""

from __future__ import annotations

import math

import pytest
import torch

from parties.engine import correlated as cr
from parties.engine.primitives import beaver, comparison, conversion
from tests.engine import simulate as sim
from tests.engine.simulate import RING_EDGES

PARTIES = [2, 3, 4]


def _values(extra: int = 200) -> torch.Tensor:
    return torch.cat([RING_EDGES, sim.ring(extra), torch.randint(-1000, 1000, (extra,))])


@pytest.mark.parametrize("n", PARTIES)
@pytest.mark.parametrize(("op", "x", "y", "kwargs"), [
    ("mul", _values(), _values().flip(0), {}),
    ("mul", sim.ring(3, 4), sim.ring(4), {}),  # broadcast
    ("matmul", sim.ring(4, 3), sim.ring(3, 5), {}),
    ("matmul", sim.ring(2, 4, 3), sim.ring(3), {}),
    ("conv2d", torch.randint(-50, 50, (1, 2, 5, 5)), torch.randint(-50, 50, (3, 2, 3, 3)),
     {"padding": 1}),
])
def test_beaver_product(n: int, op: str, x: torch.Tensor, y: torch.Tensor,
                        kwargs: dict) -> None:
    xs, ys = sim.additive(x, n), sim.additive(y, n)
    got, net = sim.run(n, lambda r, src, net: beaver.product(
        src, r, net.open_batch(r), op, xs[r], ys[r], kwargs))
    assert torch.equal(cr.sum_shares(got), getattr(torch, op)(x, y, **kwargs))
    assert net.rounds == 1


@pytest.mark.parametrize("n", PARTIES)
def test_square(n: int) -> None:
    x = _values()
    xs = sim.additive(x, n)
    got, net = sim.run(n, lambda r, src, net: beaver.square(src, r, net.open_batch(r), xs[r]))
    assert torch.equal(cr.sum_shares(got), x * x)
    assert net.rounds == 1


@pytest.mark.parametrize("n", PARTIES)
def test_wraps_counts_how_often_the_shares_wrap(n: int) -> None:
    x = torch.cat([torch.tensor([0, 1, -1, 2**40, -(2**40)]), torch.randint(-2**40, 2**40, (500,))])
    xs = sim.additive(x, n)
    got, net = sim.run(n, lambda r, src, net: beaver.wraps(src, r, net.gather(r), xs[r]))
    assert torch.equal(cr.sum_shares(got), cr.count_wraps(xs))
    assert net.rounds == 1


@pytest.mark.parametrize("n", PARTIES)
def test_and(n: int) -> None:
    x, y = torch.cat([RING_EDGES, sim.ring(300)]), torch.cat([RING_EDGES.flip(0), sim.ring(300)])
    xs, ys = sim.xor(x, n), sim.xor(y, n)
    got, net = sim.run(n, lambda r, src, net: beaver.and_shares(src, r, net.open_batch(r),
                                                                xs[r], ys[r]))
    assert torch.equal(cr.xor_shares(got), x & y)
    assert net.rounds == 1


@pytest.mark.parametrize("n", PARTIES)
@pytest.mark.parametrize(("size", "rounds"), [(300, 1 + 3), (5000, 1 + 4)])  # 8- / 4-bit digits
def test_sign_bits(n: int, size: int, rounds: int) -> None:
    x = torch.cat([RING_EDGES, sim.ring(size // 2), torch.randint(-300, 300, (size // 2,))])
    x = x.reshape(1, -1)  # a 2-d input keeps its shape
    xs = sim.additive(x, n)
    got, net = sim.run(n, lambda r, src, net: comparison.negative_bits(
        src, r, net.open_batch(r), xs[r]))
    assert got[0].shape == x.shape
    assert torch.equal(cr.xor_shares(got) & 1, (x < 0).long())
    assert net.rounds == rounds


@pytest.mark.parametrize("n", PARTIES)
def test_relu(n: int) -> None:
    x = _values(1000)
    xs = sim.additive(x, n)
    got, net = sim.run(n, lambda r, src, net: comparison.relu(src, r, net.open_batch(r), xs[r]))
    assert torch.equal(cr.sum_shares(got), torch.where(x < 0, 0, x))
    assert net.rounds == 1 + 3 + 1  # masked opening, 3 AND rounds, bit injection


@pytest.mark.parametrize("n", PARTIES)
@pytest.mark.parametrize("k", [2, 4, 9])
def test_first_argmax_marks_one_maximum_ties_to_the_first(n: int, k: int) -> None:
    x = torch.randint(-5, 5, (300, k))  # many ties
    x[:3] = torch.randint(-(2**40), 2**40, (3, k))
    xs = sim.additive(x, n)
    got, net = sim.run(n, lambda r, src, net: comparison.first_argmax(
        src, r, net.open_batch(r), xs[r]))
    onehot = torch.nn.functional.one_hot(x.argmax(-1), k)  # torch: the first maximum
    assert torch.equal(cr.xor_shares(got) & 1, onehot)
    comparisons = x.shape[0] * k * (k - 1) // 2
    and_rounds = 3 if comparisons <= 4096 else 4  # 8-bit or 4-bit digits
    assert net.rounds == 1 + and_rounds + math.ceil(math.log2(k - 1))


@pytest.mark.parametrize("n", PARTIES)
def test_bit_to_arithmetic(n: int) -> None:
    b = torch.randint(0, 2, (400,))
    bs = sim.xor(b, n)  # full-word XOR shares whose high bits cancel
    got, net = sim.run(n, lambda r, src, net: conversion.bit_to_arithmetic(
        src, r, net.open_batch(r), bs[r]))
    assert torch.equal(cr.sum_shares(got), b)
    assert net.rounds == 1


@pytest.mark.parametrize("n", PARTIES)
def test_bit_times_value_in_one_round(n: int) -> None:
    x = _values()
    b = torch.randint(0, 2, x.shape)
    b[:4] = torch.tensor([0, 1, 0, 1])
    bs, xs = sim.xor(b, n), sim.additive(x, n)
    got, net = sim.run(n, lambda r, src, net: conversion.bit_times(
        src, r, net.open_batch(r), bs[r], xs[r]))
    assert torch.equal(cr.sum_shares(got), b * x)
    assert net.rounds == 1


@pytest.mark.parametrize("n", PARTIES)
@pytest.mark.parametrize(("addends", "rounds"), [(1, 0), (2, 0), (3, 1), (4, 2), (6, 3), (9, 4)])
def test_carry_save_keeps_the_sum(n: int, addends: int, rounds: int) -> None:
    words = [torch.cat([RING_EDGES.roll(i), sim.ring(100)]) for i in range(addends)]
    shared = [sim.xor(w, n) for w in words]  # shared[k][party]

    def party(r: int, src: sim.Source, net: sim.Network) -> list[torch.Tensor]:
        def and_batch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return beaver.and_shares(src, r, net.open_batch(r), x, y)

        return conversion.carry_save_reduce([s[r] for s in shared], and_batch)

    got, net = sim.run(n, party)
    out = [cr.xor_shares([g[i] for g in got]) for i in range(len(got[0]))]
    assert len(out) == min(addends, 2)
    assert torch.equal(cr.sum_shares(out), cr.sum_shares(words))
    assert net.rounds == rounds
