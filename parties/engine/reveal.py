"""Openings of secrets: refused outside session.reveal, done in one round by open_to.

* :func:`guard` wraps one of CrypTen's opening methods (get_plain_text, reveal,
  reveal_batch) so that it raises `RevealError` naming the caller's file:line,
  unless the call runs inside :func:`allow_openings` (CrypTen's own protocol
  steps that open masked values) or the party's guard is off.
  parties/engine/context.py installs it.
* :func:`open_to` opens several values, each to its own recipients, in one
  round: what `session.reveal` uses.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from parties.engine.compat import load_crypten
from protocols.api import RevealError

__all__ = ["RevealError", "allow_openings", "guard", "open_to", "openings_allowed"]

_crypten = load_crypten()
_openings = threading.local()  # .depth: allow_openings blocks entered by this thread

_INTERNAL = (*(os.path.dirname(m.__file__ or "") + os.sep for m in (_crypten, torch)),
             os.path.dirname(os.path.abspath(__file__)) + os.sep, contextlib.__file__)
"""Where CrypTen, torch and the engine live: frames there are not the caller of an opening."""


@contextlib.contextmanager
def allow_openings() -> Iterator[None]:
    """Let CrypTen's opening calls through in this thread (protocol steps opening masked values)."""
    _openings.depth = getattr(_openings, "depth", 0) + 1
    try:
        yield
    finally:
        _openings.depth -= 1


def openings_allowed() -> bool:
    """Whether this thread is inside :func:`allow_openings`."""
    return getattr(_openings, "depth", 0) > 0


def caller() -> str:
    """'file:line' of the innermost frame outside crypten, torch and parties/engine."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_INTERNAL):
            cwd = os.getcwd() + os.sep
            shown = path[len(cwd):] if path.startswith(cwd) else path
            return f"{shown}:{frame.f_lineno}"
        frame = frame.f_back
    return "an unknown place"


def guard(what: str, opening: Callable[..., Any], armed: Callable[[], bool]
          ) -> Callable[..., Any]:
    """`opening`, refused with RevealError while `armed()` unless inside allow_openings."""
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if armed() and not openings_allowed():
            raise RevealError(f"{what} at {caller()} would open a secret outside "
                              "session.reveal: declare the output and open it with "
                              "session.reveal(...)")
        return opening(*args, **kwargs)

    guarded.__name__ = getattr(opening, "__name__", what)
    guarded.__doc__ = opening.__doc__
    guarded.__wrapped__ = opening  # type: ignore[attr-defined]
    return guarded


@dataclass(frozen=True)
class _Secret:
    share: torch.Tensor
    binary: bool  # XOR shares (else additive)
    encoder: Any


def _secret(value: Any, index: int) -> _Secret:
    from crypten.mpc import MPCTensor
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    inner = value._tensor if isinstance(value, MPCTensor) else value
    if not isinstance(inner, ArithmeticSharedTensor | BinarySharedTensor):
        raise TypeError(f"value {index} to open is a {type(value).__name__}, not a CrypTen "
                        "MPCTensor, ArithmeticSharedTensor or BinarySharedTensor")
    share = inner.share
    if share.dtype != torch.long:
        raise TypeError(f"value {index} to open has {share.dtype} shares, not int64")
    return _Secret(share, isinstance(inner, BinarySharedTensor), inner.encoder)


def _ranks(recipients: Sequence[int], n: int, index: int) -> frozenset[int]:
    out = frozenset(recipients)
    bad = sorted(r for r in out if not isinstance(r, int) or not 0 <= r < n)
    if bad:
        raise ValueError(f"value {index} is to be opened to ranks {bad}, outside 0..{n - 1}")
    return out


def open_to(values: Sequence[Any], recipients: Sequence[Sequence[int]]
            ) -> list[torch.Tensor | None]:
    """Open value i to the ranks in recipients[i], all values in one round.

    Each party sends every recipient one message with its shares of all the
    values that recipient gets; a recipient sums the additive shares (XORs the
    binary ones) and decodes with the value's encoder. Returns the plaintext of
    each value this party receives, None for the others. Every party calls it
    with the same shapes and recipients (a collective).
    """
    if len(values) != len(recipients):
        raise ValueError(f"{len(values)} values to open but {len(recipients)} recipient lists")
    comm = _crypten.communicator.get()
    me, n = comm.get_rank(), comm.get_world_size()
    items = [_secret(v, i) for i, v in enumerate(values)]
    targets = [_ranks(r, n, i) for i, r in enumerate(recipients)]
    outgoing = {}
    for r in range(n):
        mine = [s.share.reshape(-1) for s, t in zip(items, targets, strict=True) if r in t]
        if r != me and mine:
            outgoing[r] = torch.cat(mine)
    receiving = [i for i, t in enumerate(targets) if me in t]
    sources = [r for r in range(n) if r != me] if receiving else []
    got = comm.exchange(outgoing, sources)
    out: list[torch.Tensor | None] = [None] * len(values)
    totals = {i: items[i].share.clone() for i in receiving}
    for r in sources:
        flat, at = got[r], 0
        need = sum(totals[i].numel() for i in receiving)
        if not isinstance(flat, torch.Tensor) or flat.dtype != torch.long \
                or flat.numel() != need:
            raise ValueError(f"{_peer(comm, r)} sent {_describe(flat)} for an opening of "
                             f"{need} int64 elements (parties out of step)")
        for i in receiving:
            piece = flat[at:at + totals[i].numel()].reshape(totals[i].shape)
            at += piece.numel()
            if items[i].binary:
                totals[i] ^= piece
            else:
                totals[i] += piece
    for i in receiving:
        out[i] = items[i].encoder.decode(totals[i])
    return out


def _peer(comm: Any, rank: int) -> str:
    parties = getattr(comm, "parties", None)
    return f"party '{parties[rank]}'" if parties else f"the party of rank {rank}"


def _describe(t: Any) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.numel()} {t.dtype} elements"
    return f"a {type(t).__name__}"
