"""The Session a protocol runs with (protocols/api.py), as a party implements it.

It holds this party's view of the run: its name and rank, the checked
parameters, the joint seed, its own tables, which outputs go to whom. Reveals
go through the engine's one-round opening, and only for declared outputs;
every value this party learns is recorded in `revealed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from protocols.api import (
    COLUMNS,
    INTERSECTION_SIZE,
    Budget,
    Params,
    PlainState,
    PlainTable,
    RevealError,
    SharedTable,
    public_generator,
)
from protocols.blocks import sharing


@dataclass
class PartySession:
    """One party's Session."""

    party: str
    rank: int
    parties: list[str]
    params: Params
    seed: bytes
    communicator: Any
    outputs: tuple[str, ...] = ()  # every output the protocol declares
    reveal_to: dict[str, list[str]] = field(default_factory=dict)  # the manifest's [[reveal]]
    tables: dict[str, PlainTable] = field(default_factory=dict)  # inputs the consortium uses
    providers: dict[str, list[str]] = field(default_factory=dict)
    checkpoints: Any = None  # parties.node.checkpoint.Checkpoints, or None
    restored: tuple[int, dict[str, Any]] | None = None
    on_progress: Callable[[str, dict[str, Any]], None] | None = None
    revealed: dict[str, Any] = field(default_factory=dict)
    platform: dict[str, Any] = field(default_factory=dict)  # smpc's own outputs (per input)
    last_step: tuple[str, dict[str, Any]] | None = None
    budgets: dict[str, Budget] = field(default_factory=dict)  # the manifest's DP budgets
    min_group_size: int = 1  # the manifest's: statistics over fewer rows are suppressed
    states: dict[str, PlainState] = field(default_factory=dict)  # own weights (STATE_DICT)

    @property
    def world_size(self) -> int:
        return len(self.parties)

    # ------------------------------------------------------------ inputs
    def generator(self, purpose: str) -> torch.Generator:
        return public_generator(self.seed, purpose)

    def table(self, input_name: str) -> PlainTable | None:
        return self.tables.get(input_name)

    def state(self, input_name: str) -> PlainState | None:
        own = self.states.get(input_name)
        return own if own is not None and own.state else None

    def provides(self, input_name: str) -> list[str]:
        return list(self.providers.get(input_name, []))

    def share_rows(self, input_name: str, shuffle: bool = True) -> SharedTable | None:
        return sharing.share_rows(self, input_name, shuffle)

    def share_columns(self, input_name: str) -> SharedTable | None:
        return sharing.share_columns(self, input_name)

    def share(self, input_name: str, shuffle: bool = True) -> SharedTable | None:
        mine = self.tables.get(input_name)
        if mine is None or mine.layout != COLUMNS:
            return sharing.share_rows(self, input_name, shuffle)
        pooled = sharing.share_vertical(self, input_name, shuffle)
        if pooled is not None:
            self.platform.setdefault(INTERSECTION_SIZE, {})[input_name] = pooled.rows
        return pooled

    def exchange(self, outgoing: dict[str, torch.Tensor], sources: list[str]
                 ) -> dict[str, torch.Tensor]:
        """Public or blinded tensors only, by party name (on the communicator's exchange)."""
        for name in [*outgoing, *sources]:
            if name not in self.parties or name == self.party:
                raise ValueError(f"exchange: '{name}' is not another party (parties: "
                                 f"{', '.join(self.parties)})")
        for t in outgoing.values():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"exchange sends tensors, not {type(t).__name__}")
        rank = self.parties.index
        got = self.communicator.exchange({rank(p): t for p, t in outgoing.items()},
                                         [rank(p) for p in sources])
        return {self.parties[r]: t for r, t in got.items()}

    def platform_outputs(self) -> dict[str, Any]:
        """smpc's own declared outputs as this party learned them (None where it is not a
        recipient); recorded in `revealed` too."""
        out = {}
        for name, value in self.platform.items():
            if name in self.reveal_to:
                mine = self.party in self.reveal_to[name]
                out[name] = value if mine else None
                if mine:
                    self.revealed[name] = value
        return out

    # ------------------------------------------------------------ outputs
    def reveal(self, outputs: dict[str, Any] | str, value: Any = None,
               to: list[str] | None = None) -> dict[str, Any]:
        from parties.engine import reveal as opening

        if isinstance(outputs, str):
            outputs = {outputs: value}
        plan: list[tuple[str, list[int]]] = []
        for name in outputs:
            if name not in self.outputs:
                raise RevealError(f"'{name}' is not an output of this protocol (its outputs: "
                                  f"{', '.join(self.outputs) or 'none'})")
            declared = self.reveal_to.get(name, [])  # an optional output nobody receives
            recipients = declared if to is None else list(to)
            extra = [r for r in recipients if r not in declared]
            if extra:
                raise RevealError(f"the manifest reveals '{name}' to {declared or 'nobody'}, "
                                  f"not to {extra}")
            plan.append((name, [self.parties.index(r) for r in recipients]))
        leaves: list[Any] = []
        who: list[list[int]] = []
        shapes = {}
        for name, ranks in plan:
            shapes[name] = _flatten(outputs[name], leaves, who, ranks)
        opened = iter(opening.open_to(leaves, who)) if leaves else iter(())
        result = {}
        for name, ranks in plan:
            mine = self.rank in ranks
            plain = _rebuild(shapes[name], opened)
            result[name] = plain if mine else None
            if mine:
                self.revealed[name] = plain
        return result

    # ------------------------------------------------------------ progress, checkpoints
    def progress(self, step: str, **fields: Any) -> None:
        self.last_step = (step, fields)
        if self.on_progress is not None:
            self.on_progress(step, fields)

    def checkpoint(self, step: int, state: dict[str, Any]) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save(step, state, self.seed)

    def restore(self) -> tuple[int, dict[str, Any]] | None:
        return self.restored

    def communication_stats(self) -> dict[str, Any]:
        return self.communicator.get_communication_stats()

    def budget(self, output: str) -> Budget | None:
        return self.budgets.get(output)

    def recipients(self, output: str) -> list[str]:
        declared = self.reveal_to.get(output, [])
        return [p for p in self.parties if p in declared]

    def stage(self) -> str:
        """Where the run is, for error messages: 'after epoch 4/10 (round 3120)'."""
        rounds = self.communicator.get_communication_stats().get("rounds", 0)
        if self.last_step is None:
            return f"before the first step (round {rounds})"
        step, fields = self.last_step
        done, total = fields.get("epoch"), fields.get("of")
        where = f"{step} {done}/{total}" if done is not None and total else f"step '{step}'"
        return f"after {where} (round {rounds})"


# A revealed value's structure: secret leaves are replaced by their place in the
# flat list of tensors to open; plain leaves are kept.
_SECRET = object()


def _is_secret(value: Any) -> bool:
    return hasattr(value, "share") or hasattr(value, "_tensor")


def _flatten(value: Any, leaves: list[Any], who: list[list[int]], ranks: list[int]) -> Any:
    if _is_secret(value):
        leaves.append(value)
        who.append(ranks)
        return _SECRET
    if isinstance(value, dict):
        return {k: _flatten(v, leaves, who, ranks) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_flatten(v, leaves, who, ranks) for v in value]
    return value


def _rebuild(shape: Any, opened: Any) -> Any:
    if shape is _SECRET:
        return next(opened)
    if isinstance(shape, dict):
        return {k: _rebuild(v, opened) for k, v in shape.items()}
    if isinstance(shape, list):
        return [_rebuild(v, opened) for v in shape]
    return shape
