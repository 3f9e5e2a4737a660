"""Parties in one process: real gRPC meshes on loopback (port 0), one thread per party.

`meshes(names)` connects a mesh per name; `run_threads` runs one callable per
party with a bounded wait; `run_parties(n, fn)` does both, starts CrypTen on
each party (parties/engine/context.start_party, with the dealer in its own
thread or CrypTen's TFP mode) and returns what `fn(communicator)` returned on
each party, in rank order. Every wait is bounded: a stuck party fails the test.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from parties.engine.communicator import GrpcCommunicator
from parties.wire.transport import LinkOptions, Mesh

DEALER = "dealer"


def names(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def run_threads(jobs: dict[str, Callable[[], Any]], timeout: float = 60.0,
                on_error: Callable[[str, BaseException], None] | None = None) -> dict[str, Any]:
    """Run each job in its own thread; return their results; re-raise the first error."""
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def go(name: str) -> None:
        try:
            results[name] = jobs[name]()
        except BaseException as exc:  # reported below
            errors[name] = exc
            if on_error is not None:
                on_error(name, exc)

    threads = {n: threading.Thread(target=go, args=(n,), daemon=True) for n in jobs}
    for t in threads.values():
        t.start()
    for t in threads.values():
        t.join(timeout)
    stuck = [n for n, t in threads.items() if t.is_alive()]
    if errors:
        first = next(n for n in jobs if n in errors)
        raise errors[first]
    if stuck:
        raise TimeoutError(f"{stuck} still running after {timeout} s")
    return results


def meshes(order: list[str], recv_timeout: float = 20.0) -> dict[str, Mesh]:
    """A connected mesh per name, each bound to a free loopback port."""
    options = LinkOptions(connect_timeout=10.0, recv_timeout=recv_timeout, close_timeout=5.0)
    out = {n: Mesh(n, [p for p in order if p != n], order, "engine-test", options)
           for n in order}
    book = {n: f"127.0.0.1:{m.bind('127.0.0.1:0')}" for n, m in out.items()}
    run_threads({n: (lambda m=m: m.connect(book)) for n, m in out.items()}, timeout=30)
    return out


def close(all_meshes: dict[str, Mesh]) -> None:
    """Close every mesh at once (each waits, bounded, for its peers' goodbyes)."""
    run_threads({n: m.close for n, m in all_meshes.items()}, timeout=30)


def run_parties(n: int, fn: Callable[[GrpcCommunicator], Any], dealer: bool = True,
                refuse_openings: bool = True, timeout: float = 90.0) -> list[Any]:
    """Start n parties (and the dealer) in threads, run `fn` on each, stop them; rank order."""
    from parties.dealer import server
    from parties.dealer.provider import make_provider
    from parties.engine import context

    parties = names(n)
    order = [*parties, DEALER] if dealer else parties
    mesh = meshes(order)

    def party(name: str) -> Any:
        comm = GrpcCommunicator(mesh[name], parties)
        provider = make_provider(mesh[name], comm.get_rank(), DEALER) if dealer else None
        kind = context.PROVIDER_DEALER if dealer else context.PROVIDER_INSECURE_TFP
        context.start_party(comm, provider, kind, refuse_openings=refuse_openings)
        try:
            return fn(comm)
        finally:
            context.stop_party()

    def abort_all(name: str, exc: BaseException) -> None:
        for m in mesh.values():
            try:
                m.abort(f"{name} failed: {exc}")
            except Exception:  # already torn down
                pass

    def serve_then_close() -> None:
        server.serve(mesh[DEALER], parties, Counter(), idle_timeout=timeout)
        mesh[DEALER].close()

    dealer_thread = threading.Thread(target=serve_then_close, daemon=True)
    if dealer:
        dealer_thread.start()
    try:
        results = run_threads({p: (lambda p=p: party(p)) for p in parties}, timeout, abort_all)
    except BaseException as exc:
        abort_all("the test", exc)
        raise
    close({p: mesh[p] for p in parties})
    if dealer:
        dealer_thread.join(timeout)
    return [results[p] for p in parties]
