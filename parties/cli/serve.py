"""`smpc serve` and `smpc predict`: a model shared once, scored per query.

    smpc serve --consortium C --as dealer
    smpc serve --consortium C --as hospital-a --policy hospital-a.toml
    smpc predict --consortium C --as clinic-d --input rows.csv --out predictions.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from parties.cli.common import UsageError, link_flags, link_options
from parties.node.launcher import RESULT


def add(sub: Any) -> None:
    se = sub.add_parser("serve", help="keep a model shared and answer queries (the model owner, "
                                      "or the dealer)")
    se.add_argument("--consortium", required=True, help="the consortium file")
    se.add_argument("--as", dest="as_", metavar="NAME", required=True,
                    help="the model owner's name, or 'dealer'")
    se.add_argument("--policy", help="the model owner's policy (names its model file)")
    se.add_argument("--log", help="the query log, one JSON line per query (default: "
                                  "out/<consortium>/<name>/queries.jsonl)")
    se.add_argument("--queries", type=int, help="stop after this many queries (default: serve "
                                                "until interrupted)")
    se.add_argument("--key", help="the dealer's key (default: dealer.key beside the CA)")
    se.add_argument("--cert", help="the dealer's certificate (default: dealer.pem beside the CA)")
    _flags(se)
    se.set_defaults(func=cmd_serve, where=lambda a: a.as_)

    pr = sub.add_parser("predict", help="score this party's rows with a served model")
    pr.add_argument("--consortium", required=True, help="the consortium file")
    pr.add_argument("--as", dest="as_", metavar="NAME", required=True,
                    help="which data owner of the consortium this is")
    pr.add_argument("--input", required=True, help="the rows to score (CSV with the table's "
                                                   "columns)")
    pr.add_argument("--out", default="predictions.csv",
                    help="where the predictions go (default predictions.csv)")
    pr.add_argument("--policy", help="this organization's policy (what it accepts, its key); "
                                     "default: it accepts this consortium's protocol and reveals")
    pr.add_argument("--json", help="also write what this party learned, and timings, here")
    _flags(pr)
    pr.set_defaults(func=cmd_predict, where=lambda a: a.as_)


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help="host:port to listen on (default: every interface, at the "
                                    "port of this node's consortium address)")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext links without certificates (only if every address is on "
                        "loopback)")
    link_flags(p)


def _say(name: str) -> Any:
    def say(line: str) -> None:
        print(f"[{name}] {line}", flush=True)
    return say


def cmd_serve(args: argparse.Namespace) -> int:
    from parties.node import party, runtime, serving

    if args.queries is not None and args.queries < 1:
        raise UsageError("--queries must be at least 1")
    if args.as_ == runtime.DEALER:
        if args.policy:
            raise UsageError("the dealer has no policy (it holds no data); drop --policy")
        prepared = party.prepare_node(args.consortium, runtime.DEALER)
        prepared.tls = party.tls_identity(prepared.consortium, runtime.DEALER,
                                          Path(args.key) if args.key else None,
                                          Path(args.cert) if args.cert else None, args.insecure)
        serve = serving.serve_dealer
    else:
        if not args.policy:
            raise UsageError("the model owner needs --policy (it names the model file under "
                             "[data])")
        if args.key or args.cert:
            raise UsageError("--key and --cert are the dealer's; a party names its own in its "
                             "policy")
        prepared = party.prepare_party(args.consortium, args.as_, args.policy, args.insecure)
        serve = serving.serve_owner
    log = Path(args.log) if args.log else \
        Path("out") / prepared.consortium.name / args.as_ / "queries.jsonl"
    say = _say(args.as_)
    say(f"query log: {log}")
    try:
        served = serve(prepared, args.listen, link_options(args), serving.QueryLog(log), say,
                       args.threads, args.queries)
    except KeyboardInterrupt:
        say("stopped")
        return 0
    say(f"served {served} queries")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from parties.consortium.config import Policy, load_consortium, load_policy
    from parties.consortium.manifest import resolve_protocol
    from parties.node import party, serving

    consortium = load_consortium(args.consortium)
    consortium.address_of(args.as_)  # a party not in the consortium stops here
    protocol = resolve_protocol(consortium)
    if protocol.serving is None:
        raise UsageError(f"protocol {protocol.name} has no serving mode")
    rows = protocol.serving.rows
    if args.policy:
        policy = load_policy(args.policy)
        policy = dataclasses.replace(policy, data={**policy.data, rows: Path(args.input)})
    else:
        policy = Policy(path=Path(args.consortium), party=args.as_,
                        data={rows: Path(args.input)}, accept_protocols=(protocol.name,),
                        accept_reveal=tuple(r.name for r in consortium.reveal))
    prepared = party.prepare_with(args.consortium, args.as_, policy, args.insecure)
    run = serving.predict(prepared, link_options(args), args.threads)
    learned = {k: v for k, v in run.result.items() if v is not None}
    with tempfile.TemporaryDirectory(prefix="smpc-predict-") as tmp:
        files = party.export(prepared, run.result, Path(tmp))
        written = []
        for f in files:
            target = Path(args.out) if Path(f).name == "predictions.csv" else \
                Path(args.out).with_name(Path(f).name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(f, target)
            written.append(str(target))
    outcome = party.Outcome(args.as_, prepared.digest, protocol.name, run.result, run.seconds,
                            run.stats, run.seed.hex(), None, written)
    data = outcome.as_json()
    if args.json:
        party.write_json(args.json, data)
    rounds = run.stats.get("rounds")
    for name, value in learned.items():
        if isinstance(value, dict) and "class" in value:
            print(f"{args.as_} learned {name} for {len(value['class'])} rows", flush=True)
        else:
            print(f"{args.as_} learned {name}: {json.dumps(value)}", flush=True)
    for f in written:
        print(f"{args.as_} wrote {f}")
    print(f"query: {run.seconds * 1000:.0f} ms on shares, {rounds} rounds", file=sys.stderr)
    print(f"{RESULT} {json.dumps(data)}", flush=True)
    return 0
