"""Pooling the parties' data into one secret table, and the same pooling in the clear.

Horizontal partitioning (`share_rows`): every party holds rows of the same columns. Each
party secret-shares its own rows; the pooled table is their concatenation in
rank order, then (by default) permuted with the joint seed so that mini-batches
mix the parties' rows. Row counts are public (shapes are public in MPC); the
permutation is public too (it comes from the joint seed), so applying it is a
local re-indexing of every party's shares.

Vertical partitioning (`share_columns`): the parties hold different columns of
the same, already aligned rows; the pooled table is the column-concatenation of
their shares.

Sharing needs no messages: CrypTen's `cryptensor(x, src=i)` adds x to party
i's share of a pseudo-random sharing of zero (PRZS, from pairwise seeds).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from protocols.api import (
    COLUMNS,
    PlainTable,
    ProtocolError,
    Session,
    SharedTable,
    public_generator,
)


def shuffle_purpose(input_name: str) -> str:
    """The joint-seed purpose of an input's shuffle (the plaintext twin uses the same)."""
    return f"shuffle:{input_name}"


def share_rows(session: Session, input_name: str, shuffle: bool = True) -> SharedTable | None:
    """Every providing party's rows of `input_name`, pooled as shares (None: input unused)."""
    import crypten

    mine = session.table(input_name)
    if mine is None:
        return None
    comm = crypten.communicator.get()
    counts = [int(c.item()) for c in comm.all_gather(torch.tensor([mine.rows]))]
    width = mine.features.shape[1]
    xs, ys = [], []
    for rank, count in enumerate(counts):
        if count == 0:
            continue
        own = rank == session.rank
        xs.append(crypten.cryptensor(mine.features if own else torch.empty(count, width),
                                     src=rank))
        if mine.labels is not None:
            ys.append(crypten.cryptensor(mine.labels if own else torch.empty(count, 1), src=rank))
    if not xs:
        return SharedTable(None, None, counts, mine.columns, mine.classes)
    x = crypten.cat(xs) if len(xs) > 1 else xs[0]
    y = (crypten.cat(ys) if len(ys) > 1 else ys[0]) if ys else None
    order = None
    if shuffle:
        order = torch.randperm(sum(counts), generator=session.generator(
            shuffle_purpose(input_name)))
        x = x[order]
        y = y[order] if y is not None else None
    return SharedTable(x, y, counts, mine.columns, mine.classes, order)


def share_columns(session: Session, input_name: str) -> SharedTable | None:
    """Vertical partitioning: the providing parties hold different columns of the same rows.

    The rows must already be aligned (the same people in the same order, e.g.
    after a private set intersection); each party shares its own column block
    and the pooled table is their concatenation along the columns, in rank
    order. The labels come from the lowest-ranked party whose table has any.
    None when the consortium does not use the input.
    """
    mine = session.table(input_name)
    if mine is None:
        return None
    shapes = _shapes(session, mine.rows, mine)
    holders = [r for r, (rows, cols, lab) in enumerate(shapes) if rows and (cols or lab)]
    if not holders:
        return SharedTable(None, None, [0] * len(shapes), mine.columns, mine.classes,
                           layout=COLUMNS)
    rows = shapes[holders[0]][0]
    if any(shapes[r][0] != rows for r in holders):
        counts = {session.parties[r]: shapes[r][0] for r in holders}
        raise ProtocolError(f"input '{input_name}': vertical parties must hold the same rows, "
                            f"but their row counts differ: {counts}")
    return _share_blocks(session, mine, mine.features, mine.labels, shapes, holders, rows)


def share_vertical(session: Session, input_name: str, shuffle: bool = True
                   ) -> SharedTable | None:
    """A vertical table pooled: private set intersection, alignment, then the columns.

    1. Every party's identifiers go into the N-party PSI (protocols/blocks/psi.py),
       salted with the joint seed, led by the label holder; each party learns which
       of its rows are in the intersection and their rank in the order of the
       blinded identifiers. An empty intersection stops every party here.
    2. Each party puts its rows of the intersection in the common order: with
       `shuffle`, the order of a joint-seed hash of the identifier (`order_key`,
       which the plaintext twin reproduces; LR's held-out test rows are its last
       ones), else the order of the blinded identifiers.
    3. Each party shares its columns of those rows, the label holder its labels;
       the pooled matrix is their concatenation along the columns (rank order).
    """
    from protocols.blocks import psi

    mine = session.table(input_name)
    if mine is None:
        return None
    ids = mine.identifiers or ()
    shapes = _shapes(session, len(ids), mine)
    labelled = [r for r, (_, _, lab) in enumerate(shapes) if lab]
    leader = session.parties[labelled[0] if labelled else 0]
    try:
        ranks = psi.intersect(session.exchange, session.parties, session.party, ids,
                              psi.salt_for(session.seed, f"psi:{input_name}"), leader)
    except psi.PsiError as exc:
        raise ProtocolError(f"input '{input_name}': private set intersection: {exc}") from None
    common = np.nonzero(ranks >= 0)[0]
    if len(common) == 0:
        raise ProtocolError(f"input '{input_name}': the private set intersection is empty "
                            "(the parties have no identifier in common): nothing to compute on")
    if shuffle:
        keys = [order_key(session.seed, input_name, ids[i]) for i in common]
        common = common[sorted(range(len(common)), key=keys.__getitem__)]
    else:
        common = common[np.argsort(ranks[common], kind="stable")]
    index = torch.from_numpy(common)
    labels = mine.labels[index] if mine.labels is not None else None
    shapes = [[len(common), cols, lab] for _, cols, lab in shapes]
    holders = [r for r, (_, cols, lab) in enumerate(shapes) if cols or lab]
    return _share_blocks(session, mine, mine.features[index], labels, shapes, holders,
                         len(common))


def order_key(seed: bytes, input_name: str, identifier: str) -> bytes:
    """Where a row of a vertical table goes in the shuffled common order: SHA-256 of the
    joint seed, the input and the identifier (computed locally; never sent)."""
    return hashlib.sha256(b"smpc/order|" + seed + b"|" + input_name.encode() + b"|"
                          + identifier.encode()).digest()


def _shapes(session: Session, rows: int, mine: PlainTable) -> list[list[int]]:
    """[rows, columns, has labels] of every party (public: shapes are public in MPC)."""
    import crypten

    has_label = int(mine.labels is not None and mine.rows > 0)
    comm = crypten.communicator.get()
    return [t.tolist() for t in comm.all_gather(
        torch.tensor([rows, mine.features.shape[1], has_label]))]


def _share_blocks(session: Session, mine: PlainTable, features: torch.Tensor,
                  labels: torch.Tensor | None, shapes: list[list[int]], holders: list[int],
                  rows: int) -> SharedTable:
    """Each holder's column block as shares, concatenated; labels from the first labelled."""
    import crypten

    blocks, columns = [], []
    names = _column_names(session, mine, shapes)
    for rank in holders:
        cols = shapes[rank][1]
        columns += names[rank]
        if cols:
            own = rank == session.rank
            blocks.append(crypten.cryptensor(features if own else torch.empty(rows, cols),
                                             src=rank))
    x = (crypten.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]) if blocks else None
    labelled = [r for r, (_, _, lab) in enumerate(shapes) if lab]
    y = None
    if labelled:
        owner = labelled[0]
        y = crypten.cryptensor(labels if session.rank == owner else torch.empty(rows, 1),
                               src=owner)
    counts = [rows if r in holders else 0 for r in range(len(shapes))]
    return SharedTable(x, y, counts, tuple(columns), mine.classes, layout=COLUMNS)


def _column_names(session: Session, mine: PlainTable, shapes: list[list[int]]
                  ) -> list[list[str]]:
    """Each party's columns as 'party.column': from the schema's pooled columns when the
    table has them, else (same columns everywhere) this party's names or indices."""
    pooled = list(mine.pooled_columns)
    out, at = [], 0
    for rank, (_, cols, _) in enumerate(shapes):
        if len(pooled) == sum(c for _, c, _ in shapes):
            names = pooled[at:at + cols]
            at += cols
        else:
            names = list(mine.columns) if len(mine.columns) == cols else [str(i) for i in
                                                                          range(cols)]
        out.append([f"{session.parties[rank]}.{c}" for c in names])
    return out


def pool_plain(tables: list[PlainTable], seed: bytes, input_name: str, shuffle: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The plaintext twin of `share_rows`: (features, labels, origin rank of each row).

    Rows come in exactly the order `share_rows` gives the shares (float64).
    """
    x = torch.cat([t.features for t in tables]).double()
    labelled = all(t.labels is not None for t in tables)
    y = torch.cat([t.labels for t in tables]).double() if labelled else None  # type: ignore[misc]
    origin = torch.cat([torch.full((t.rows,), rank, dtype=torch.long)
                        for rank, t in enumerate(tables)])
    if shuffle:
        order = torch.randperm(x.shape[0], generator=public_generator(
            seed, shuffle_purpose(input_name)))
        x, origin = x[order], origin[order]
        y = y[order] if y is not None else None
    return x, y, origin


@dataclass(frozen=True)
class PlainJoin:
    """The plaintext twin of `share_vertical`: the parties' tables joined on the identifier.

    x: the common rows (every party's columns, rank order) in `share_vertical`'s shuffled
    order, float64; y: the label holder's labels of them (or None); blocks[i]: party i's
    columns of x; outside[i]: party i's own rows that are not common (features, labels or
    None), in the same hash order, for a party's baseline alone.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    blocks: list[slice]
    outside: list[tuple[torch.Tensor, torch.Tensor | None]]


def join_plain(tables: list[PlainTable], seed: bytes, input_name: str) -> PlainJoin:
    """Join vertical tables on their identifiers in the clear (what `share_vertical` pools,
    in the same order when it shuffles)."""
    ids = [list(t.identifiers or ()) for t in tables]
    common = set(ids[0]).intersection(*ids[1:]) if ids else set()

    def ordered(names: list[str]) -> list[str]:
        return sorted(names, key=lambda i: order_key(seed, input_name, i))

    rows_of = [{x: k for k, x in enumerate(t)} for t in ids]
    joined = ordered(list(common))
    xs, blocks, outside, at = [], [], [], 0
    y = None
    for t, where in zip(tables, rows_of, strict=True):
        index = torch.tensor([where[i] for i in joined], dtype=torch.long)
        xs.append(t.features[index].double())
        blocks.append(slice(at, at + t.features.shape[1]))
        at += t.features.shape[1]
        if t.labels is not None and y is None:
            y = t.labels[index].double()
        rest = torch.tensor([where[i] for i in ordered([i for i in where if i not in common])],
                            dtype=torch.long)
        outside.append((t.features[rest].double(),
                        t.labels[rest].double() if t.labels is not None else None))
    x = torch.cat(xs, dim=1) if xs else torch.empty(0, 0, dtype=torch.float64)
    return PlainJoin(x, y, blocks, outside)


def stack(values: list[Any]) -> Any:
    """One flat CrypTen tensor from scalars or vectors (for revealing several values at once)."""
    import crypten

    return crypten.cat([v.reshape(-1) for v in values])
