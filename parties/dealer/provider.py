"""The party's end of the dealer: its seed, its draws, and a CrypTen provider over them.

Each party receives a 256-bit seed from the dealer once, then expands every
draw of correlated material locally (parties/engine/correlated.py); party 0
also collects its correction shares from the dealer, prefetched in batches
(parties/dealer/prefetch.py). :func:`make_provider` wraps this as CrypTen's
TupleProvider, and the engine's primitives call its `draw` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import torch

from parties.dealer import prefetch
from parties.engine import correlated as cr
from parties.engine.compat import load_crypten
from parties.wire.transport import Mesh, PeerError

load_crypten()

from crypten.mpc.primitives import ArithmeticSharedTensor as AST  # noqa: E402
from crypten.mpc.primitives import BinarySharedTensor as BST  # noqa: E402
from crypten.mpc.provider.provider import TupleProvider  # noqa: E402


class _ShareSource:
    """A party's end of the dealer: its seed, its draw counter and, for party 0, the link."""

    def __init__(self, mesh: Mesh, rank: int, dealer: str) -> None:
        self.rank = rank
        seed = mesh.recv(dealer)
        if not isinstance(seed, torch.Tensor) or seed.dtype != torch.uint8 \
                or seed.shape != (cr.SEED_BYTES,):
            raise PeerError(dealer, f"sent a malformed seed (not {cr.SEED_BYTES} bytes)")
        self.seed = seed.numpy().tobytes()
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


class DealerProvider(TupleProvider):  # type: ignore[misc]
    """CrypTen's TupleProvider over a dealer share source.

    The engine's primitives call `draw` directly; CrypTen's provider methods
    (the original protocols, the active-security check) get the whole draw at
    once. Tracing is refused: nothing would ever read a traced cache.
    """

    NAME = "DEALER"

    def __init__(self, source: _ShareSource) -> None:
        super().__init__()
        self.source = source

    def draw(self, kind: str, req: dict[str, Any]
             ) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
        return self.source.draw(kind, req)

    def trace(self, tracing: bool = True) -> None:
        if tracing:
            _no_tracing("crypten.trace()")

    def trace_once(self) -> None:
        _no_tracing("crypten.trace_once()")

    def fill_cache(self) -> None:
        _no_tracing("crypten.fill_cache()")

    def save_cache(self, filepath: Any = None) -> None:
        _no_tracing("the provider's save_cache()")

    def load_cache(self, filepath: Any = None) -> None:
        _no_tracing("the provider's load_cache()")

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


def make_provider(mesh: Mesh, rank: int, dealer: str) -> DealerProvider:
    """Party `rank`'s provider, its material from the dealer over `mesh` (waits for its seed)."""
    return DealerProvider(_ShareSource(mesh, rank, dealer))


def _no_tracing(what: str) -> NoReturn:
    raise NotImplementedError(
        f"{what} is not available with the dealer: the engine's protocols draw their material "
        "from the dealer directly (it sends corrections ahead of need by itself), so a traced "
        "cache would never be used")
