"""The trade-off's pieces: Yeom's membership advantage, the twins' noise, k-anonymized pooling,
and the scratch consortium's TOML."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch

from parties.node.tradeoff import to_toml
from protocols.api import Budget, PlainTable
from protocols.horizontal.logistic_regression import PROTOCOL
from protocols.report import extracts, membership, workloads


def test_the_advantage_is_tpr_minus_fpr_at_the_mean_member_loss() -> None:
    members = np.array([0.1, 0.2, 0.3, 1.4])  # mean 0.5: 3 of 4 flagged
    non_members = np.array([0.4, 0.6, 2.0, 3.0, 0.05])  # 2 of 5 flagged
    got = membership.advantage(members, non_members)
    assert got["threshold"] == pytest.approx(0.5)
    assert (got["tpr"], got["fpr"]) == (0.75, 0.4)
    assert got["advantage"] == pytest.approx(0.35)
    # the best threshold: 0.3 flags 3 of 4 members and 1 of 5 non-members
    assert got["best_advantage"] == pytest.approx(0.55)


def test_a_memorizing_model_leaks_and_a_constant_one_does_not() -> None:
    """Random labels: a model that fits its members' labels (one weight per row) separates
    members from non-members; a model with zero weights does not. Seeded: deterministic."""
    rng = np.random.default_rng(0)
    rows = 200
    x = torch.eye(2 * rows, dtype=torch.float64)  # every row its own column
    y = torch.tensor(rng.integers(0, 2, size=2 * rows), dtype=torch.float64)
    confidence = torch.tensor(rng.uniform(3, 8, size=rows))
    memorized = [*(confidence * (2 * y[:rows] - 1)).tolist(), *[0.0] * rows, 0.0]
    leak = membership.advantage(membership.logistic_losses(memorized, x[:rows], y[:rows]),
                                membership.logistic_losses(memorized, x[rows:], y[rows:]))
    assert leak["fpr"] == 0.0 and leak["advantage"] == leak["tpr"] > 0.2
    assert leak["best_advantage"] == 1.0
    flat = [0.0] * (2 * rows + 1)
    none = membership.advantage(membership.logistic_losses(flat, x[:rows], y[:rows]),
                                membership.logistic_losses(flat, x[rows:], y[rows:]))
    assert none["advantage"] == 0.0 and none["best_advantage"] == 0.0


def _tables() -> list[PlainTable]:
    rng = np.random.default_rng(3)
    out = []
    for rows in (90, 60, 40):
        x = torch.tensor(rng.uniform(size=(rows, 4)), dtype=torch.float32)
        y = (x[:, :1] > 0.5).float()
        out.append(PlainTable(x, y, ("a", "b", "c", "d"), (0, 1)))
    return out


@pytest.mark.parametrize("k", [2, 10, 40])
def test_k_anonymized_pooling_is_k_anonymous_on_the_quasi_identifiers(k: int) -> None:
    tables = _tables()
    x, y, measured = extracts.k_anonymized(tables, [0, 2], k)
    assert measured["k"] >= k and x.shape == (190, 4) and y.shape == (190, 1)
    original = torch.cat([t.features for t in tables]).double()
    assert torch.equal(x[:, [1, 3]], original[:, [1, 3]])  # other columns untouched
    assert not torch.equal(x[:, [0, 2]], original[:, [0, 2]])


def test_simulated_marginals_spend_the_budget_and_differ_from_the_counts() -> None:
    tables = _tables()
    value = extracts.simulated_marginals(tables, 4, Budget(2.0, 1e-5), 1, seed=5)
    assert 1.9 <= value["privacy"]["epsilon"] <= 2.0
    assert "simulated" in value["privacy"]["mechanism"]
    assert value["counts"][:2] != [float(c) for c in np.bincount(
        torch.cat([t.labels for t in tables]).long().reshape(-1).numpy())]


def test_the_logistic_workload_learns_a_separable_rule() -> None:
    tables = _tables()
    x, y = workloads.pooled(tables)
    params = PROTOCOL.parameters({"epochs": 30, "learning_rate": 2.0})
    model = workloads.LOGISTIC.fit(x, y, params, b"seed")
    assert workloads.LOGISTIC.evaluate(model, x, y)["accuracy"] > 0.9


def test_scratch_consortia_are_valid_toml() -> None:
    doc = {"consortium": {"name": "h-tradeoff", "ca": "certs/ca.pem"},
           "parties": [{"name": "a", "address": "127.0.0.1:0", "roles": ["data holder"]}],
           "protocol": {"name": "x", "parameters": {"epochs": 5, "lr": 0.5, "flag": True},
                        "inputs": {"train": "t"}},
           "reveal": [{"name": "weights", "to": ["a"], "epsilon": 1.0, "delta": 1e-5}],
           "tables": {"t": {"features": ["u", "v"], "ranges": {"u": [0.0, 2.5]}}}}
    assert tomllib.loads(to_toml(doc)) == doc
    # numpy's numbers are written as TOML numbers (numpy 2's repr is "np.float64(1.39)")
    assert tomllib.loads(to_toml({"p": {"lr": np.float64(1.39), "n": np.int64(3)}})) == {
        "p": {"lr": 1.39, "n": 3}}
