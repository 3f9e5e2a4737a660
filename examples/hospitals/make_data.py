"""Split scikit-learn's breast-cancer data across three hospitals (run once; output committed).

Hospitals differ in size and class balance; the held-out test rows (20%) are
spread across them too. Writes data/<hospital>-{train,test}.csv and the
[tables.patients] block of consortium.toml (feature names and public value ranges).

    .venv/bin/python examples/hospitals/make_data.py
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

HERE = Path(__file__).resolve().parent
SEED = 7
# (hospital, share of training rows, share of its rows that are malignant)
HOSPITALS = [("hospital-a", 0.50, 0.25), ("hospital-b", 0.32, 0.55), ("hospital-c", 0.18, 0.40)]


def column(name: str) -> str:
    return name.replace(" ", "_")


def main() -> None:
    data = load_breast_cancer()
    x, y = data.data, data.target  # target 1 = benign, 0 = malignant
    label = 1 - y  # we predict malignant = 1
    names = [column(n) for n in data.feature_names]
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    pos = [i for i in train if label[i] == 1]
    neg = [i for i in train if label[i] == 0]
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    for k, (name, share, malignant) in enumerate(HOSPITALS):
        rows = round(len(train) * share) if k < len(HOSPITALS) - 1 else len(pos) + len(neg)
        n_pos = min(len(pos), round(rows * malignant))
        n_neg = min(len(neg), rows - n_pos)
        if k == len(HOSPITALS) - 1:
            n_pos, n_neg = len(pos), len(neg)
        mine = pos[:n_pos] + neg[:n_neg]
        pos, neg = pos[n_pos:], neg[n_neg:]
        rng.shuffle(mine)
        test_part = test[k::len(HOSPITALS)]
        for split, idx in (("train", mine), ("test", test_part)):
            with (out / f"{name}-{split}.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["patient_id", *names, "malignant"])
                for i in idx:
                    w.writerow([f"{name}-{i}", *(f"{v:.6g}" for v in x[i]), int(label[i])])
        print(f"{name}: {len(mine)} training rows ({n_pos} malignant), "
              f"{len(test_part)} test rows")
    lo = [math.floor(v * 0.9 * 1000) / 1000 for v in x.min(0)]
    hi = [math.ceil(v * 1.1 * 1000) / 1000 for v in x.max(0)]
    lines = ["[tables.patients]", "features = [", *(f'  "{n}",' for n in names), "]",
             'label = "malignant"', "classes = [0, 1]  # 0 = benign, 1 = malignant", "",
             "# public, agreed value ranges (domain knowledge): each hospital scales its own",
             "# columns to [0, 1] with them before sharing", "[tables.patients.ranges]",
             *(f"{n} = [{a}, {b}]" for n, a, b in zip(names, lo, hi, strict=True))]
    (HERE / "tables.toml.part").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
