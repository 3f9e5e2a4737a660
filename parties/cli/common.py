"""What the `smpc` commands share: exit codes, link flags, progress and result printing."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed
EXIT_ERROR = 2  # a usage, setting, file or peer error (nothing ran)
EXIT_LOST = 3  # the run started and stopped: a peer was lost or failed (resume with --resume)


class UsageError(ValueError):
    """Flags that cannot work together."""


def link_flags(p: argparse.ArgumentParser) -> None:
    """Deadlines and limits of every link (all commands that start nodes)."""
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds any single receive may wait for a peer (default 120); a run "
                        "that makes progress is never stopped by it")
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


def link_options(args: argparse.Namespace) -> Any:
    from parties.wire.codec import Limits
    from parties.wire.transport import LinkOptions

    return LinkOptions(connect_timeout=args.connect_timeout, recv_timeout=args.timeout,
                       limits=Limits(max_payload_bytes=args.max_payload_mib << 20),
                       max_pending_payloads=args.max_pending, keepalive_s=args.keepalive,
                       reconnect_window=args.reconnect_window)


def print_progress(step: str, fields: dict[str, Any]) -> None:
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


def json_progress(step: str, fields: dict[str, Any]) -> None:
    print(json.dumps({"event": step, **fields}), flush=True)


def describe(value: Any) -> str:
    """A revealed value in one readable line (numbers to 4 places; a list of more than 12
    items as its length: per-row outputs go to files and --json)."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {describe(v)}" for k, v in value.items())
    if isinstance(value, list) and len(value) > 12:
        return f"{len(value)} values"
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return "[" + ", ".join(describe(float(v)) for v in value) + "]"
    return json.dumps(value, default=str)


def print_learned(party: str, revealed: dict[str, Any]) -> None:
    """One line per output this party learned."""
    for name, value in revealed.items():
        if value is not None:
            print(f"{party} learned {name}: {describe(value)}", flush=True)
