"""A fourth clinic's patients to score: 40 rows of the breast-cancer data (run once; output
committed).

clinic-d has no labels: its rows are 40 of the rows the hospitals example holds out for
evaluation (never trained on), written without the `malignant` column to
data/clinic-d.csv. Their true labels go to data/clinic-d-labels.csv, which smpc never
reads: the README compares the predictions with them.

    .venv/bin/python examples/inference/make_data.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

HERE = Path(__file__).resolve().parent
SEED = 7  # examples/hospitals/make_data.py's: the same held-out rows
ROWS = 40


def main() -> None:
    data = load_breast_cancer()
    x, label = data.data, 1 - data.target  # 1 = malignant
    names = [n.replace(" ", "_") for n in data.feature_names]
    order = np.random.default_rng(SEED).permutation(len(x))
    held_out = order[:len(x) // 5][:ROWS]
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    with (out / "clinic-d.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", *names])
        for i in held_out:
            w.writerow([f"clinic-d-{i}", *(f"{v:.6g}" for v in x[i])])
    with (out / "clinic-d-labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "malignant"])
        for i in held_out:
            w.writerow([f"clinic-d-{i}", int(label[i])])
    print(f"clinic-d: {ROWS} rows ({int(label[held_out].sum())} malignant)")


if __name__ == "__main__":
    main()
