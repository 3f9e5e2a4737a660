"""The secure approximations, optimizer and multi-class metrics against their plaintext twins,
on three parties with the dealer, and the rounds each costs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from parties.engine.reveal import allow_openings
from protocols.blocks import approximations as ap
from protocols.blocks import metrics, optimizers
from tests.engine.harness import run_parties

G = torch.Generator().manual_seed(11)
LOGITS = torch.randn(64, 10, generator=G) * 3
LOGITS[0] = torch.tensor([4.0, 4.0, -1, 0, 0, 0, 0, 0, 0, 0])  # a tie: the first index wins
SIGMOID_IN = torch.cat([torch.randn(100, generator=G) * 5,
                        torch.tensor([-40.0, -12.5, -12.0, -0.01, 0.0, 0.01, 11.99, 12.0, 40.0])])
LABELS = torch.randint(0, 10, (64, 1), generator=G).float()
WEIGHTS = [torch.randn(4, 3, generator=G), torch.randn(3, generator=G)]
GRADS = [torch.randn(4, 3, generator=G) * 0.1, torch.randn(3, generator=G) * 0.1]
VELOCITY = [torch.randn(4, 3, generator=G) * 0.1, torch.randn(3, generator=G) * 0.1]


def _secure(comm: Any) -> dict[str, Any]:
    import crypten

    out: dict[str, Any] = {}

    def measure(name: str, fn: Any) -> None:
        before = comm.get_communication_stats()["rounds"]
        value = fn()
        out[f"{name} rounds"] = comm.get_communication_stats()["rounds"] - before
        with allow_openings():
            out[name] = [v.get_plain_text() for v in value] if isinstance(value, list | tuple) \
                else value.get_plain_text()

    z = crypten.cryptensor(LOGITS, src=0)
    measure("max", lambda: z.max(dim=1, keepdim=True))
    measure("softmax", lambda: ap.softmax_gradient(z, 64, 8))
    measure("sigmoid", lambda: ap.accurate_sigmoid(crypten.cryptensor(SIGMOID_IN, src=1)))
    measure("metrics", lambda: list(metrics.multiclass_metrics(
        z, crypten.cryptensor(LABELS, src=2), 10).values()))
    enc = [[crypten.cryptensor(t, src=0) for t in ts] for ts in (WEIGHTS, GRADS, VELOCITY)]
    measure("sgd", lambda: [t for ts in optimizers.sgd_step(*enc, 0.5, 0.9, 0.01) for t in ts])
    return out


@pytest.fixture(scope="module")
def secure() -> dict[str, Any]:
    return run_parties(3, _secure, timeout=120)[0]


def test_row_max_and_its_one_hot(secure: dict[str, Any]) -> None:
    top = LOGITS.max(1, keepdim=True).values
    onehot = torch.nn.functional.one_hot(LOGITS.argmax(1), 10).float()
    assert float((secure["max"][0] - top).abs().max()) < 1e-3
    assert torch.equal(secure["max"][1], onehot)  # exact bits, ties to the first
    assert secure["max"][1][0].tolist()[:2] == [1.0, 0.0]
    assert secure["max rounds"] == 10  # comparison 4, AND tree 4, B2A 1, select 1


def test_softmax_gradient_matches_its_twin_and_the_true_softmax(secure: dict[str, Any]
                                                                 ) -> None:
    p_over_b, shifted, sums = secure["softmax"]
    twin, twin_shifted, twin_sums = ap.softmax_gradient_plain(LOGITS.double(), 64, 8)
    # in units of p (p/B times B): fixed point leaves a few units of 2^-16 * B
    assert float((p_over_b - twin).abs().max()) * 64 < 1e-2
    # the limit's 2^k squarings multiply the truncation's few units of 2^-16 in
    # 1 + x/2^k by 2^k: 256 * 3 * 2^-16 = 1.2% for k = 8
    assert float(((sums - twin_sums) / twin_sums).abs().max()) < 2e-2
    assert float((shifted - twin_shifted).abs().max()) < 1e-3
    exact = torch.softmax(LOGITS.double(), 1)
    assert float((twin * 64 - exact).abs().max()) < 1e-2  # the exp's limit with k = 8
    assert secure["softmax rounds"] == 10 + 2 * 8 + 1 + 5 + 4


def test_accurate_sigmoid_is_within_its_stated_error(secure: dict[str, Any]) -> None:
    error = (secure["sigmoid"] - torch.sigmoid(SIGMOID_IN)).abs().max()
    assert float(error) < 1.5e-4  # spline 4e-5 plus fixed-point rounding
    twin = ap.accurate_sigmoid_plain(SIGMOID_IN)
    assert float((twin - torch.sigmoid(SIGMOID_IN.double())).abs().max()) < 4e-5
    assert secure["sigmoid rounds"] == 10


def test_multiclass_metrics_match_the_plaintext_ones(secure: dict[str, Any]) -> None:
    want = metrics.multiclass_metrics_plain(LOGITS.double(), LABELS, 10)
    got = dict(zip(("accuracy", "macro_f1", "precision", "recall", "f1", "confusion_matrix"),
                   secure["metrics"], strict=True))
    assert got["confusion_matrix"].tolist() == want["confusion_matrix"]
    assert float(got["accuracy"]) == pytest.approx(want["accuracy"], abs=1e-3)
    assert float(got["macro_f1"]) == pytest.approx(want["macro_f1"], abs=5e-3)
    for key in ("precision", "recall", "f1"):
        assert got[key].tolist() == pytest.approx(want[key], abs=5e-3), key


def test_sgd_step_is_one_truncation_for_every_tensor(secure: dict[str, Any]) -> None:
    weights, velocity = optimizers.sgd_step_plain(WEIGHTS, GRADS, VELOCITY, 0.5, 0.9, 0.01)
    for got, want in zip(secure["sgd"], weights + velocity, strict=True):
        assert float((got - want).abs().max()) < 1e-3
    assert secure["sgd rounds"] == 1


def test_learning_rate_schedules() -> None:
    assert optimizers.learning_rate(0.2, "constant", 5, 10, 1, 0.1) == 0.2
    assert optimizers.learning_rate(0.2, "step", 5, 10, 2, 0.5) == pytest.approx(0.2 * 0.5**2)
    cosine = [optimizers.learning_rate(0.2, "cosine", e, 10, 1, 0.1) for e in range(10)]
    assert cosine[0] == 0.2 and cosine[5] == pytest.approx(0.1)
    assert all(a > b > 0 for a, b in itertools.pairwise(cosine))  # down towards 0


def test_reciprocal_guess_is_within_its_bound() -> None:
    thresholds, steps, base = ap.reciprocal_guess(10, 64)
    s = torch.linspace(1, 10, 1000, dtype=torch.float64).unsqueeze(1)
    y0 = base + (s >= thresholds).double() @ steps
    worst = float((1 - s.squeeze(1) * 64 * y0).abs().max())
    ratio = ap.RECIPROCAL_RATIO
    assert worst <= (ratio - 1) / (ratio + 1) + 1e-9
    assert worst**2 < 1e-2  # after one Newton-Raphson step
