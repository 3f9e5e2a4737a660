"""The dealer: a node that supplies correlated randomness and sees no data.

The dealer sends each party a fresh secret seed over that party's link. From
then on every party expands its own shares locally (parties/correlated.py);
only party 0 asks the dealer for its correction share, one message per
request, pipelined: party 0 sends the request as soon as the protocol knows the
shape and collects the answer only after its opening round is on the wire.

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

from parties import correlated as cr
from parties.crypten_adapter import load_crypten
from parties.transport import Mesh, PeerClosed, PeerError

log = logging.getLogger("smpc.dealer")

MAX_REQUEST_ELEMENTS = 1 << 28  # a request may ask for at most this many elements per tensor


class DealerError(RuntimeError):
    """A request the dealer refuses."""


def _check_request(req: Any, parties: list[str]) -> tuple[str, dict[str, Any]]:
    if not isinstance(req, dict) or "kind" not in req:
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
    if kind == cr.LTZ and req.get("digit_bits") not in cr.LTZ_DIGIT_BITS:
        raise DealerError(f"party '{parties[0]}' asked for comparison digits of "
                          f"{req.get('digit_bits')!r} bits")
    if kind == cr.LTZ and req["size0"].numel() * cr.ltz_table_words(req["digit_bits"]) \
            > MAX_REQUEST_ELEMENTS:
        raise DealerError(f"party '{parties[0]}' asked for comparison tables of "
                          f"{req['size0'].numel()} elements (limit "
                          f"{MAX_REQUEST_ELEMENTS // cr.ltz_table_words(req['digit_bits'])})")
    return kind, req


def serve(mesh: Mesh, parties: list[str], served: Counter[str],
          idle_timeout: float = 3600.0) -> None:
    """Run the dealer until party 0 closes its link, counting what it serves in `served`."""
    seeds = [secrets.randbits(63) for _ in parties]
    for party, seed in zip(parties, seeds, strict=True):
        mesh.send(party, torch.tensor(seed, dtype=torch.long))
    gens = [cr.generator(s) for s in seeds]
    while True:
        try:
            req = mesh.recv(parties[0], timeout=idle_timeout)
        except PeerClosed:
            break  # party 0 is done
        kind, req = _check_request(req, parties)
        mesh.send(parties[0], cr.correction(kind, gens, req))
        served[kind] += 1


class _ShareSource:
    """A party's end of the dealer: its seeded generator and, for party 0, the link."""

    def __init__(self, mesh: Mesh, rank: int, dealer: str) -> None:
        self.mesh, self.rank, self.dealer = mesh, rank, dealer
        seed = mesh.recv(dealer)
        if not isinstance(seed, torch.Tensor) or seed.dtype != torch.long or seed.numel() != 1:
            raise PeerError(dealer, "sent a malformed seed")
        self.g = cr.generator(int(seed.item()))
        self.requests = 0

    def draw(self, kind: str, req: dict[str, Any]
             ) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
        """This party's shares for `req`, and a function giving the last share.

        On party 0 the last share is the dealer's correction, requested now and
        received when the function is called.
        """
        shares = cr.party_shares(kind, self.g, self.rank, req)
        if self.rank == 0:
            self.mesh.send(self.dealer, {"kind": kind, **req})
            self.requests += 1
            tag = self.mesh.next_recv_tag(self.dealer)
            return shares, lambda: self.mesh.recv(self.dealer, tag=tag)
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
