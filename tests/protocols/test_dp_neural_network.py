"""dp-neural-network: per-example clipping on shares against float64 (each clipped norm within
the bound, the clipped sum equal to Opacus-style clipping), the epsilon from the accountant,
a short digits DP run end to end, and the bad inputs."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from protocols.blocks import approximations
from protocols.neural import per_example
from tests.engine.harness import run_parties
from tests.protocols.digits import DIGITS


def _mlp(seed: int) -> torch.nn.Module:
    sys.path.insert(0, str(DIGITS))
    try:
        from models import MLP
    finally:
        sys.path.remove(str(DIGITS))
    torch.manual_seed(seed)
    return MLP(hidden=16)


def test_per_example_clipping_on_shares_holds_the_bound_and_matches_float64() -> None:
    """Two parties and the dealer: 24 rows through the MLP 64-16-10 with weights scaled up so
    that about half of the examples' gradient norms exceed C = 2 (some beyond 64 C); the norms computed on shares
    equal float64's (relative 1 %), every clipped norm c_i ||g_i|| is at most C, and the
    clipped sum equals float64's sum of min(1, C/||g_i||) g_i within 2 % + fixed point."""
    model = _mlp(5)
    with torch.no_grad():
        model.fc1.weight.mul_(3.0)
    generator = torch.Generator().manual_seed(11)
    x = torch.rand(24, 64, generator=generator)
    x[:3] *= 200  # rows far outside [0, 1]: norms beyond 64 C, dropped
    x[2:4] *= 4
    y = torch.randint(0, 10, (24,), generator=generator)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    bound = 2.0

    def party(comm: object) -> dict[str, Any]:
        import crypten

        graph = crypten.nn.from_pytorch(model, torch.empty(2, 64)).encrypt(src=0)
        layers = per_example.instrument(graph)
        graph.train()
        for p in graph.parameters():
            p.requires_grad = False
        scores = graph(crypten.cryptensor(x, src=0))
        with crypten.no_grad():
            p_, _, _ = approximations.softmax_gradient(scores, 1, 8)
            signal = p_ - crypten.cryptensor(onehot, src=1)
        scores.backward(signal)
        with crypten.no_grad():
            norms2 = per_example.norms_squared(layers)
            factors = per_example.clip_factors(norms2, bound)
            sums = per_example.clipped_gradient_sum(layers, factors)
            return {"norms2": norms2.get_plain_text().double().reshape(-1),
                    "factors": factors.get_plain_text().double().reshape(-1),
                    "signal": signal.get_plain_text().double(),
                    "sums": {k.removesuffix(".data"): v.get_plain_text().double()
                             for k, v in sums.items()}}

    got = run_parties(2, party, refuse_openings=False, timeout=240)[0]
    twin = model.double()
    grads = per_example.per_example_gradients(twin, x.double(), got["signal"])
    want, norms = per_example.clipped_sum_plain(grads, bound)
    big = norms < 64 * bound  # the examples the secure clipping keeps
    assert (norms > bound).sum() >= 6 and (~big).sum() >= 1  # clipping is exercised
    assert torch.allclose(got["norms2"][big], norms[big] ** 2, rtol=0.01, atol=1e-3)
    clipped_norms = got["factors"] * norms
    assert clipped_norms.max() <= bound, clipped_norms.max()
    assert torch.all(got["factors"][~big] == 0)
    assert torch.all(got["factors"][big & (norms < 0.95 * bound)] > 0.985)  # not clipped
    # the secure sum leaves the dropped examples out: compare with float64's without them
    kept = {k: g[big] for k, g in grads.items()}
    want, _ = per_example.clipped_sum_plain(kept, bound)
    for name, value in want.items():
        diff = (got["sums"][name] - value).abs().max()
        assert diff <= 0.02 * value.abs().max() + 1e-3, (name, float(diff))
