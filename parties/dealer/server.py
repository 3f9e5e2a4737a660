"""The dealer: a node that supplies correlated randomness and sees no data.

The dealer sends each party a fresh secret seed over that party's link. From
then on every party expands its own shares locally (parties/correlated.py),
from a generator keyed by its seed, the draw's counter and its descriptor;
only party 0 needs its correction share from the dealer. The dealer sends
corrections ahead when the requests repeat (parties/prefetch.py); otherwise
party 0 asks as soon as the protocol knows the shape and collects the answer
only after its opening round is on the wire.

The dealer learns shapes and the operation (public anyway) and nothing about
inputs or outputs: it never receives a share of any secret value. It must not
collude with a party (that party would learn everyone's masks).
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from parties.dealer import material as cr
from parties.dealer import prefetch
from parties.engine.adapter import load_crypten
from parties.wire.transport import Mesh, PeerClosed, PeerError

log = logging.getLogger("smpc.dealer")

MAX_REQUEST_ELEMENTS = 1 << 28  # a request may ask for at most this many elements per tensor


class DealerError(RuntimeError):
    """A request the dealer refuses."""


def _check_request(req: Any, parties: list[str]) -> tuple[str, dict[str, Any]]:
    if not isinstance(req, dict) or "kind" not in req or not isinstance(req.get("counter"), int) \
            or req["counter"] < 0:
        raise DealerError(f"party '{parties[0]}' sent a malformed dealer request")
    kind = req["kind"]
    if kind not in cr.KINDS:
        raise DealerError(f"party '{parties[0]}' asked for unknown material {kind!r}")
    for key in ("size0", "size1"):
        if key in req:
            size = req[key]
            if not isinstance(size, torch.Size) or len(size) > 8:
                raise DealerError(f"party '{parties[0]}': bad {key} {size!r}")
            if size.numel() > MAX_REQUEST_ELEMENTS:
                raise DealerError(
                    f"party '{parties[0]}' asked for {size.numel()} elements "
                    f"(limit {MAX_REQUEST_ELEMENTS})"
                )
    if kind == cr.ADDITIVE and (req.get("op") not in cr.BILINEAR_OPS
                                or not isinstance(req.get("kwargs"), dict)):
        raise DealerError(f"party '{parties[0]}' asked for op {req.get('op')!r}")
    if kind == cr.LTZ:
        if req.get("digit_bits") not in cr.LTZ_DIGIT_BITS:
            raise DealerError(f"party '{parties[0]}' asked for comparison digits of "
                              f"{req.get('digit_bits')!r} bits")
        limit = MAX_REQUEST_ELEMENTS // cr.ltz_table_words(req["digit_bits"])
        if req["size0"].numel() > limit:
            raise DealerError(f"party '{parties[0]}' asked for comparison tables of "
                              f"{req['size0'].numel()} elements (limit {limit})")
    return kind, req


class Dealer:
    """What the dealer knows: every party's seed and the line of party 0's requests."""

    def __init__(self, seeds: list[int], party0: str, served: Counter[str]) -> None:
        self.seeds, self.party0, self.served = seeds, party0, served
        self.line = prefetch.Predictor()

    def answer(self, msg: Any) -> tuple[dict[str, Any], torch.Tensor]:
        """The reply to one message from party 0: a request, or a refill of guesses.

        A request is answered with its correction and the next guesses
        (parties/prefetch.py), a refill with more guesses.
        """
        refill = isinstance(msg, dict) and "refill" in msg
        if refill:
            first = msg["refill"]
            if not isinstance(first, int) or first < 0:
                raise DealerError(f"party '{self.party0}' sent a malformed refill")
            counters = self.line.extend(prefetch.BATCH) if first == self.line.end else []
        else:
            kind, req = _check_request(msg, [self.party0])
            first = req.pop("counter")
            req.pop("kind")
            try:
                self.line.confirm(first, (cr.describe(kind, req), kind, req))
            except ValueError as exc:
                raise DealerError(f"party '{self.party0}': {exc}") from None
            counters = [first, *self.line.extend(prefetch.BATCH)]
        items: list[tuple[str, torch.Tensor]] = []
        elements = 0
        for i, k in enumerate(counters):
            descriptor, kind, req = self.line.entry(k)
            if refill or i > 0:  # a guess: only small ones, a bounded sum
                size = cr.request_elements(kind, req)
                if size > prefetch.GUESS_LIMIT or elements + size > prefetch.BUDGET:
                    self.line.truncate(k)
                    break
                elements += size
            gens = [cr.keyed_stream(s, k, descriptor) for s in self.seeds]
            items.append((descriptor, cr.correction(kind, gens, req)))
            self.served[kind] += 1
        return prefetch.pack_answer(first, items)


def serve(mesh: Mesh, parties: list[str], served: Counter[str],
          idle_timeout: float = 3600.0) -> None:
    """Run the dealer until party 0 closes its link, counting what it serves in `served`."""
    seeds = [secrets.randbits(63) for _ in parties]
    for party, seed in zip(parties, seeds, strict=True):
        mesh.send(party, torch.tensor(seed, dtype=torch.long))
    dealer = Dealer(seeds, parties[0], served)
    while True:
        try:
            msg = mesh.recv(parties[0], timeout=idle_timeout)
        except PeerClosed:
            break  # party 0 is done
        header, flat = dealer.answer(msg)
        mesh.send(parties[0], header)
        mesh.send(parties[0], flat)


class _ShareSource:
    """A party's end of the dealer: its seed, its draw counter and, for party 0, the link."""

    def __init__(self, mesh: Mesh, rank: int, dealer: str) -> None:
        self.rank = rank
        seed = mesh.recv(dealer)
        if not isinstance(seed, torch.Tensor) or seed.dtype != torch.long or seed.numel() != 1:
            raise PeerError(dealer, "sent a malformed seed")
        self.seed = int(seed.item())
        self.draws = 0
        self.prefetch = prefetch.Prefetcher(lambda obj: mesh.send(dealer, obj),
                                            lambda: mesh.recv(dealer)) if rank == 0 else None

    @property
    def requests(self) -> int:
        """Messages party 0 sent the dealer."""
        return self.prefetch.messages if self.prefetch is not None else 0

    def draw(self, kind: str, req: dict[str, Any]
             ) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
        """This party's shares for `req`, and a function giving the last share.

        On party 0 the last share is the dealer's correction: prefetched, or
        requested now and received when the function is called.
        """
        counter, descriptor = self.draws, cr.describe(kind, req)
        self.draws += 1
        shares = cr.party_shares(kind, cr.keyed_stream(self.seed, counter, descriptor),
                                 self.rank, req)
        if self.prefetch is not None:
            return shares, self.prefetch.correction(counter, descriptor, kind, req)
        last = shares.pop()
        return shares, lambda: last


def make_provider(mesh: Mesh, rank: int, dealer: str) -> Any:
    """A CrypTen TupleProvider whose material comes from the dealer over `mesh`."""
    crypten = load_crypten()
    from crypten.mpc.primitives import ArithmeticSharedTensor as AST
    from crypten.mpc.primitives import BinarySharedTensor as BST

    base = crypten.mpc.provider.provider.TupleProvider

    class DealerProvider(base):  # type: ignore[misc, valid-type]
        NAME = "DEALER"

        def __init__(self) -> None:
            super().__init__()
            self.source = _ShareSource(mesh, rank, dealer)

        def draw(self, kind: str, req: dict[str, Any]
                 ) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
            return self.source.draw(kind, req)

        def _sync(self, kind: str, req: dict[str, Any]) -> list[torch.Tensor]:
            shares, last = self.draw(kind, req)
            return [*shares, last()]

        def generate_additive_triple(self, size0: Any, size1: Any, op: str, device: Any = None,
                                     *args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
            if args:
                raise TypeError("positional arguments to the bilinear op are not supported")
            req = {"size0": torch.Size(size0), "size1": torch.Size(size1), "op": op,
                   "kwargs": kwargs}
            a, b, c = self._sync(cr.ADDITIVE, req)
            return tuple(AST.from_shares(t, precision=0) for t in (a, b, c))

        def square(self, size: Any, device: Any = None) -> tuple[Any, Any]:
            r, r2 = self._sync(cr.SQUARE, {"size0": torch.Size(size)})
            return AST.from_shares(r, precision=0), AST.from_shares(r2, precision=0)

        def generate_binary_triple(self, size0: Any, size1: Any, device: Any = None
                                   ) -> tuple[Any, Any, Any]:
            req = {"size0": torch.Size(size0), "size1": torch.Size(size1)}
            return tuple(BST.from_shares(t) for t in self._sync(cr.BINARY, req))

        def wrap_rng(self, size: Any, device: Any = None) -> tuple[Any, Any]:
            r, theta = self._sync(cr.WRAPS, {"size0": torch.Size(size)})
            return AST.from_shares(r, precision=0), AST.from_shares(theta, precision=0)

        def B2A_rng(self, size: Any, device: Any = None) -> tuple[Any, Any]:  # noqa: N802
            rb, ra = self._sync(cr.B2A, {"size0": torch.Size(size)})
            return AST.from_shares(ra, precision=0), BST.from_shares(rb)

    return DealerProvider()
