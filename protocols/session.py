"""What a protocol sees of its party: the Session interface.

Protocols never touch the transport. The party runtime (parties/runtime.py)
builds a Session with CrypTen already started over the gRPC mesh and hands it
to the protocol's `run(session)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Session(Protocol):
    """A running party, as a protocol sees it."""

    name: str
    rank: int
    world_size: int
    parties: list[str]
    public_seed: int

    def progress(self, step: str, **fields: Any) -> None:
        """Report progress (a line per step on a terminal)."""

    def communication_stats(self) -> dict[str, Any]:
        """Rounds and real bytes this party sent and received so far."""


@dataclass
class Report:
    """What a protocol returns: named results, and whether each check passed."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.get("ok", True) for r in self.rows)
