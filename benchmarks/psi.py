"""PSI benchmark: smpc's N-party ECDH-PSI (ristretto255, rbcl) vs the group-operation limit
and OpenMined's `openmined-psi` (2-party ECDH-PSI over P-256, C++).

For 2 and 3 parties and 10k, 100k and 1M identifiers per party (half of them common to
all), each party is an `smpc party` process on loopback (the mesh without TLS, a dealer
process idle beside them) running protocols/blocks/psi.py through `session.exchange`.
Prints per run:

* seconds: the slowest party, from its first PSI message to its ranks;
* bytes/party: the most any party sent (real gRPC bytes, framing included);
* ops/s: that party's hash-to-group + scalar multiplications per second;
* limit s: what those operations cost at rbcl's raw single-thread rates, measured
  right before each run (`crypto_core_ristretto255_from_hash`,
  `crypto_scalarmult_ristretto255`: the machine's load drifts); with
  more parties than cores, the machine limit (every party's operations over the cores)
  when it is higher; `x limit` = seconds / limit (target: <= 1.5);
* OpenMined s: openmined-psi 2.0.4 on the same two sets (client and server in one
  process, as its own benchmarks run it: their work is sequential anyway), and
  `vs OpenMined` = ours / theirs (target: < 1).

    .venv/bin/python benchmarks/psi.py                  # every row (1M runs take minutes)
    .venv/bin/python benchmarks/psi.py --sizes 10000    # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before site-packages: crypten's wheel ships a `benchmarks` too
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))

from protocols.api import Output, Param, Protocol  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
PARTIES = (2, 3)
COMMON = 0.5  # share of each party's identifiers that every party has


def identifiers(rank: int, size: int, common: float = COMMON) -> list[str]:
    """Party `rank`'s identifiers: the common ones, then its own (distinct) ones."""
    shared = int(size * common)
    return ([f"customer-{k:09d}" for k in range(shared)]
            + [f"customer-{rank}-{k:09d}" for k in range(size - shared)])


def party_bench(session: Any) -> dict[str, Any]:
    """Run by each party: the PSI on its synthetic identifiers, timed."""
    from protocols.blocks import psi

    size = session.params.size
    ids = identifiers(session.rank, size)
    counts = psi.Counts()
    salt = psi.salt_for(session.seed, "bench")
    before = session.communication_stats()
    tic = time.perf_counter()
    ranks = psi.intersect(session.exchange, session.parties, session.party, ids, salt,
                          session.parties[-1], counts)
    seconds = time.perf_counter() - tic
    after = session.communication_stats()
    found = int((ranks >= 0).sum())
    return {"timing": {"seconds": seconds, "hashes": counts.hashes,
                       "multiplications": counts.multiplications,
                       "bytes_sent": after["bytes_sent"] - before["bytes_sent"],
                       "bytes_received": after["bytes_received"] - before["bytes_received"],
                       "found": found, "expected": int(size * COMMON)}}


PROTOCOL = Protocol(
    name="psi-benchmark", version="1", summary="N-party PSI of synthetic identifiers, timed",
    run=party_bench, params=(Param("size", int, 10_000, minimum=1),),
    outputs=(Output("timing", "this party's own timing (measured locally, nothing opened)"),),
)


def raw_rates(count: int = 20_000) -> dict[str, float]:
    """rbcl's single-thread hash-to-group and scalar-multiplication rates (per second)."""
    import rbcl

    digests = [hashlib.sha512(str(i).encode()).digest() for i in range(count)]
    tic = time.perf_counter()
    points = [rbcl.crypto_core_ristretto255_from_hash(d) for d in digests]
    hashing = time.perf_counter() - tic
    key = rbcl.crypto_core_ristretto255_scalar_random()
    tic = time.perf_counter()
    for p in points:
        rbcl.crypto_scalarmult_ristretto255(key, p)
    mult = time.perf_counter() - tic
    return {"hash": count / hashing, "mult": count / mult}


def run_smpc(parties: int, size: int, timeout: float) -> list[dict[str, Any]]:
    from parties.node.local import run_generated

    out = run_generated(__file__, parties, insecure=True, timeout=timeout,
                        parameters={"size": size})
    if not out.ok:
        tail = {n: node.lines[-3:] for n, node in out.run.nodes.items()}
        raise RuntimeError(f"PSI of {parties} x {size} failed: {tail}")
    rows = [r["revealed"]["timing"] for r in out.results.values() if r]
    for r in rows:
        if r["found"] != r["expected"]:
            raise RuntimeError(f"PSI found {r['found']} common identifiers, not {r['expected']}")
    return rows


def run_openmined(size: int) -> float | None:
    """Seconds for openmined-psi on party 0's and party 1's sets, or None without it."""
    try:
        import private_set_intersection.python as omp
    except ImportError:
        return None
    client_items, server_items = identifiers(0, size), identifiers(1, size)
    tic = time.perf_counter()
    client = omp.client.CreateWithNewKey(True)
    server = omp.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items,
                                      omp.DataStructure.RAW)
    response = server.ProcessRequest(client.CreateRequest(client_items))
    found = client.GetIntersection(setup, response)
    seconds = time.perf_counter() - tic
    if len(found) != int(size * COMMON):
        raise RuntimeError(f"openmined-psi found {len(found)}, not {int(size * COMMON)}")
    return seconds


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--parties", type=int, nargs="+", default=list(PARTIES))
    ap.add_argument("--timeout", type=float, default=900, help="each node's receive timeout")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    rates = raw_rates()
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}; "
          f"rbcl raw rates now (one thread): hash-to-group {rates['hash']:,.0f}/s, scalar "
          f"multiplication {rates['mult']:,.0f}/s (measured again before each row)")
    print("PSI: every party a process on loopback (no TLS); half of each set common to all")
    head = ("| parties | ids/party | seconds | limit s | x limit | ops/s/party | raw ops/s "
            "| bytes/party | OpenMined s | vs OpenMined |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    rows = []
    for parties in args.parties:
        for size in args.sizes:
            print(f"... {parties} parties x {size}", file=sys.stderr, flush=True)
            rates = raw_rates()
            timings = run_smpc(parties, size, args.timeout)
            slowest = max(timings, key=lambda t: t["seconds"])
            per_party = max(t["hashes"] / rates["hash"] + t["multiplications"] / rates["mult"]
                            for t in timings)
            machine = sum(t["hashes"] / rates["hash"] + t["multiplications"] / rates["mult"]
                          for t in timings) / min(cores, parties)
            limit = max(per_party, machine)
            ops = (slowest["hashes"] + slowest["multiplications"]) / slowest["seconds"]
            raw = (slowest["hashes"] + slowest["multiplications"]) / (
                slowest["hashes"] / rates["hash"] + slowest["multiplications"] / rates["mult"])
            theirs = run_openmined(size) if parties == 2 else None
            row = {"parties": parties, "size": size, "seconds": slowest["seconds"], "rates": rates,
                   "limit_per_party": per_party, "limit_machine": machine,
                   "bytes_sent": max(t["bytes_sent"] for t in timings), "ops_per_s": ops,
                   "openmined": theirs, "timings": timings}
            rows.append(row)
            om = f"{theirs:11.2f}" if theirs else f"{'-':>11}"
            vs = f"{slowest['seconds'] / theirs:12.2f}" if theirs else f"{'-':>12}"
            print(f"| {parties:7d} | {size:9,d} | {slowest['seconds']:7.2f} | {limit:7.2f} | "
                  f"{slowest['seconds'] / limit:7.2f} | {ops:11,.0f} | {raw:9,.0f} | "
                  f"{_bytes(row['bytes_sent']):>11} | {om} | {vs} |", flush=True)
    print("limit s: the busiest party's hash-to-group and scalar multiplications at the raw "
          "rates, or, with more parties than cores, all parties' operations over the cores; "
          "raw ops/s: that party's mix of operations at the raw rates, one core")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
