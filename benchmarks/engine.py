"""Engine benchmark: smpc (CrypTen over gRPC, dealer) vs stock CrypTen over gloo.

3 parties on loopback, in one run, the same workloads (benchmarks/workloads.py)
on three engines:

* smpc: our party processes, gRPC mesh, seed-based dealer over gRPC;
* CrypTen-gloo TTP: stock CrypTen over torch.distributed (gloo) with its
  trusted-third-party provider (a TTP process answers every request);
* CrypTen-gloo TFP: the same with the trusted-first-party provider (party 0
  generates all randomness; insecure, for reference).

Prints a table of median seconds (slowest party), rounds and bytes per party
per run, and `ratio` = smpc / CrypTen-gloo-TTP. `smpc+TLS` is the same run
with mutual TLS on every link (the default across hosts). The `smpc TFP` column runs
smpc with CrypTen's insecure trusted-first-party provider instead of the
dealer: the difference is what the dealer costs. Every process uses one torch
thread (4 processes share 2 cores here).

    .venv/bin/python benchmarks/engine.py            # every row (the epoch takes minutes)
    .venv/bin/python benchmarks/engine.py --quick    # skip the epoch rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before site-packages: crypten's wheel ships a `benchmarks` too
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))

from protocols.api import Output, Param, Protocol  # noqa: E402


def party_bench(session: Any) -> dict[str, Any]:
    """Run by each smpc party: warm up, then time the workload `repeats` times."""
    import crypten
    import torch

    from benchmarks.workloads import EXPENSIVE, WORKLOADS

    torch.set_num_threads(1)
    name, repeats = session.params.workload, session.params.repeats
    work = WORKLOADS[name]

    def open_(secret: Any) -> Any:
        return session.reveal("result", secret)["result"]

    comm = crypten.communicator.get()
    if repeats > 1 and name not in EXPENSIVE:
        work(crypten, open_=open_)  # warm-up: caches, first-use costs
    times, result, stats = [], {}, {}
    for _ in range(repeats):
        comm.barrier()
        comm.reset_communication_stats()
        tic = time.perf_counter()
        result = work(crypten, open_=open_)
        times.append(time.perf_counter() - tic)
        stats = comm.get_communication_stats()
    return {"timing": {
        "op": name, "seconds": statistics.median(times), "rounds": stats["rounds"],
        "bytes": stats["bytes_sent"] + stats["bytes_received"], "bytes_sent": stats["bytes_sent"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "result": result}}


def _workload_names() -> tuple[str, ...]:
    from benchmarks.workloads import WORKLOADS

    return tuple(WORKLOADS)


PROTOCOL = Protocol(
    name="engine-benchmark", version="1", summary="one benchmark workload, timed", run=party_bench,
    params=(Param("workload", str, choices=_workload_names()),
            Param("repeats", int, 3, minimum=1)),
    outputs=(Output("result", "the workload's opened result"),
             Output("timing", "this party's own timing (measured locally, nothing opened)")),
)


def run_smpc(name: str, repeats: int, parties: int = 3, timeout: float = 900,
             provider: str = "dealer", tls: bool = False) -> dict[str, Any]:
    """Run one workload on smpc's engine; the slowest party's median decides."""
    from parties.node.local import run_generated

    out = run_generated(__file__, parties, insecure=not tls, timeout=timeout,
                        parameters={"workload": name, "repeats": repeats}, randomness=provider)
    if not out.ok:
        tail = {n: node.lines[-3:] for n, node in out.run.nodes.items()}
        raise RuntimeError(f"smpc run of {name!r} failed: {tail}")
    rows = [r["revealed"]["timing"] for r in out.results.values() if r]
    first = rows[0]
    dealer = out.run.nodes.get("dealer")
    return {
        "seconds": max(r["seconds"] for r in rows),
        "rounds": first["rounds"],
        "bytes": first["bytes"],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
        "result": first["result"],
        "dealer_served": sum(dealer.result["served"].values()) if dealer and dealer.result
        else 0,
    }


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _accuracy(res: dict[str, Any], key: str = "accuracy") -> str:
    acc = res.get("result", {}).get(key)
    return f"{acc:.3f}" if isinstance(acc, float) else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the logistic-regression epoch")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per cell")
    ap.add_argument("--epoch-repeats", type=int, default=3,
                    help="timed runs per epoch cell (no warm-up run)")
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("--only", choices=["engine", "nn", "bulk", "growth"],
                    help="one table only (default: all four)")
    args = ap.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, every node a process on loopback, one torch thread "
          "each")
    if args.only in (None, "engine"):
        engine_table(args)
    if args.only in (None, "nn"):
        nn_table(args)
    if args.only in (None, "bulk"):
        bulk_table(max(5, args.repeats))
    if args.only in (None, "growth"):
        from benchmarks import growth

        print("\nGrowth: the self-test's operations (times are party 0's)")
        growth.print_table(growth.table())
    return 0


def bulk_table(repeats: int) -> None:
    from benchmarks import bulk

    print(f"\nBulk transfer: 64 MiB one way between two processes, median of {repeats}")
    head = "| path                   | seconds |  MB/s | vs TLS socket |"
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in bulk.table(repeats):
        print(f"| {r['path']:<22} | {r['seconds']:7.3f} | {r['mb_s']:5.0f} | "
              f"{r['vs_tls_socket']:13.2f} |")


def engine_table(args: argparse.Namespace) -> None:
    from benchmarks.gloo_baseline import run_gloo
    from benchmarks.workloads import (
        DEFAULT_EPOCH,
        EXACT_EPOCH,
        INFERENCE_WORKLOADS,
        NN_WORKLOADS,
        STANDARD_EPOCH,
        WORKLOADS,
    )

    names = [n for n in WORKLOADS if not (args.quick and "epoch" in n)
             and n not in NN_WORKLOADS and n not in INFERENCE_WORKLOADS]
    rows = []
    for name in names:
        repeats = args.epoch_repeats if "epoch" in name else args.repeats
        print(f"... {name}", file=sys.stderr, flush=True)
        ours = run_smpc(name, repeats)
        ours_tls = run_smpc(name, repeats, tls=True)
        ours_tfp = run_smpc(name, repeats, provider="insecure-trusted-first-party")
        ttp = run_gloo(name, "TTP", repeats)
        tfp = run_gloo(name, "TFP", repeats)
        rows.append({"workload": name, "smpc": ours, "smpc_tls": ours_tls, "smpc_tfp": ours_tfp,
                     "gloo_ttp": ttp,
                     "gloo_tfp": tfp,
                     "ratio": ours["seconds"] / ttp["seconds"]})

    print("3 parties + dealer (smpc) or TTP (CrypTen-gloo); median of "
          f"{args.repeats} runs after a warm-up (epochs: {args.epoch_repeats}, no warm-up)")
    head = (f"| {'workload':<34} | smpc s | rounds | bytes/party | CrypTen-gloo TTP s | rounds "
            "| bytes/party | ratio | smpc+TLS s | TLS cost | smpc TFP s | gloo TFP s "
            "| peak RSS MiB "
            "| accuracy (smpc / TTP / plain) |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        o, t, f, ot = r["smpc"], r["gloo_ttp"], r["gloo_tfp"], r["smpc_tfp"]
        tls = r["smpc_tls"]["seconds"]
        acc = (f"{_accuracy(o)} / {_accuracy(t)} / {_accuracy(o, 'plaintext_accuracy')}"
               if _accuracy(o) else "")
        print(f"| {r['workload']:<34} | {o['seconds']:6.3f} | {o['rounds']:6d} | "
              f"{_fmt_bytes(o['bytes']):>11} | {t['seconds']:18.3f} | {t['rounds']:6d} | "
              f"{_fmt_bytes(t['bytes']):>11} | {r['ratio']:5.3f} | {tls:10.3f} | "
              f"{(tls / o['seconds'] - 1) * 100:+7.0f}% | {ot['seconds']:10.3f} | "
              f"{f['seconds']:10.3f} | {o['peak_rss_mib']:12.0f} | {acc:<29} |")
    print("smpc bytes are real gRPC bytes (sent + received, with framing); CrypTen counts "
          "8 bytes per element it logs.")
    by_name = {r["workload"]: r for r in rows}
    if DEFAULT_EPOCH in by_name and STANDARD_EPOCH in by_name:
        ours = by_name[DEFAULT_EPOCH]["smpc"]["seconds"]
        theirs = by_name[STANDARD_EPOCH]["gloo_ttp"]["seconds"]
        print(f"smpc's training epoch (piecewise sigmoid) {ours:.2f} s vs CrypTen-gloo-TTP's "
              f"standard epoch (exact sigmoid) {theirs:.2f} s: ratio {ours / theirs:.3f}")
    if EXACT_EPOCH in by_name and STANDARD_EPOCH in by_name:
        exact = by_name[EXACT_EPOCH]["smpc"]
        before = by_name[STANDARD_EPOCH]["smpc"]
        print(f"smpc's epoch with sigmoid = \"exact\" (spline) {exact['seconds']:.2f} s, "
              f"{exact['rounds']} rounds vs CrypTen's sigmoid on smpc {before['seconds']:.2f} s, "
              f"{before['rounds']} rounds: ratio {exact['seconds'] / before['seconds']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


def nn_table(args: argparse.Namespace) -> None:
    """The digits example's models: epochs and forward passes, smpc vs CrypTen-gloo-TTP."""
    from benchmarks.gloo_baseline import run_gloo
    from benchmarks.workloads import NN_WORKLOADS

    names = [n for n in NN_WORKLOADS if not (args.quick and "epoch" in n)]
    rows = {}
    for name in names:
        print(f"... {name}", file=sys.stderr, flush=True)
        repeats = 1 if "epoch" in name else args.repeats
        rows[name] = (run_smpc(name, repeats), run_gloo(name, "TTP", repeats, timeout=3600))
    print("\nNeural networks (examples/digits models, 3 parties + dealer or TTP; epochs: the "
          "epoch loop alone, one run; forward: median of "
          f"{args.repeats} after a warm-up)")
    head = ("| workload                          | smpc s | rounds/step | CrypTen-gloo TTP s "
            "| rounds/step | ratio | accuracy (smpc / TTP) |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")

    def cell(res: dict[str, Any]) -> tuple[float, str]:
        got = res["result"]
        seconds = got.get("epoch_seconds", res["seconds"])
        per_step = f"{got['rounds_per_step']:.0f}" if "rounds_per_step" in got \
            else f"{res['rounds']} (pass)"
        return seconds, per_step

    for name, (ours, ttp) in rows.items():
        (a, ra), (b, rb) = cell(ours), cell(ttp)
        acc = (f"{ours['result']['accuracy']:.3f} / {ttp['result']['accuracy']:.3f}"
               if "accuracy" in ours["result"] else "")
        print(f"| {name:<33} | {a:6.2f} | {ra:>11} | {b:18.2f} | {rb:>11} | {a / b:5.3f} | "
              f"{acc:<21} |")
    for model in ("MLP", "CNN"):
        ours = rows.get(f"digits {model} epoch, smpc's step")
        theirs = rows.get(f"digits {model} epoch, CrypTen's loop")
        if ours and theirs:
            a, b = cell(ours[0])[0], cell(theirs[1])[0]
            print(f"digits {model}: smpc's epoch {a:.2f} s vs CrypTen's loop on "
                  f"CrypTen-gloo-TTP {b:.2f} s: ratio {a / b:.3f}")


if __name__ == "__main__":
    sys.exit(main())
