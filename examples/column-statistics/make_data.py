"""Writes data/<clinic>.csv: synthetic patient rows for three clinics (fixed seed).

    python make_data.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SIZES = {"clinic-north": 120, "clinic-south": 80, "clinic-east": 150}
SMOKER = ["never", "former", "current"]


def main() -> None:
    rng = random.Random(20261201)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for clinic, rows in SIZES.items():
        shift = {"clinic-north": 0.0, "clinic-south": 6.0, "clinic-east": -4.0}[clinic]
        with (out / f"{clinic}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["patient_id", "age", "bmi", "systolic_bp", "smoker"])
            for i in range(rows):
                age = min(99, max(18, round(rng.gauss(52 + shift, 14))))
                bmi = round(min(49.9, max(15.0, rng.gauss(27 + shift / 4, 4.5))), 1)
                bp = round(min(199, max(85, rng.gauss(118 + 0.4 * (age - 50), 14))))
                smoker = rng.choices(SMOKER, weights=[5, 3, 2])[0]
                w.writerow([f"{clinic}-{i:04d}", age, bmi, bp, smoker])


if __name__ == "__main__":
    main()
