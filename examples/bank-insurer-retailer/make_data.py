"""Synthetic customers of a bank, an insurer and a retailer (run once; output committed).

One population of customers from scikit-learn's `make_classification` (fixed seed): 20
features, 12 of them informative, split 8 / 6 / 6 between the three organizations, each
block holding 4 informative ones; the label (the customer defaulted on a loan) is the
bank's. Each organization has its own customers: every customer of the population is a
customer of each organization independently, with probability 0.75 / 0.72 / 0.70, so each
pair of organizations shares 70-75% of the smaller one's customers and about 38% of the
population is a customer of all three. Customers are known by random string identifiers
that all three use; each file lists its own customers in its own order, under its own name
for the identifier column.

Writes data/<organization>.csv and prints the overlaps and the [tables.customers] ranges.

    .venv/bin/python examples/bank-insurer-retailer/make_data.py
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification

HERE = Path(__file__).resolve().parent
SEED = 7
CUSTOMERS = 5000
# organization, identifier column, share of the population, its columns:
# (name, offset, scale) turns a standardized feature into a plausible-looking value
ORGANIZATIONS = [
    ("bank", "customer_id", 0.75, [
        ("income_k", 70, 12), ("balance_k", 30, 6), ("credit_lines", 6, 1),
        ("overdraft_days", 10, 2), ("card_spend_k", 20, 4), ("loan_k", 60, 10),
        ("savings_rate_pct", 15, 3), ("tenure_years", 15, 3)]),
    ("insurer", "client_ref", 0.72, [
        ("claims_5y", 6, 1), ("premium_k", 3, 0.6), ("policies", 4, 0.8),
        ("risk_score", 60, 10), ("vehicle_age", 10, 2), ("home_value_k", 300, 50)]),
    ("retailer", "loyalty_id", 0.70, [
        ("basket_eur", 55, 10), ("visits_month", 8, 1.5), ("online_share_pct", 50, 10),
        ("returns_pct", 10, 2), ("loyalty_points_k", 15, 3), ("discount_use_pct", 40, 8)]),
]
# which generated feature each organization's columns take: make_classification puts the
# 12 informative features first (shuffle=False), so each block gets 4 of them and noise
BLOCKS = [[0, 1, 2, 3, 12, 13, 14, 15], [4, 5, 6, 7, 16, 17], [8, 9, 10, 11, 18, 19]]


def main() -> None:
    x, y = make_classification(n_samples=CUSTOMERS, n_features=20, n_informative=12,
                               n_redundant=0, n_repeated=0, n_clusters_per_class=1,
                               class_sep=1.2, flip_y=0.03, shuffle=False, random_state=SEED)
    # standardized, and cut at 3 standard deviations: each column below is offset + scale * z
    x = np.clip((x - x.mean(0)) / x.std(0), -3, 3)
    rng = np.random.default_rng(SEED)
    ids = [f"cust-{rng.bytes(6).hex()}" for _ in range(CUSTOMERS)]
    assert len(set(ids)) == CUSTOMERS
    members = []
    ranges = []
    (HERE / "data").mkdir(exist_ok=True)
    for (name, id_column, share, columns), block in zip(ORGANIZATIONS, BLOCKS, strict=True):
        mine = np.nonzero(rng.random(CUSTOMERS) < share)[0]
        rng.shuffle(mine)
        members.append(set(mine.tolist()))
        values = np.stack([off + scale * x[:, f] for (_, off, scale), f in
                           zip(columns, block, strict=True)], axis=1)
        header = [id_column, *(c for c, _, _ in columns)] + (["defaulted"] if name == "bank"
                                                              else [])
        with (HERE / "data" / f"{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i in mine:
                w.writerow([ids[i], *(f"{v:.4f}" for v in values[i]),
                            *([int(y[i])] if name == "bank" else [])])
        for col, off, scale in columns:  # public ranges: 3 standard deviations, rounded out
            ranges.append((col, _round(off - 3 * scale, math.floor),
                           _round(off + 3 * scale, math.ceil)))
        print(f"{name}: {len(mine)} customers, {len(columns)} columns")
    for a in range(3):
        for b in range(a + 1, 3):
            both = len(members[a] & members[b])
            smaller = min(len(members[a]), len(members[b]))
            print(f"{ORGANIZATIONS[a][0]} and {ORGANIZATIONS[b][0]} share {both} customers "
                  f"({both / smaller:.0%} of the smaller)")
    print(f"customers of all three: {len(members[0] & members[1] & members[2])}")
    print("[tables.customers.ranges]")
    for col, lo, hi in ranges:
        print(f"{col} = [{lo}, {hi}]")


def _round(value: float, direction: object) -> float:
    return direction(value * 10) / 10  # type: ignore[operator]


if __name__ == "__main__":
    main()
