"""What a protocol sees of its party: the Session interface.

Protocols never touch the transport. The party runtime (parties/runtime.py)
builds a Session with CrypTen already started over the gRPC mesh and hands it
to the protocol's `run(session)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class RevealError(PermissionError):
    """A protocol tried to reveal something the manifest does not declare."""


@dataclass(frozen=True)
class PrivateTable:
    """One party's own rows, already checked against the schema and scaled."""

    features: torch.Tensor  # rows x features, float32
    labels: torch.Tensor  # rows x 1, 0/1


class Session(Protocol):
    """A running party, as a protocol sees it."""

    name: str
    rank: int
    world_size: int
    parties: list[str]
    public_seed: int
    parameters: dict[str, Any]
    train: PrivateTable | None
    test: PrivateTable | None

    def reveal(self, name: str, value: Any, to: list[str] | None = None) -> Any:
        """Open a CrypTen tensor to the parties the manifest names for `name`.

        Returns the plaintext on those parties and None elsewhere; refuses any
        name the manifest does not declare.
        """

    def progress(self, step: str, **fields: Any) -> None:
        """Report progress (a line per step on a terminal, JSON lines with --log-json)."""

    def checkpoint(self, step: int, state: dict[str, Any]) -> None:
        """Store this party's shares of `state` (CrypTen tensors) as of `step` (if enabled)."""

    def restore(self) -> tuple[int, dict[str, Any]] | None:
        """With --resume: the latest step every party has stored, and its state; else None."""

    def communication_stats(self) -> dict[str, Any]:
        """Rounds and real bytes this party sent and received so far."""


@dataclass
class Report:
    """What a protocol returns: named results, and whether each check passed."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.get("ok", True) for r in self.rows)
