"""n parties of a primitive in one process: a simulated dealer and a simulated opening.

Each party runs in a thread with its own `source` (its seed's keyed streams,
party 0's corrections computed as the dealer would) and an `open_batch` /
`gather` that meet the other threads at a barrier. No network: this checks the
arithmetic of the primitives, the tests in test_context.py and test_reveal.py
run them over real meshes.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

import torch

from parties.engine import correlated as cr
from parties.engine.compat import reduce_ops
from tests.engine.harness import run_threads

RING_EDGES = torch.tensor([0, 1, -1, 2, 2**62, -(2**62), 2**63 - 1, -(2**63), -(2**63) + 1,
                           2**32, -(2**32), 12345, -98765])
"""Edge values of Z_2^64 as int64: zero, +-1, the extremes, powers of two."""


class Source:
    """Party `rank`'s draws from its seed; party 0's last share is the dealer's correction."""

    def __init__(self, seeds: list[bytes], rank: int) -> None:
        self.seeds, self.rank, self.draws = seeds, rank, 0

    def draw(self, kind: str, req: dict[str, Any]
             ) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
        counter, descriptor = self.draws, cr.describe(kind, req)
        self.draws += 1
        shares = cr.party_shares(kind, cr.keyed_stream(self.seeds[self.rank], counter,
                                                       descriptor), self.rank, req)
        if self.rank == 0:
            streams = [cr.keyed_stream(s, counter, descriptor) for s in self.seeds]
            last = cr.correction(kind, streams, req)
        else:
            last = shares.pop()
        return shares, lambda: last


class Network:
    """The parties' openings: every party deposits its shares, all get the combination."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rounds = 0
        self._barrier = threading.Barrier(n, timeout=30)
        self._slots: list[Any] = [None] * n

    def _meet(self, rank: int, mine: Any) -> list[Any]:
        self._slots[rank] = mine
        self._barrier.wait()
        everyone = list(self._slots)
        if self._barrier.wait() == 0:
            self.rounds += 1
        return everyone

    def open_batch(self, rank: int) -> Callable[[list[torch.Tensor], Any], list[torch.Tensor]]:
        def open_batch(shares: list[torch.Tensor], ops: Any) -> list[torch.Tensor]:
            everyone = self._meet(rank, [s.clone() for s in shares])
            ops = list(ops) if isinstance(ops, list | tuple) else [ops] * len(shares)
            xor = reduce_ops()[1]
            return [(cr.xor_shares if op == xor else cr.sum_shares)([e[i] for e in everyone])
                    for i, op in enumerate(ops)]

        return open_batch

    def gather(self, rank: int) -> Callable[[torch.Tensor], list[Any]]:
        def gather(share: torch.Tensor) -> list[Any]:
            everyone = self._meet(rank, share.clone())
            return everyone if rank == 0 else [None]

        return gather


def run(n: int, fn: Callable[[int, Source, Network], Any]) -> tuple[list[Any], Network]:
    """fn(rank, source, network) for n simulated parties; results in rank order."""
    seeds = [secrets.token_bytes(cr.SEED_BYTES) for _ in range(n)]
    net = Network(n)
    got = run_threads({str(r): (lambda r=r: fn(r, Source(seeds, r), net)) for r in range(n)},
                      timeout=60)
    return [got[str(r)] for r in range(n)], net


def additive(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """n uniformly random additive shares of int64 `x` (mod 2^64)."""
    shares = [torch.randint(-(2**63), 2**63 - 1, x.shape, dtype=torch.long) for _ in range(n - 1)]
    return [*shares, x - cr.sum_shares(shares, like=x)]


def xor(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """n uniformly random XOR shares of int64 `x`."""
    shares = [torch.randint(-(2**63), 2**63 - 1, x.shape, dtype=torch.long) for _ in range(n - 1)]
    return [*shares, x ^ cr.xor_shares(shares, like=x)]


def ring(*size: int) -> torch.Tensor:
    """Uniform int64 ring elements."""
    return torch.randint(-(2**63), 2**63 - 1, size, dtype=torch.long)
