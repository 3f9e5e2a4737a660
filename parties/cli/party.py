"""`smpc party` and `smpc dealer`: one organization's node of a consortium run.

    smpc party --consortium consortium.toml --as hospital-a --policy my-policy.toml
    smpc dealer --consortium consortium.toml
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from parties.cli.common import (
    json_progress,
    link_flags,
    link_options,
    print_learned,
    print_progress,
)
from parties.node.launcher import RESULT


def add(sub: Any) -> None:
    pa = sub.add_parser("party", help="run one party of a consortium")
    pa.add_argument("--consortium", required=True, help="the consortium file")
    pa.add_argument("--as", dest="as_", metavar="NAME", required=True,
                    help="which party of the consortium this is")
    pa.add_argument("--policy", required=True, help="this organization's policy file")
    pa.add_argument("--json", help="write what this party learned, and timings, here")
    pa.add_argument("--log-json", action="store_true", help="progress as JSON lines")
    pa.add_argument("--quiet", action="store_true", help="no progress lines")
    pa.add_argument("--checkpoint-dir",
                    help="where this party keeps its shares after each step (default: "
                         "checkpoints/<consortium>/<party>)")
    pa.add_argument("--resume", action="store_true",
                    help="continue from the newest checkpoint every party has")
    pa.add_argument("--out", help="where exported outputs go (default: out/<consortium>/<party>)")
    pa.add_argument("--max-run-time", type=float,
                    help="stop (exit 3, checkpoints kept) after this many seconds (default: "
                         "no limit)")
    _node_flags(pa)
    pa.set_defaults(func=cmd_party, where=lambda a: a.as_)

    dl = sub.add_parser("dealer", help="run the dealer of a consortium")
    dl.add_argument("--consortium", required=True, help="the consortium file")
    dl.add_argument("--key", help="the dealer's key (default: dealer.key beside the CA)")
    dl.add_argument("--cert", help="the dealer's certificate (default: dealer.pem beside the CA)")
    dl.add_argument("--max-run-time", type=float, help=argparse.SUPPRESS)
    _node_flags(dl)
    dl.set_defaults(func=cmd_dealer, where=lambda a: "dealer")


def _node_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help="host:port to listen on (default: every interface, at the "
                                    "port of this node's consortium address)")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext links without certificates (only if every address is on "
                        "loopback)")
    p.add_argument("--control", choices=["none", "stdin"], default="none",
                   help=argparse.SUPPRESS)  # the local launcher's rendezvous
    link_flags(p)


def _limit_run_time(seconds: float | None) -> None:
    """Raise RunTimeLimit in the main thread after `seconds` (the run then aborts cleanly)."""
    if seconds is None:
        return
    from parties.node.runtime import RunTimeLimit

    def expire(signum: int, frame: Any) -> None:
        raise RunTimeLimit(f"the run reached --max-run-time {seconds:g} s")

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def cmd_party(args: argparse.Namespace) -> int:
    from parties.node import party

    prepared = party.prepare_party(args.consortium, args.as_, args.policy, args.insecure)
    me = f"smpc party [{args.as_}]"
    if prepared.consortium.randomness != "dealer":
        print(f"WARNING: {me}: randomness = \"{prepared.consortium.randomness}\": the first "
              "party knows every party's masks; for tests and benchmarks only", file=sys.stderr,
              flush=True)
    if prepared.data_error is not None:  # said at once; the peers are then told only that
        print(f"{me}: error: {prepared.data_error}", file=sys.stderr, flush=True)
    for table in prepared.loaded.values():
        if table is not None and table.ignored_columns:
            print(f"{me}: {table.path}: ignoring columns not in the schema: "
                  f"{', '.join(table.ignored_columns)}", flush=True)
    progress = json_progress if args.log_json else (None if args.quiet else print_progress)
    control = args.control == "stdin"
    _limit_run_time(args.max_run_time)
    outcome = party.run_party(prepared, args.listen, link_options(args), control, progress,
                              args.threads, args.checkpoint_dir, args.resume, args.out)
    data = outcome.as_json()
    if args.json:
        party.write_json(args.json, data)
    if not control:
        print_learned(outcome.party, data["revealed"])
        for f in outcome.files:
            print(f"{outcome.party} wrote {f}")
    print(f"{RESULT} {json.dumps(data)}", flush=True)
    passed = prepared.protocol.passed
    return 0 if passed is None or passed(outcome.result) else 1


def cmd_dealer(args: argparse.Namespace) -> int:
    from parties.node import party

    served = party.run_dealer(args.consortium, args.listen, link_options(args),
                              args.control == "stdin", args.threads, args.key, args.cert,
                              args.insecure)
    print(f"dealer served {sum(served.values())} requests", flush=True)
    print(f"{RESULT} {json.dumps({'served': served})}", flush=True)
    return 0

