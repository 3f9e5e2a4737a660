"""`smpc tradeoff`: accuracy against privacy for every technique, on a consortium's data.

    smpc tradeoff examples/hospitals/consortium.toml --json t.json --plot t.png
    smpc tradeoff CONSORTIUM --quick                  (a small grid, plaintext twins)
    smpc tradeoff CONSORTIUM --epsilons 0.5,2 --k 5,20 --quasi-identifiers age,zip

A planning command: it reads every party's data on this machine, as `smpc local`
does (parties/node/tradeoff.py). Every bad input (a grid value, a column, a k, an
output folder) is a one-line error before anything runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from parties.cli.common import UsageError


def add(sub: Any) -> None:
    tr = sub.add_parser("tradeoff", help="accuracy against privacy: alone, pooled, MPC, DP, "
                                         "FedAvg, k-anonymity, synthetic data")
    tr.add_argument("consortium", help="the consortium file (each party's data from its policy)")
    tr.add_argument("--quick", action="store_true",
                    help="a small grid (epsilon 1 and 8, k 5 and 50) and plaintext twins for "
                         "the MPC-based rows: a minute or two")
    tr.add_argument("--twins", action="store_true",
                    help="plaintext twins (same noise calibration) instead of real MPC runs")
    tr.add_argument("--epsilons", metavar="E1,E2,...",
                    help="the epsilon grid of the DP rows (default 0.5,1,2,4,8)")
    tr.add_argument("--k", metavar="K1,K2,...", dest="ks",
                    help="the k grid of k-anonymized pooling (default 2,5,10,25,50)")
    tr.add_argument("--quasi-identifiers", metavar="COL1,COL2,...",
                    help="the features an attacker may know (default: every feature)")
    tr.add_argument("--policy", action="append", default=[], metavar="PARTY=PATH",
                    help="this party's policy (default policies/<party>.toml)")
    tr.add_argument("--json", help="write the report here")
    tr.add_argument("--plot", help="write the figure here (a .png file)")
    tr.add_argument("--timeout", type=float, default=300.0,
                    help="seconds a real run's node may wait on a peer (default 300)")
    tr.set_defaults(func=cmd_tradeoff, where=lambda a: a.consortium)


def _grid(text: str | None, flag: str, kind: type, default: tuple[Any, ...]) -> tuple[Any, ...]:
    if text is None:
        return default
    out = []
    for item in text.split(","):
        try:
            value = kind(item.strip())
        except ValueError:
            raise UsageError(f"{flag} {text!r}: {item.strip()!r} is not "
                             f"{'an integer' if kind is int else 'a number'}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise UsageError(f"{flag} {text!r}: every value must be positive, got {item.strip()}")
        out.append(value)
    return tuple(out)


def _output(path: str | None, flag: str, suffix: str | None = None) -> None:
    """An output file must be writable where it is asked for: its folder must exist."""
    if path is None:
        return
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: folder {folder} does not exist")
    if suffix is not None and Path(path).suffix.lower() != suffix:
        raise UsageError(f"{flag} {path}: the figure is written as PNG: name a {suffix} file")


def cmd_tradeoff(args: argparse.Namespace) -> int:
    from parties.node import tradeoff

    quick = args.quick
    epsilons = _grid(args.epsilons, "--epsilons", float,
                     tradeoff.QUICK_EPSILONS if quick else tradeoff.EPSILONS)
    ks = _grid(args.ks, "--k", int, tradeoff.QUICK_KS if quick else tradeoff.KS)
    _output(args.json, "--json")
    _output(args.plot, "--plot", ".png")
    qis = None if args.quasi_identifiers is None else tuple(
        c.strip() for c in args.quasi_identifiers.split(",") if c.strip())
    policies = {}
    for item in args.policy:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise UsageError(f"--policy {item!r}: write PARTY=PATH")
        policies[name] = path
    settings = tradeoff.Settings(epsilons=epsilons, ks=ks, real=not (quick or args.twins),
                                 quick=quick, quasi_identifiers=qis, timeout=args.timeout)
    try:
        study = tradeoff.prepare(args.consortium, settings, policies)
    except tradeoff.TradeoffError as exc:
        raise UsageError(str(exc)) from None
    print(f"smpc tradeoff: a planning run: every party's data is read on this machine (like "
          f"smpc local); {len(study.train)} parties, {int(study.members[0].shape[0])} training "
          f"and {int(study.non_members[0].shape[0])} test rows; MPC-based rows: "
          f"{'real runs' if settings.real else 'plaintext twins'}", flush=True)
    tic = time.perf_counter()
    report = tradeoff.run(study, settings, _progress)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"report written to {args.json}")
    if args.plot:
        from parties.node import tradeoff_plot

        tradeoff_plot.plot(report, args.plot)
        print(f"figure written to {args.plot}")
    print(f"smpc tradeoff: {len(report['rows'])} rows in {time.perf_counter() - tic:.1f} s")
    return 0


def _progress(done: int, total: int, what: str) -> None:
    """A progress bar over the runs on a terminal (stderr); one line per run otherwise."""
    width = 30
    filled = width * done // max(total, 1)
    bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what}"
    if sys.stderr.isatty():
        end = "\n" if done >= total else ""
        print(f"\r{bar:<100}", end=end, file=sys.stderr, flush=True)
    else:
        print(bar, file=sys.stderr, flush=True)


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(report: dict[str, Any]) -> None:
    """The report as a table: one row per technique and setting."""
    head = (f"{'technique':<44} {'eps/k':>6} {'acc':>6} {'AUC':>6} {'F1':>6} {'MIA adv':>8} "
            f"{'s':>7} {'MiB':>7}  how")
    print(head)
    print("-" * len(head))
    for r in report["rows"]:
        knob = f"{r['epsilon']:.2f}" if r["epsilon"] is not None else (
            str(r["k"]) if r["k"] is not None else "-")
        mib = None if r["bytes"] is None else r["bytes"] / 2**20
        how = r["how"].split(":")[0].split(" (")[0]
        print(f"{r['label']:<44} {knob:>6} {_cell(r['accuracy'], '.3f'):>6} "
              f"{_cell(r['auc'], '.3f'):>6} {_cell(r['f1'], '.3f'):>6} "
              f"{_cell(r['advantage'], '+.3f'):>8} {_cell(r['seconds'], '.1f'):>7} "
              f"{_cell(mib, '.2f'):>7}  {how}")
    print(f"delta {report['settings']['delta']:g} for every DP row; MIA adv: Yeom et al.'s "
          f"loss-threshold attack, {report['members']} members vs {report['non_members']} "
          "non-members; s: seconds per party (a real run: its protocol time); MiB: bytes sent "
          "by all parties (a real run), or the pooled extract as CSV")
    hows = sorted({r["how"] for r in report["rows"]})
    print("how: " + "; ".join(hows))
