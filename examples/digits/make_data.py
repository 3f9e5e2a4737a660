"""Split scikit-learn's digits across four banks (run once; the CSV files are committed).

scikit-learn ships the 1,797 8x8 images of handwritten digits (pixel values
0..16, ten classes), so nothing is downloaded. The banks hold unequal shares
of the training rows (35%, 30%, 20%, 15%); the held-out test rows (20%) are
spread across them too. Writes data/<bank>-{train,test}.csv.

    .venv/bin/python examples/digits/make_data.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent
SEED = 13
BANKS = [("bank-north", 0.35), ("bank-south", 0.30), ("bank-east", 0.20), ("bank-west", 0.15)]
COLUMNS = [f"p{row}{col}" for row in range(8) for col in range(8)]  # pixel (row, column)


def main() -> None:
    data = load_digits()
    x, y = data.data.astype(int), data.target.astype(int)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    start = 0
    for k, (name, share) in enumerate(BANKS):
        end = len(train) if k == len(BANKS) - 1 else start + round(len(train) * share)
        parts = {"train": train[start:end], "test": test[k::len(BANKS)]}
        start = end
        for split, rows in parts.items():
            with (out / f"{name}-{split}.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow([*COLUMNS, "digit"])
                for i in rows:
                    w.writerow([*x[i], y[i]])
        print(f"{name}: {len(parts['train'])} training rows, {len(parts['test'])} test rows")


if __name__ == "__main__":
    main()
