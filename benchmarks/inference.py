"""Private-inference latency: smpc vs stock CrypTen over gloo (TTP), the same models.

Two parties (the model owner and a data owner) plus the dealer (smpc) or CrypTen's
trusted third party, each a process on loopback with one torch thread. A query is
what `smpc serve` does per query once the model is shared: the data owner shares its
rows, the model runs on the shares, each row's class is opened (benchmarks/workloads.py:
`inference`). Rows: logistic regression (30 columns), the digits MLP and CNN, 1 and 100
rows; median of `--repeats` queries after a warm-up, the slowest party's time.

The second table is a whole serving query as a data owner sees it, process start
excluded: `smpc serve` for the owner and the dealer, then `parties.node.serving.predict`
called in one process per query batch (connect with mutual TLS, the manifest, the
engine's start, the query, the close).

    .venv/bin/python benchmarks/inference.py [--repeats 5] [--no-serving]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before site-packages: crypten's wheel ships a `benchmarks` too
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))

TARGET_RATIO = 0.5
TARGET_MLP_1_ROW_S = 0.050


def latency_table(repeats: int) -> list[dict[str, Any]]:
    from benchmarks.engine import run_smpc
    from benchmarks.gloo_baseline import run_gloo
    from benchmarks.workloads import INFERENCE_WORKLOADS

    rows = []
    for name in INFERENCE_WORKLOADS:
        print(f"... {name}", file=sys.stderr, flush=True)
        ours = run_smpc(name, repeats, parties=2)
        tls = run_smpc(name, repeats, parties=2, tls=True)
        ttp = run_gloo(name, "TTP", repeats, world_size=2)
        rows.append({"workload": name, "smpc": ours, "smpc_tls": tls, "gloo_ttp": ttp,
                     "ratio": ours["seconds"] / ttp["seconds"]})
    print(f"\nOne query (2 parties + dealer or TTP; median of {repeats} after a warm-up; "
          "the model shared beforehand)")
    head = ("| query                    | smpc ms | rounds | smpc+TLS ms | CrypTen-gloo TTP ms "
            "| rounds | ratio | target <= 0.5 | agree |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        o, t = r["smpc"], r["gloo_ttp"]
        print(f"| {r['workload']:<24} | {o['seconds'] * 1000:7.1f} | {o['rounds']:6d} | "
              f"{r['smpc_tls']['seconds'] * 1000:11.1f} | {t['seconds'] * 1000:19.1f} | "
              f"{t['rounds']:6d} | {r['ratio']:5.2f} | "
              f"{'met' if r['ratio'] <= TARGET_RATIO else 'missed':<13} | "
              f"{o['result']['agree']:5.2f} |")
    mlp = next(r for r in rows if r["workload"] == "inference MLP, 1 row")
    ms = mlp["smpc"]["seconds"]
    print(f"1-row MLP: {ms * 1000:.1f} ms (target < {TARGET_MLP_1_ROW_S * 1000:.0f} ms: "
          f"{'met' if ms < TARGET_MLP_1_ROW_S else 'missed'})")
    return rows


def serving_table(queries: int) -> None:
    """End-to-end queries against `smpc serve` (the example's LR model, clinic-d's rows)."""
    from parties.consortium import certs
    from tests.support import on_free_ports, wait_for_line

    with tempfile.TemporaryDirectory(prefix="smpc-bench-serve-") as tmp:
        base = Path(tmp) / "inference"
        shutil.copytree(ROOT / "examples" / "inference", base,
                        ignore=shutil.ignore_patterns("certs", "out"))
        on_free_ports(base / "consortium.toml")
        certs.generate("inference", ["hospital-a", "clinic-d", "dealer"], base / "certs")
        smpc = [sys.executable, "-m", "parties.cli", "serve", "--consortium",
                str(base / "consortium.toml"), "--threads", "1"]
        procs = [subprocess.Popen([*smpc, "--as", "dealer"], cwd=tmp, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=True),
                 subprocess.Popen([*smpc, "--as", "hospital-a", "--policy",
                                   str(base / "policies" / "hospital-a.toml")], cwd=tmp,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=True)]
        try:
            wait_for_line(procs[1], "model shared once", 300)
            times = _client_queries(base, queries)
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    print(f"\nServing: {queries} queries against `smpc serve` (examples/inference: LR, 40 rows, "
          "mutual TLS), one client process, process start excluded")
    print("| part of a query                              | median ms |")
    print("|----------------------------------------------|----------:|")
    for part, values in times.items():
        print(f"| {part:<44} | {statistics.median(values) * 1000:9.1f} |")


def _client_queries(base: Path, queries: int) -> dict[str, list[float]]:
    from parties.cli.common import link_options
    from parties.cli.main import parser
    from parties.consortium.config import Policy
    from parties.node import party, serving

    consortium = base / "consortium.toml"
    args = parser().parse_args(["predict", "--consortium", str(consortium), "--as",
                                "clinic-d", "--input", "x"])
    times: dict[str, list[float]] = {"whole query (connect to close)": [],
                                     "the query on shares (engine start to reveal)": []}
    policy = Policy(path=consortium, party="clinic-d",
                    data={"rows": base / "data" / "clinic-d.csv"},
                    accept_protocols=("inference",), accept_reveal=("predictions",))
    for _ in range(queries + 1):  # the first one warms caches up
        prepared = party.prepare_with(consortium, "clinic-d", policy)
        tic = time.perf_counter()
        run = serving.predict(prepared, link_options(args), threads=1)
        times["whole query (connect to close)"].append(time.perf_counter() - tic)
        times["the query on shares (engine start to reveal)"].append(run.seconds)
    return {k: v[1:] for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed queries per cell")
    ap.add_argument("--queries", type=int, default=5, help="serving queries")
    ap.add_argument("--no-serving", action="store_true", help="skip the serving table")
    args = ap.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, every node a process on loopback, one torch thread "
          "each")
    latency_table(args.repeats)
    if not args.no_serving:
        serving_table(args.queries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
