"""The `smpc` command line.

    smpc selftest --parties 3          start 3 parties + a dealer locally, check secure ops
    smpc local --parties 3 --run M:F   start 3 parties + a dealer locally running protocol M:F
    smpc dealer --parties a=H:P,...    run the dealer of a session
    smpc party --name a --parties ...  run one party of a session
    smpc node ...                      what the local launcher starts (same as party/dealer)

Errors a user can cause (bad address, port in use, a peer that is missing,
rejects us or dies) print one line naming the peer or setting and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from typing import Any

from parties.engine import heap

EXIT_FAILED = 1  # a check failed
EXIT_ERROR = 2  # a usage, setting or peer error (nothing ran)
EXIT_LOST = 3  # the run started and stopped: a peer was lost or failed (resume with --resume)


def _protocol(name: str) -> Any:
    """A protocol's run function: a known name, or module:function for your own."""
    if name == "selftest":
        from protocols.diagnostics import selftest

        return selftest.run
    module, colon, func = name.partition(":")
    if not colon:
        raise ValueError(f"unknown protocol {name!r} (known: selftest, or module:function)")
    import importlib

    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load protocol {name!r}: {exc}") from None


def _parse_peers(text: str) -> tuple[list[str], dict[str, str]]:
    """'a=host:port,b=host:port' or 'a,b' -> names in order, addresses."""
    names, addresses = [], {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, eq, address = item.partition("=")
        names.append(name)
        if eq:
            addresses[name] = address
    return names, addresses


def _options(args: argparse.Namespace) -> Any:
    from parties.wire.codec import Limits
    from parties.wire.transport import LinkOptions

    return LinkOptions(connect_timeout=args.connect_timeout, recv_timeout=args.timeout,
                       limits=Limits(max_payload_bytes=args.max_payload_mib << 20),
                       max_pending_payloads=args.max_pending, keepalive_s=args.keepalive,
                       reconnect_window=args.reconnect_window)


def _spec(args: argparse.Namespace, name: str) -> Any:
    from parties.node.runtime import DEALER, NodeSpec

    parties, addresses = _parse_peers(args.parties)
    if getattr(args, "dealer", None):
        addresses[DEALER] = args.dealer
    listen = args.listen or addresses.get(name)
    if not listen:
        raise ValueError(f"no --listen address for '{name}'")
    tls = _tls_from_dir(args.tls_dir, name)
    if tls is None:
        hosts = [a.rpartition(":")[0] for a in [listen, *addresses.values()]]
        if not args.insecure:
            raise ValueError("plaintext links need --insecure (loopback only); for TLS give "
                             "--tls-dir or use --consortium")
        from parties.consortium.config import is_loopback

        if not all(is_loopback(h) for h in hosts):
            raise ValueError("--insecure is allowed only when every address is on loopback")
        print(f"WARNING: [{name}] --insecure: links are plaintext and unauthenticated "
              "(loopback only)", file=sys.stderr, flush=True)
    return NodeSpec(
        name=name, parties=parties, session_id=args.session, listen=listen,
        addresses=addresses, provider=args.provider, options=_options(args),
        torch_threads=args.threads, tls=tls,
        public_seed=int.from_bytes(args.session.encode()[:8].ljust(8, b"\0"), "little") % 2**31,
    )


def _tls_from_dir(folder: str | None, name: str) -> Any:
    """TlsIdentity from a folder written by `smpc certs` (None: plaintext)."""
    if not folder:
        return None
    from pathlib import Path

    from parties.wire.transport import TlsIdentity

    base = Path(folder)
    files = [base / "ca.pem", base / f"{name}.key", base / f"{name}.pem"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"--tls-dir: {missing[0]} not found")
    return TlsIdentity(*(f.read_bytes() for f in files))


def _print_progress(step: str, fields: dict[str, Any]) -> None:
    """A progress bar on a terminal for epoch-like steps; one line per step otherwise."""
    done, total = fields.get("epoch"), fields.get("of")
    if sys.stdout.isatty() and isinstance(done, int) and isinstance(total, int) and total:
        width = 30
        filled = width * done // total
        end = "\n" if done >= total else ""
        print(f"\r{step} {done}/{total} [{'#' * filled}{'.' * (width - filled)}]", end=end,
              flush=True)
        return
    extra = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in fields.items())
    print(f"{step}: {extra}", flush=True)


def cmd_node(args: argparse.Namespace) -> int:
    """Run one node (party or dealer); print its result as one JSON line."""
    from parties.node import runtime
    from parties.node.launcher import RESULT

    if getattr(args, "consortium", None):
        return _consortium_node(args)
    for flag in ("name", "parties", "session"):
        if not getattr(args, flag, None):
            raise ValueError(f"--{flag} is needed (or give --consortium)")
    name = args.name
    spec = _spec(args, name)
    mesh = runtime.open_mesh(spec, control_in=sys.stdin if args.control == "stdin" else None)
    if name == runtime.DEALER:
        served = runtime.run_dealer(spec, mesh)
        print(f"dealer served {sum(served.values())} requests "
              f"({', '.join(f'{k}: {v}' for k, v in sorted(served.items())) or 'none'})",
              flush=True)
        print(f"{RESULT} {json.dumps({'served': served})}", flush=True)
        return 0
    protocol = _protocol(args.run)
    report, elapsed, stats = runtime.run_party(spec, mesh, protocol,
                                               on_progress=None if args.quiet else _print_progress)
    result = {"rows": report.rows, "ok": report.ok, "seconds": elapsed, "stats": stats}
    print(f"{RESULT} {json.dumps(result)}", flush=True)
    return 0 if report.ok else EXIT_FAILED


def _consortium_node(args: argparse.Namespace) -> int:
    from parties.node import collaboration
    from parties.node.launcher import RESULT

    options = _options(args)
    control = args.control == "stdin"
    if args.command == "dealer":
        served = collaboration.run_dealer(args.consortium, args.listen, options, control,
                                          args.threads, args.key, args.cert, args.insecure)
        print(f"dealer served {sum(served.values())} requests", flush=True)
        print(f"{RESULT} {json.dumps({'served': served})}", flush=True)
        return 0
    if not args.as_ or not args.policy:
        raise ValueError("smpc party --consortium needs --as NAME and --policy POLICY.toml")
    progress = _json_progress if args.log_json else (None if args.quiet else _print_progress)
    outcome = collaboration.run_party(args.consortium, args.as_, args.policy, args.listen,
                                      options, control, progress, args.threads,
                                      args.checkpoint_dir, args.resume, args.out,
                                      args.insecure)
    data = outcome.as_json()
    if args.json:
        collaboration.write_json(args.json, data)
    if not control:
        _print_revealed(outcome.party, outcome.revealed)
    print(f"{RESULT} {json.dumps(data)}", flush=True)
    return 0


def _json_progress(step: str, fields: dict[str, Any]) -> None:
    print(json.dumps({"event": step, **fields}), flush=True)


def _print_revealed(party: str, revealed: dict[str, Any]) -> None:
    metrics = revealed.get("metrics") or {}
    if metrics:
        print(f"{party} learned: " + ", ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    if revealed.get("weights") is not None:
        print(f"{party} learned the weights ({len(revealed['weights'])} values)")


def cmd_certs(args: argparse.Namespace) -> int:
    """Development CA + one key/certificate per party and the dealer (keys mode 0600)."""
    from pathlib import Path

    from parties.consortium import certs
    from parties.consortium.config import load_consortium

    c = load_consortium(args.consortium)
    out = Path(args.out) if args.out else (c.ca_path.parent if c.ca_path else None)
    if out is None:
        raise ValueError(f"{c.path}: no [consortium] ca to place the certificates; use --out")
    written = certs.generate(c.name, [*c.party_names, "dealer"], out, args.days, args.per_node)
    print(f"wrote {len(written)} files to {out}: ca.pem, and <name>.pem + <name>.key for "
          f"{', '.join([*c.party_names, 'dealer'])} (keys are mode 0600; do not commit them)")
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    """Print what a consortium file will compute and reveal to whom, and its digest."""
    import protocols
    from parties.consortium import manifest
    from parties.consortium.config import load_consortium

    c = load_consortium(args.consortium)
    module = protocols.load(c.protocol)
    params = module.parameters(c.parameters)
    m = manifest.build(c, module)
    print(f"consortium {c.name}: {len(c.parties)} parties + dealer at {c.dealer}")
    for party in c.parties:
        print(f"  party {party.name} at {party.address}")
    print(f"protocol {c.protocol} v{c.protocol_version} (code sha256 "
          f"{m['protocol']['code_sha256'][:16]}...)")
    print("  parameters: " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())))
    print(f"schema: {len(c.schema.features)} features, label {c.schema.label!r}")
    print("revealed:")
    for r in c.reveal:
        print(f"  {r.name} -> {', '.join(r.to)}")
    print(f"manifest digest {manifest.digest(m)}")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    """Start N parties and a dealer locally, run the secure ops, print one line per op."""
    from parties.node.launcher import launch, party_names

    if not 2 <= args.parties <= 8:
        raise ValueError(f"--parties {args.parties}: smpc runs 2 to 8 parties")
    parties = party_names(args.parties)
    extra = ["--quiet", "--timeout", str(args.timeout)]
    if args.provider != "dealer":
        print(f"WARNING: provider '{args.provider}' lets {parties[0]} know every party's "
              "randomness; it is for tests only.", file=sys.stderr)
    print(f"smpc selftest: {args.parties} parties + "
          f"{'dealer' if args.provider == 'dealer' else 'no dealer'} on loopback over gRPC",
          flush=True)
    run = launch(parties, "selftest", provider=args.provider, timeout=args.timeout + 60,
                 extra=extra, echo=sys.stderr if args.verbose else None)
    first = run.nodes[parties[0]].result
    if first is None or not run.ok:
        for name, node in run.nodes.items():
            rc = run.returncodes[name]
            if rc != 0:
                last = next((ln for ln in reversed(node.lines) if ln.strip()), "no output")
                print(f"  {name}: exit {rc}: {last}", file=sys.stderr)
        if run.timed_out:
            print("smpc selftest: timed out", file=sys.stderr)
        if first is None:
            return EXIT_ERROR
    width = max(len(r["op"]) for r in first["rows"])
    for r in first["rows"]:
        mark = "ok  " if r["ok"] else "FAIL"
        print(f"  {mark} {r['op']:<{width}}  max error {r['max_error']:.2e}  "
              f"tolerance {r['tolerance']:.0e}  {r['seconds'] * 1000:8.1f} ms")
    served = (run.nodes.get("dealer").result or {}).get("served", {}) if "dealer" in run.nodes \
        else {}
    stats = first["stats"]
    print(f"  {parties[0]}: {stats['rounds']} rounds, {stats['bytes_sent']} bytes sent, "
          f"{stats['bytes_received']} received; dealer served {sum(served.values())} requests")
    agree = all(run.nodes[p].result and run.nodes[p].result["ok"] == first["ok"] for p in parties)
    ok = first["ok"] and run.ok and agree
    print("smpc selftest: " + ("all operations within tolerance" if ok else "FAILED"))
    return 0 if ok else EXIT_FAILED


def cmd_local(args: argparse.Namespace) -> int:
    """Start N parties (and the dealer) locally running any protocol; print each result."""
    from parties.node.launcher import launch, party_names

    if args.consortium:
        return _local_consortium(args)
    if not 2 <= args.parties <= 8:
        raise ValueError(f"--parties {args.parties}: smpc runs 2 to 8 parties")
    _protocol(args.run)  # fail here, once, on an unknown protocol
    parties = party_names(args.parties)
    run = launch(parties, args.run, provider=args.provider, timeout=args.timeout + 60,
                 extra=["--timeout", str(args.timeout)], echo=sys.stdout)
    for name, node in run.nodes.items():
        rc = run.returncodes[name]
        status = "ok" if rc == 0 else f"exit {rc}"
        summary = json.dumps(node.result)[:200] if node.result is not None else "no result"
        print(f"{name}: {status}: {summary}")
    if run.timed_out:
        print("smpc local: timed out", file=sys.stderr)
    return 0 if run.ok else EXIT_FAILED


def _local_consortium(args: argparse.Namespace) -> int:
    from parties.node import collaboration

    out = collaboration.run_local(args.consortium, args.timeout,
                                  echo=sys.stderr if args.verbose else None,
                                  insecure=args.insecure)
    run, base = out["run"], out["baseline"]
    results = {n: node.result for n, node in run.nodes.items()}
    if not run.ok:
        for name, node in run.nodes.items():
            if run.returncodes[name] != 0:
                last = next((ln for ln in reversed(node.lines) if ln.strip()), "no output")
                print(f"  {name}: exit {run.returncodes[name]}: {last}", file=sys.stderr)
        return EXIT_FAILED
    parties = list(base["alone"])
    metrics = next(r["revealed"]["metrics"] for r in results.values()
                   if r and r.get("revealed", {}).get("metrics"))
    print(f"{'':24} {'accuracy':>9} {'AUC':>7} {'F1':>7}")
    rows = [("MPC (smpc)", metrics), ("pooled plaintext", base["pooled"])]
    rows += [(f"{p} alone", base["alone"][p]) for p in parties]
    for label, m in rows:
        print(f"{label:24} {m['accuracy']:9.4f} {m['auc']:7.4f} {m['f1']:7.4f}")
    timing = results[parties[0]]["timings"]
    print(f"training + evaluation: {timing['protocol_seconds']:.1f} s per party, of which "
          f"{timing['communication_seconds']:.1f} s waiting on the network "
          f"({timing['rounds']} rounds)")
    if args.json:
        collaboration.write_json(args.json, {
            "revealed": metrics and results[parties[0]]["revealed"],
            "revealed_by_party": {p: results[p]["revealed"] for p in parties},
            "baseline": base, "timings": {p: results[p]["timings"] for p in parties},
            "wall_seconds": out["wall_seconds"],
        })
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds any receive may wait for a peer (default 120)")
    p.add_argument("--connect-timeout", type=float, default=30.0,
                   help="seconds to wait for every peer to connect (default 30)")
    p.add_argument("--reconnect-window", type=float, default=20.0,
                   help="seconds a dropped link may take to come back before the peer counts "
                        "as lost (default 20; 0: a drop is fatal)")
    p.add_argument("--keepalive", type=float, default=10.0,
                   help="seconds between keepalive pings; a link silent for twice this is "
                        "treated as dropped (default 10)")
    p.add_argument("--max-payload-mib", type=int, default=8192,
                   help="largest tensor a peer may send, MiB (default 8192)")
    p.add_argument("--max-pending", type=int, default=100_000,
                   help="payloads a peer may have waiting unread (default 100000)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (default: torch's choice)")
    p.add_argument("--provider", default="dealer",
                   choices=["dealer", "insecure-trusted-first-party"],
                   help="where correlated randomness comes from; the second is for tests only")


def _node_args(p: argparse.ArgumentParser, with_name: bool) -> None:
    p.add_argument("--consortium", help="the consortium file (replaces the flags below)")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext links without certificates (only if every address is "
                        "on loopback)")
    if not with_name:
        p.add_argument("--key", help="with --consortium: the dealer's key (default: dealer.key "
                                     "beside the CA)")
        p.add_argument("--cert", help="with --consortium: the dealer's certificate")
    if with_name:
        p.add_argument("--as", dest="as_", metavar="NAME",
                       help="with --consortium: which party this is")
        p.add_argument("--policy", help="with --consortium: this organization's policy file")
        p.add_argument("--json", help="with --consortium: write what was revealed here")
        p.add_argument("--log-json", action="store_true", help="progress as JSON lines")
        p.add_argument("--checkpoint-dir",
                       help="with --consortium: where this party keeps its shares after each "
                            "epoch (default: checkpoints/<consortium>/<party>)")
        p.add_argument("--resume", action="store_true",
                       help="with --consortium: continue from the newest common checkpoint")
        p.add_argument("--out", help="with --consortium: where a weights recipient saves the "
                                     "model (default: out/<consortium>/<party>)")
        p.add_argument("--name", help="this party's name")
    p.add_argument("--parties",
                   help="all parties in rank order: name=host:port,... (or names under the "
                        "local launcher)")
    p.add_argument("--dealer", help="the dealer's host:port")
    p.add_argument("--session", help="session id, the same on every node")
    p.add_argument("--tls-dir", help="without --consortium: mutual TLS with ca.pem and "
                                     "<name>.key/<name>.pem from this folder (smpc certs)")
    p.add_argument("--listen", help="host:port to listen on (default: this node's address)")
    p.add_argument("--control", choices=["none", "stdin"], default="none",
                   help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _common(p)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="smpc", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train and evaluate models on several organizations' combined data with "
                    "secure multi-party computation (CrypTen over gRPC).",
        epilog="examples:\n"
               "  smpc selftest --parties 3\n"
               "  smpc local examples/hospitals/consortium.toml --json out.json\n"
               "  smpc certs consortium.toml\n"
               "  smpc party --consortium consortium.toml --as hospital-a --policy mine.toml\n"
               "  smpc dealer --consortium consortium.toml")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True,
                            metavar="{selftest,local,party,dealer,certs,manifest}")

    st = sub.add_parser("selftest", help="check the install: secure ops vs plaintext")
    st.add_argument("--parties", type=int, default=3, help="number of parties, 2 to 8")
    st.add_argument("--verbose", action="store_true", help="show every node's output")
    _common(st)
    st.set_defaults(func=cmd_selftest)

    lo = sub.add_parser("local", help="run a consortium's parties + dealer locally")
    lo.add_argument("consortium", nargs="?", help="consortium file (policies/<party>.toml "
                    "beside it give each party's data)")
    lo.add_argument("--json", help="write revealed outputs, baselines and timings here")
    lo.add_argument("--verbose", action="store_true", help="show every node's output")
    lo.add_argument("--insecure", action="store_true",
                    help="plaintext links without certificates (loopback only)")
    lo.add_argument("--parties", type=int, default=3,
                    help="without a consortium: number of parties, 2 to 8")
    lo.add_argument("--run", default="selftest",
                    help="without a consortium: selftest or module:function")
    _common(lo)
    lo.set_defaults(func=cmd_local)

    dl = sub.add_parser("dealer", help="run the dealer of a session")
    _node_args(dl, with_name=False)
    dl.set_defaults(func=cmd_node, name="dealer", run="selftest", as_=None)

    pa = sub.add_parser("party", help="run one party of a session")
    _node_args(pa, with_name=True)
    pa.add_argument("--run", default="selftest", help="protocol to run (default selftest)")
    pa.set_defaults(func=cmd_node)

    ce = sub.add_parser("certs", help="create a development CA and node certificates")
    ce.add_argument("consortium")
    ce.add_argument("--out", help="folder (default: where the consortium's ca points)")
    ce.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    ce.add_argument("--per-node", action="store_true",
                    help="one folder per node with ca.pem and only that node's key")
    ce.set_defaults(func=cmd_certs)

    mf = sub.add_parser("manifest", help="print what a consortium computes and reveals")
    mf.add_argument("consortium")
    mf.set_defaults(func=cmd_manifest)

    nd = sub.add_parser("node")  # what the local launcher starts; not listed
    _node_args(nd, with_name=True)
    nd.add_argument("--run", default="selftest")
    nd.set_defaults(func=cmd_node)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `smpc` console script."""
    args = parser().parse_args(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # our errors say what gRPC's log lines would
    heap.keep_freed_memory()  # large buffers are reused instead of faulted in again
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    from parties.consortium.manifest import ManifestError
    from parties.node.runtime import RunInterrupted
    from parties.wire.transport import PeerError, SettingError
    from protocols.session import RevealError

    where = getattr(args, "as_", None) or getattr(args, "name", None) or args.command
    try:
        return int(args.func(args))
    except RunInterrupted as exc:
        print(f"smpc {args.command} [{where}]: stopped: {exc}", file=sys.stderr, flush=True)
        return EXIT_LOST
    except (PeerError, SettingError, ValueError, TimeoutError, ManifestError,
            RevealError) as exc:
        print(f"smpc {args.command} [{where}]: error: {exc}", file=sys.stderr, flush=True)
        if args.debug:
            traceback.print_exc()
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"smpc {args.command} [{where}]: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"smpc {args.command} [{where}]: internal error: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        if args.debug or os.environ.get("SMPC_DEBUG"):
            traceback.print_exc()
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
