"""`smpc local` and `smpc selftest`: every node of a run as local processes.

    smpc local examples/hospitals/consortium.toml --json out.json
    smpc local --parties 3 selftest          (a protocol that takes no data)
    smpc selftest --parties 3
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from parties.cli.common import EXIT_FAILED, UsageError, describe, link_flags


def add(sub: Any) -> None:
    lo = sub.add_parser("local", help="run every party of a consortium (and the dealer) locally")
    lo.add_argument("target", help="a consortium file (each party's data from its policy), or, "
                                    "with --parties, a protocol name or a protocol file (.py)")
    lo.add_argument("--parties", type=int,
                    help="with a protocol: run it with this many parties (2 to 8)")
    lo.add_argument("--policy", action="append", default=[], metavar="PARTY=PATH",
                    help="with a consortium: this party's policy (repeatable; default "
                         "policies/<party>.toml beside the consortium file)")
    lo.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="with a protocol: one of its parameters (repeatable; VALUE in TOML, "
                         "e.g. epochs=3 or sigmoid=\"exact\")")
    lo.add_argument("--json", help="write what was revealed, the baselines and timings here")
    lo.add_argument("--verbose", action="store_true", help="show every node's output")
    lo.add_argument("--insecure", action="store_true",
                    help="plaintext links without certificates (loopback only)")
    lo.add_argument("--max-run-time", type=float,
                    help="with a consortium: stop every node (exit 3, checkpoints kept) after "
                         "this many seconds (default: no limit)")
    link_flags(lo)
    lo.set_defaults(func=cmd_local, where=lambda a: "local")

    st = sub.add_parser("selftest", help="check the install: secure operations vs plaintext")
    st.add_argument("--parties", type=int, default=3, help="number of parties, 2 to 8")
    st.add_argument("--verbose", action="store_true", help="show every node's output")
    st.add_argument("--json", help="write every party's rows here")
    link_flags(st)
    st.set_defaults(func=cmd_selftest, where=lambda a: "selftest")


def _link_args(args: argparse.Namespace) -> list[str]:
    """The link flags the user gave, passed on to every node."""
    return ["--connect-timeout", str(args.connect_timeout), "--reconnect-window",
            str(args.reconnect_window), "--keepalive", str(args.keepalive),
            "--max-payload-mib", str(args.max_payload_mib), "--max-pending",
            str(args.max_pending)]


def _is_consortium(target: str) -> bool:
    return target.endswith(".toml")


def cmd_local(args: argparse.Namespace) -> int:
    from parties.node import local, party

    echo = sys.stderr if args.verbose else None
    if _is_consortium(args.target):
        if args.parties is not None or args.set:
            raise UsageError("--parties and --set go with a protocol name; a consortium file "
                             "lists its own parties and parameters")
        policies = {}
        for item in args.policy:
            name, eq, path = item.partition("=")
            if not eq or not name or not path:
                raise UsageError(f"--policy {item!r}: write PARTY=PATH")
            policies[name] = path
        out = local.run_local(args.target, policies, args.insecure, echo, args.timeout,
                              args.max_run_time, _link_args(args))
    else:
        if args.parties is None:
            raise UsageError(f"{args.target!r} is not a consortium file (.toml); to run a "
                             "protocol that needs no data, add --parties N")
        if args.policy or args.max_run_time is not None:
            raise UsageError("--policy and --max-run-time go with a consortium file")
        out = local.run_generated(args.target, args.parties, args.insecure, echo, args.timeout,
                                  _link_args(args), _parameters(args.set))
    if not out.ok:
        _print_failures(out.run)
        return EXIT_FAILED
    _print_outcome(out)
    if args.json:
        party.write_json(args.json, out.as_json())
    passed = out.protocol.passed
    results = [r.get("revealed") or {} for r in out.results.values() if r]
    return 0 if passed is None or all(passed(r) for r in results) else EXIT_FAILED


def _parameters(items: list[str]) -> dict[str, Any]:
    """--set PARAM=VALUE pairs, each VALUE read as TOML (a bare word as a string)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        name, eq, text = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--set {item!r}: write PARAM=VALUE")
        try:
            out[name] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[name] = text
    return out


def _print_failures(run: Any) -> None:
    for name, node in run.nodes.items():
        rc = run.returncodes[name]
        if rc != 0:
            last = next((ln for ln in reversed(node.lines) if ln.strip()), "no output")
            print(f"  {name}: exit {rc}: {last}", file=sys.stderr)
    if run.timed_out:
        print("smpc local: stopped at --max-run-time", file=sys.stderr)


def _print_outcome(out: Any) -> None:
    """The compared output as a table against the baselines, or each party's outputs."""
    revealed = out.revealed()
    compare = out.protocol.compare
    mpc = revealed.get(compare) if out.baseline is not None else None
    columns = [k for k, v in mpc.items() if isinstance(v, int | float)] \
        if isinstance(mpc, dict) else []
    if mpc is not None and columns:
        print(f"{'':24}" + "".join(f" {c:>10}" for c in columns))
        pooled = ("plaintext join", out.baseline["joined"]) if "joined" in out.baseline \
            else ("pooled plaintext", out.baseline["pooled"])
        rows = [("MPC (smpc)", mpc), pooled]
        rows += [(f"{p} alone", m) for p, m in out.baseline["alone"].items()]
        for label, m in rows:
            cells = "".join(f" {m[c]:10.4f}" if isinstance(m.get(c), int | float)
                            else f" {'-':>10}" for c in columns)
            print(f"{label:24}{cells}{'  ' + m['error'] if 'error' in m else ''}")
    else:
        for name, result in out.results.items():
            for output, value in ((result or {}).get("revealed") or {}).items():
                if value is not None:
                    print(f"{name} learned {output}: {describe(value)}")
    first = next(r for r in out.results.values() if r)
    timing = first["timings"]
    print(f"{out.protocol.name}: {timing['protocol_seconds']:.1f} s per party, of which "
          f"{timing['communication_seconds']:.1f} s waiting on the network "
          f"({timing['rounds']} rounds); {out.wall_seconds:.1f} s in all")


def cmd_selftest(args: argparse.Namespace) -> int:
    from parties.node import local, party

    print(f"smpc selftest: {args.parties} parties + dealer on loopback over gRPC (mutual TLS)",
          flush=True)
    out = local.run_generated("selftest", args.parties,
                              echo=sys.stderr if args.verbose else None, timeout=args.timeout,
                              extra=_link_args(args))
    first = next((r for r in out.results.values() if r), None)
    if first is None or not out.ok:
        _print_failures(out.run)
        if first is None:
            return 2
    rows = first["revealed"]["results"]
    width = max(len(r["op"]) for r in rows)
    for r in rows:
        mark = "ok  " if r["ok"] else "FAIL"
        print(f"  {mark} {r['op']:<{width}}  max error {r['max_error']:.2e}  "
              f"tolerance {r['tolerance']:.0e}  {r['seconds'] * 1000:8.1f} ms")
    served = (out.run.nodes["dealer"].result or {}).get("served", {})
    t = first["timings"]
    print(f"  {first['party']}: {t['rounds']} rounds, {t['bytes_sent']} bytes sent, "
          f"{t['bytes_received']} received; dealer served {sum(served.values())} requests")
    agree = all(_same_verdicts(r, rows) for r in out.results.values())
    ok = out.ok and all(r["ok"] for r in rows) and agree
    if args.json:
        party.write_json(args.json, {**out.as_json(), "ok": ok})
    print("smpc selftest: " + ("all operations within tolerance" if ok else "FAILED"))
    return 0 if ok else EXIT_FAILED


def _same_verdicts(result: dict[str, Any] | None, rows: list[dict[str, Any]]) -> bool:
    theirs = (result or {}).get("revealed", {}).get("results") or []
    return [r["ok"] for r in theirs] == [r["ok"] for r in rows]

