"""Growth: the self-test's secure operations timed for 2, 3, 4, 6 and 8 parties.

Every party (and the dealer) is a separate process on this machine, so with
more parties than cores the times also grow with CPU sharing; the bytes do
not. Openings are one all-to-all round, so each party sends its share to the
n - 1 others: bytes per party should grow linearly in n - 1 (the last column
stays flat if so).
"""

from __future__ import annotations

from typing import Any

OPS = ("mul", "matmul", "relu", "sigmoid", "nn training step")


def one(parties: int) -> dict[str, Any]:
    from parties.node.local import run_generated

    out = run_generated("selftest", parties, insecure=True, timeout=300)
    first = out.results.get("party0")
    if not out.ok or first is None or not all(r["ok"] for r in first["revealed"]["results"]):
        raise RuntimeError(f"selftest with {parties} parties failed")
    ops = {r["op"]: r["seconds"] for r in first["revealed"]["results"]}
    t = first["timings"]
    return {"parties": parties, "total_s": t["protocol_seconds"], "ops": ops,
            "rounds": t["rounds"], "bytes_sent": t["bytes_sent"]}


def table(counts: tuple[int, ...] = (2, 3, 4, 6, 8)) -> list[dict[str, Any]]:
    return [one(n) for n in counts]


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"| parties | selftest s | {' | '.join(f'{op} ms' for op in OPS)} | rounds "
            "| bytes sent/party | per peer |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        ops = " | ".join(f"{1000 * r['ops'].get(op, float('nan')):{len(op) + 3}.1f}"
                         for op in OPS)
        per_peer = r["bytes_sent"] / (r["parties"] - 1)
        print(f"| {r['parties']:7d} | {r['total_s']:10.2f} | {ops} | {r['rounds']:6d} | "
              f"{r['bytes_sent'] / 1e3:13.1f} KB | {per_peer / 1e3:5.1f} KB |")
