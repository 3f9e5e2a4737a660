"""Training time per epoch versus network round-trip time, across namespaced hosts.

    sudo .venv/bin/python benchmarks/latency.py [--epochs 2] [--rtt-ms 0,20,50]

The hospitals example as the Docker demo runs it (docker/compose.yaml's
commands, mutual TLS), one network namespace per node (tests/multihost/netns.py). Delay
comes from a relay in the root namespace that holds each direction back by half
the round-trip time (`tc netem` is not in this kernel). The "direct" row has no
relay; "relay, 0 ms" shows what the relay itself costs. Time per epoch is the
gap between hospital-a's progress lines for epochs 1 and N. Needs root.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # before crypten's stray packages

from tests.multihost.netns import ComposeRun, Network, unavailable

NODES = ["dealer", "hospital-a", "hospital-b", "hospital-c"]
PORTS = {"dealer": 7100, "hospital-a": 7101, "hospital-b": 7102, "hospital-c": 7103}


def one_run(rtt_ms: float | None, epochs: int) -> dict[str, float]:
    """Run the example once; rtt_ms None: no relay at all."""
    delay = 0.0 if rtt_ms is None else rtt_ms / 2000
    with tempfile.TemporaryDirectory() as scratch, \
            Network(NODES, PORTS, delay=delay, relay=rtt_ms is not None) as net:
        run = ComposeRun(Path(scratch), net, edits={"epochs = 10": f"epochs = {epochs}"})
        run.start()
        codes = run.finish(1800)
        if set(codes.values()) != {0}:
            raise SystemExit(f"a node failed: {codes}\n" + run.out["hospital-a"].text[-800:])
        marks = run.epoch_times("hospital-a")
        result = run.result("hospital-a")
    t = result["timings"]
    return {"epoch_s": (marks[-1] - marks[0]) / (len(marks) - 1),
            "total_s": t["protocol_seconds"], "rounds": t["rounds"],
            "accuracy": result["revealed"]["metrics"]["accuracy"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run (at least 2)")
    ap.add_argument("--rtt-ms", default="0,20,50", help="round-trip times to emulate, ms")
    args = ap.parse_args()
    why = unavailable()
    if why:
        print(f"latency benchmark skipped: {why}", file=sys.stderr)
        return 1
    settings: list[tuple[str, float | None]] = [("direct (no relay)", None)]
    settings += [(f"relay, {float(ms):g} ms round trip", float(ms))
                 for ms in args.rtt_ms.split(",")]
    print(f"hospitals example, {args.epochs} epochs, 3 parties + dealer in 4 namespaces, "
          "mutual TLS")
    print(f"{'network':30} {'s/epoch':>8} {'run s':>7} {'rounds':>7} {'ms/round':>9} "
          f"{'accuracy':>9} {'vs direct':>10}")
    base = None
    for label, rtt in settings:
        r = one_run(rtt, args.epochs)
        base = base or r["epoch_s"]
        print(f"{label:30} {r['epoch_s']:8.1f} {r['total_s']:7.1f} {r['rounds']:7d} "
              f"{1000 * r['total_s'] / r['rounds']:9.1f} {r['accuracy']:9.4f} "
              f"{r['epoch_s'] / base:9.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
