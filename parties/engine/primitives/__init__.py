"""The dealer-backed MPC protocols as functions of explicit inputs.

Each primitive takes this party's shares as plain int64 tensors and

* `source`: where this party's correlated material comes from, any object with
  ``draw(kind, request) -> (shares, last)`` (the dealer provider's share
  source, or a simulated dealer in the tests): ``shares`` are this party's
  shares of the draw, ``last()`` the last one (on party 0 the dealer's
  correction, collected only when called, so it can arrive while the opening
  round is on the wire);
* `rank`: this party's rank (party 0 adds the public terms);
* `open_batch(shares, ops)`: one round that opens every tensor in `shares`
  (combined by `ops`, one SUM or BXOR reduce op per tensor, or one for all)
  and returns the opened values. Only masked values are ever opened.

They return this party's share of the result and do no other I/O, so they can
be run for n simulated parties in one process. The CrypTen-facing wrappers
are in parties/engine/hooks.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class Source(Protocol):
    """A party's supply of correlated material (see the module docstring)."""

    def draw(self, kind: str, req: dict[str, Any]
             ) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]: ...


OpenBatch = Callable[[list[torch.Tensor], Any], list[torch.Tensor]]
"""open_batch(shares, ops): open every tensor in one round (one reduce op, or one per tensor)."""

Gather = Callable[[torch.Tensor], list[torch.Tensor] | list[None]]
"""gather(share): every party's share on party 0 (in rank order), [None] elsewhere."""
