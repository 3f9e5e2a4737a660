"""Peak memory and speed of `load_table` on a generated hospitals-shaped CSV.

Run as a script to measure a large file (the numbers in the data-layer report):

    .venv/bin/python -m tests.consortium.load_probe --mib 200

The loading runs in a fresh child process, so its peak RSS (ru_maxrss) is the
loader's alone on top of the imports; test_data.py uses the same helpers on a
smaller file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hospitals" / "consortium.toml"
BLOCK_ROWS = 20_000

_CHILD = """
import json, resource, sys, time
from parties.consortium.config import load_consortium
from parties.consortium.data import load_table
schema = load_consortium(sys.argv[1]).tables["patients"]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
table = load_table(sys.argv[2], schema)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": table.rows, "seconds": seconds, "baseline_kib": before,
                  "peak_kib": after}))
"""


def write_csv(path: Path, mib: float, seed: int = 0) -> int:
    """Write a CSV with the example's header and about `mib` MiB of in-range rows; return rows."""
    from parties.consortium.config import load_consortium

    schema = load_consortium(EXAMPLE).tables["patients"]
    rng = np.random.default_rng(seed)
    lo = np.array([schema.ranges[c][0] for c in schema.features])
    hi = np.array([schema.ranges[c][1] for c in schema.features])
    values = lo + (hi - lo) * rng.random((BLOCK_ROWS, len(lo)))
    labels = rng.integers(0, 2, BLOCK_ROWS)
    block = "".join(f"p-{i}," + ",".join(f"{v:.6g}" for v in row) + f",{y}\n"
                    for i, (row, y) in enumerate(zip(values, labels, strict=True)))
    repeats = max(1, round(mib * 2**20 / len(block)))
    with path.open("w") as f:
        f.write(",".join(["patient_id", *schema.features, str(schema.label)]) + "\n")
        for _ in range(repeats):
            f.write(block)
    return repeats * BLOCK_ROWS


def measure(csv_path: Path, timeout: float = 600) -> dict[str, float]:
    """Load `csv_path` in a child process; rows, seconds, baseline and peak RSS in KiB."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(EXAMPLE), str(csv_path)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        rows = write_csv(path, args.mib)
        size = path.stat().st_size / 2**20
        m = measure(path)
    print(f"{size:.0f} MiB, {rows} rows: {m['seconds']:.2f} s ({rows / m['seconds']:,.0f} rows/s), "
          f"peak RSS {m['peak_kib'] / 1024:,.0f} MiB (after imports "
          f"{m['baseline_kib'] / 1024:,.0f} MiB)")


if __name__ == "__main__":
    main()
