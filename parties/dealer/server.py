"""The dealer: a node that supplies correlated randomness and sees no data.

The dealer sends each party a fresh secret 256-bit seed over that party's
link. From then on every party expands its own shares locally
(parties/engine/correlated.py), from a ChaCha20 stream keyed by its seed, the
draw's counter and its descriptor; only party 0 needs its correction share
from the dealer. The dealer sends corrections ahead when the requests repeat
(parties/dealer/prefetch.py); otherwise party 0 asks as soon as the protocol
knows the shape and collects the answer only after its opening round is on
the wire. The party's side is parties/dealer/provider.py.

The dealer learns shapes and the operation (public anyway) and nothing about
inputs or outputs: it never receives a share of any secret value. It must not
collude with a party (that party would learn everyone's masks).
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from typing import Any

import torch

from parties.dealer import prefetch
from parties.engine import correlated as cr
from parties.wire.transport import Mesh, PeerClosed

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

    def __init__(self, seeds: list[bytes], party0: str, served: Counter[str]) -> None:
        self.seeds, self.party0, self.served = seeds, party0, served
        self.line = prefetch.Predictor()

    def answer(self, msg: Any) -> tuple[dict[str, Any], torch.Tensor]:
        """The reply to one message from party 0: a request, or a refill of guesses.

        A request is answered with its correction and the next guesses
        (parties/dealer/prefetch.py), a refill with more guesses.
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
    seeds = [secrets.token_bytes(cr.SEED_BYTES) for _ in parties]
    for party, seed in zip(parties, seeds, strict=True):
        mesh.send(party, torch.frombuffer(bytearray(seed), dtype=torch.uint8))
    dealer = Dealer(seeds, parties[0], served)
    while True:
        try:
            msg = mesh.recv(parties[0], timeout=idle_timeout)
        except PeerClosed:
            break  # party 0 is done
        header, flat = dealer.answer(msg)
        mesh.send(parties[0], header)
        mesh.send(parties[0], flat)
