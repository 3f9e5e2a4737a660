"""The anonymity measures against pycanon (the oracle) on random tables, and Mondrian's output
k-anonymous for every k tested."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.blocks import anonymity

pd = pytest.importorskip("pandas")
pycanon = pytest.importorskip("pycanon.anonymity")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore:In a future version")

SEEDS = range(12)


def _table(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random quasi-identifiers with few distinct values (so classes have several rows), a
    numeric and a categorical sensitive column, each with at least two values."""
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(20, 120))
    qi = rng.integers(0, int(rng.integers(2, 5)), size=(rows, int(rng.integers(1, 4))))
    numeric = rng.integers(0, int(rng.integers(2, 6)), size=rows)
    numeric[:2] = [0, 1]
    categorical = rng.choice(np.array(["flu", "cold", "asthma", "none"]), size=rows)
    categorical[:2] = ["flu", "none"]
    return qi, numeric, categorical


def _frame(qi: np.ndarray, numeric: np.ndarray, categorical: np.ndarray) -> tuple[object, list]:
    names = [f"q{i}" for i in range(qi.shape[1])]
    frame = pd.DataFrame(qi, columns=names)
    frame["numeric"] = numeric
    frame["diagnosis"] = categorical.astype(str)
    return frame, names


@pytest.mark.parametrize("seed", SEEDS)
def test_measures_equal_pycanons(seed: int) -> None:
    qi, numeric, categorical = _table(seed)
    frame, names = _frame(qi, numeric, categorical)
    assert anonymity.k_anonymity(qi) == pycanon.k_anonymity(frame, names)
    for column, values in (("numeric", numeric), ("diagnosis", categorical)):
        assert anonymity.l_diversity(qi, values) == pycanon.l_diversity(frame, names, [column])
        # pycanon truncates exp(entropy) to an integer (exp(log 2) may become 1); ours is
        # the real number
        ours = anonymity.entropy_l_diversity(qi, values)
        theirs = pycanon.entropy_l_diversity(frame, names, [column])
        assert theirs in (int(ours + 1e-9), int(ours - 1e-9))
    assert anonymity.t_closeness(qi, numeric, ordered=True) == pytest.approx(
        pycanon.t_closeness(frame, names, ["numeric"]), abs=1e-12)
    assert anonymity.t_closeness(qi, categorical, ordered=False) == pytest.approx(
        pycanon.t_closeness(frame, names, ["diagnosis"]), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_measures_of_a_mondrian_release_equal_pycanons(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    qi = rng.normal(size=(150, 3))
    sensitive = rng.integers(0, 3, size=150)
    released = anonymity.anonymize(qi, 7)
    frame, names = _frame(released, sensitive, sensitive.astype(str))
    ours = anonymity.measures(released, sensitive, ordered=True)
    assert ours["k"] == pycanon.k_anonymity(frame, names) >= 7
    assert ours["l_distinct"] == pycanon.l_diversity(frame, names, ["numeric"])
    assert ours["t_closeness"] == pytest.approx(pycanon.t_closeness(frame, names, ["numeric"]))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10, 25, 50])
def test_mondrian_output_is_k_anonymous(k: int) -> None:
    rng = np.random.default_rng(k)
    qi = np.column_stack([rng.normal(size=400), rng.integers(0, 6, size=400),
                          rng.uniform(size=400) ** 3])
    partitions = anonymity.mondrian(qi, k)
    assert sorted(np.concatenate(partitions).tolist()) == list(range(400))  # every row once
    assert min(len(p) for p in partitions) >= k
    released = anonymity.generalize(qi, partitions)
    assert anonymity.k_anonymity(released) >= k
    # Mondrian cuts while it can: no leaf has a median cut leaving k rows on both sides
    for p in partitions:
        for column in qi[p].T:
            left = int((column <= np.sort(column)[(len(column) - 1) // 2]).sum())
            assert not k <= left <= len(column) - k
    # every released value lies within the range of the rows it generalizes
    for p in partitions:
        assert np.all(released[p] >= qi[p].min(axis=0)) and np.all(released[p] <= qi[p].max(0))


def test_mondrian_keeps_identical_rows_together_and_refuses_too_few_rows() -> None:
    qi = np.array([[1.0, 2.0]] * 5 + [[3.0, 4.0]] * 5)
    assert [sorted(p.tolist()) for p in anonymity.mondrian(qi, 5)] == [[0, 1, 2, 3, 4],
                                                                       [5, 6, 7, 8, 9]]
    assert len(anonymity.mondrian(qi, 6)) == 1  # no cut leaves 6 rows on both sides
    with pytest.raises(ValueError, match="11-anonymous"):
        anonymity.mondrian(qi, 11)
