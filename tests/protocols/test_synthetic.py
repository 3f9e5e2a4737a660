"""synthetic-data: the epsilon of the revealed marginals is the accountant's for the calibrated
noise; the noisy marginals are the pooled counts plus that noise; rows drawn from them follow
the real marginals; the exporter writes the table's columns; a delta too large is refused."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from parties.node.session import PartySession
from protocols.api import Budget, ExportContext, PlainTable, ProtocolError
from protocols.blocks import accounting
from protocols.synthetic import marginals, mst
from tests.engine.harness import run_parties

COLUMNS = ("age", "dose", "smoker")


def _tables(seed: int = 0) -> list[PlainTable]:
    """Three parties' rows: the label depends on 'dose' (so the 2-way marginal matters)."""
    rng = np.random.default_rng(seed)
    out = []
    for rows in (260, 180, 140):
        x = rng.uniform(size=(rows, 3))
        x[:, 2] = rng.integers(0, 2, size=rows)
        y = (x[:, 1] + 0.2 * rng.normal(size=rows) > 0.5).astype(np.float32)
        out.append(PlainTable(torch.tensor(x, dtype=torch.float32),
                              torch.tensor(y).reshape(-1, 1), COLUMNS, (0, 1)))
    return out


def _run(tables: list[PlainTable], budget: Budget) -> list[dict[str, Any]]:
    params = mst.PROTOCOL.parameters({"bins": 4})

    def party(comm: Any) -> dict[str, Any]:
        rank = comm.get_rank()
        names = [f"p{i}" for i in range(len(tables))]
        session = PartySession(names[rank], rank, names, params, b"seed", comm,
                               outputs=("marginals",), reveal_to={"marginals": names},
                               tables={"train": tables[rank]}, budgets={"marginals": budget})
        return mst.run(session)

    return run_parties(len(tables), party, timeout=120)


@pytest.fixture(scope="module")
def released() -> tuple[list[PlainTable], list[dict[str, Any]]]:
    tables = _tables()
    return tables, _run(tables, Budget(1.0, 1e-5))


def test_the_epsilon_is_the_accountants_for_the_calibrated_noise(released: Any) -> None:
    _, results = released
    value = results[0]["marginals"]
    assert all(r["marginals"] == value for r in results)  # every recipient learns the same
    privacy = value["privacy"]
    m = len(COLUMNS) + 1  # the label's counts and one (bin, label) table per feature
    assert privacy["marginals"] == m
    sigma = privacy["noise_multiplier"]
    event = accounting.gaussian_event(sigma, m)
    assert privacy["epsilon"] == pytest.approx(accounting.epsilon(event, 1e-5), rel=1e-12)
    assert 0.97 <= privacy["epsilon"] <= 1.0  # calibrated to the budget, never above it
    assert privacy["delta"] == 1e-5
    # a sigma 5 % smaller would spend more than the budget
    assert accounting.epsilon(accounting.gaussian_event(sigma * 0.95, m), 1e-5) > 1.0


def test_noisy_marginals_are_the_pooled_counts_plus_the_noise(released: Any) -> None:
    """Each cell's error is N(0, sigma^2) (x 3/2 with noise_coalition 1): every |error| below
    6 x that std has false-alarm rate < 1e-7 over the 28 cells; and the errors are not 0."""
    tables, results = released
    value = results[0]["marginals"]
    exact = mst.plaintext({"train": tables}, mst.PROTOCOL.parameters({"bins": 4}), b"", None)
    error = np.array(value["counts"]) - np.array(exact["marginals"]["counts"])
    std = value["privacy"]["noise_multiplier"] * np.sqrt(1.5)
    assert np.abs(error).max() < 6 * std
    assert np.abs(error).max() > 1e-3


def test_rows_drawn_from_the_marginals_follow_the_real_ones(released: Any) -> None:
    tables, results = released
    x, y = mst.synthesize(results[0]["marginals"], 4000, b"digest")
    assert x.shape == (4000, 3) and set(np.unique(y)) <= {0, 1}
    real_x = np.concatenate([t.features.numpy() for t in tables])
    real_y = np.concatenate([t.labels.numpy().reshape(-1) for t in tables])
    close = marginals.fidelity(real_x, real_y, x, y, 4, 2)
    assert close["tvd_2way"] < 0.15
    # against rows whose label ignores 'dose' the 2-way distance is clearly larger
    far = marginals.fidelity(real_x, real_y, x, np.random.default_rng(1).permutation(y), 4, 2)
    assert far["tvd_2way"] > close["tvd_2way"] + 0.05


def test_the_exporter_writes_the_tables_columns(released: Any, tmp_path: Path) -> None:
    from parties.consortium.config import TableSchema

    _, results = released
    schema = TableSchema("t", COLUMNS, "outcome", {c: "float" for c in COLUMNS},
                         {"age": (20.0, 80.0)}, {}, (0, 1))
    ctx = ExportContext(tmp_path, "synthetic-data", mst.PROTOCOL.parameters({"rows": 50}),
                        "ab" * 32, {"train": schema}, {})
    files = mst.export_rows(results[0]["marginals"], ctx)
    rows = list(csv.reader(files[0].open()))
    assert rows[0] == [*COLUMNS, "outcome"] and len(rows) == 51
    ages = [float(r[0]) for r in rows[1:]]
    assert min(ages) >= 20.0 and max(ages) <= 80.0 and max(ages) - min(ages) > 20


def test_a_delta_not_below_one_over_rows_is_refused() -> None:
    shape = marginals.layout(3, 4, 2)
    with pytest.raises(ProtocolError, match="below 1/rows = 1/100"):
        mst.calibrated(Budget(1.0, 0.01), 100, shape, 1)
