"""The `smpc` command line: one module per group of commands, one place for errors.

    smpc selftest --parties 3                 check the install (3 parties + dealer locally)
    smpc local CONSORTIUM.toml                every party of a consortium + dealer locally
    smpc local --parties 3 PROTOCOL           a protocol that takes no data, N local parties
    smpc party --consortium C --as NAME --policy P    one organization's party
    smpc dealer --consortium C                the dealer
    smpc serve --consortium C --as OWNER --policy P   keep a model shared, answer queries
    smpc predict --consortium C --as NAME --input rows.csv --out predictions.csv
    smpc check --consortium C --as NAME --policy P    settings and data checked, no connection
    smpc manifest C | smpc protocols | smpc certs C
    smpc tradeoff C [--quick] [--json F] [--plot F.png]   accuracy against privacy (local)

Errors a user can cause (a bad file, flag, address, a peer that is missing,
refuses or dies) print one line naming the file, setting or peer and exit
non-zero; --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from parties.cli import common, local, offline, party, serve, tradeoff
from parties.engine import heap


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="smpc", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train and evaluate models on several organizations' combined data with "
                    "secure multi-party computation (CrypTen over gRPC).",
        epilog="examples:\n"
               "  smpc selftest --parties 3\n"
               "  smpc local examples/hospitals/consortium.toml --json out.json\n"
               "  smpc certs consortium.toml\n"
               "  smpc check --consortium consortium.toml --as hospital-a --policy mine.toml\n"
               "  smpc party --consortium consortium.toml --as hospital-a --policy mine.toml\n"
               "  smpc dealer --consortium consortium.toml")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True,
                            metavar="{selftest,local,party,dealer,serve,predict,check,manifest,"
                                    "protocols,certs,tradeoff}")
    local.add(sub)
    party.add(sub)
    serve.add(sub)
    offline.add(sub)
    tradeoff.add(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `smpc` console script."""
    args = parser().parse_args(argv)
    heap.keep_freed_memory()  # large buffers are reused instead of faulted in again
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    from parties.consortium.config import ConfigError
    from parties.consortium.data import DataError
    from parties.consortium.manifest import ManifestError
    from parties.node.checkpoint import CheckpointError
    from parties.node.runtime import RunInterrupted, RunTimeLimit
    from parties.wire.transport import PeerError, SettingError
    from protocols.api import ParameterError, ProtocolError, RevealError
    from protocols.registry import RegistryError

    me = f"smpc {args.command} [{args.where(args)}]"
    try:
        return int(args.func(args))
    except (RunInterrupted, RunTimeLimit) as exc:
        print(f"{me}: stopped: {exc}", file=sys.stderr, flush=True)
        return common.EXIT_LOST
    except (ProtocolError, RevealError, CheckpointError) as exc:
        print(f"{me}: stopped: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if args.debug:
            traceback.print_exc()
        return common.EXIT_LOST
    except (PeerError, SettingError, ValueError, TimeoutError, ManifestError, ConfigError,
            DataError, ParameterError, RegistryError, common.UsageError, OSError) as exc:
        print(f"{me}: error: {exc}", file=sys.stderr, flush=True)
        if args.debug:
            traceback.print_exc()
        return common.EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{me}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"{me}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if args.debug or os.environ.get("SMPC_DEBUG"):
            traceback.print_exc()
        return common.EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
