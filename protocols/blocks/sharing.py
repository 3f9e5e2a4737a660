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

from typing import Any

import torch

from protocols.api import PlainTable, Session, SharedTable, public_generator


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
    import crypten

    from protocols.api import ProtocolError

    mine = session.table(input_name)
    if mine is None:
        return None
    comm = crypten.communicator.get()
    has_label = int(mine.labels is not None and mine.rows > 0)
    shapes = [t.tolist() for t in comm.all_gather(
        torch.tensor([mine.rows, mine.features.shape[1], has_label]))]
    holders = [r for r, (rows, cols, _) in enumerate(shapes) if rows and cols]
    if not holders:
        return SharedTable(None, None, [0] * len(shapes), mine.columns, mine.classes)
    rows = shapes[holders[0]][0]
    if any(shapes[r][0] != rows for r in holders):
        counts = {session.parties[r]: shapes[r][0] for r in holders}
        raise ProtocolError(f"input '{input_name}': vertical parties must hold the same rows, "
                            f"but their row counts differ: {counts}")
    blocks, columns = [], []
    for rank in holders:
        cols = shapes[rank][1]
        own = rank == session.rank
        blocks.append(crypten.cryptensor(mine.features if own else torch.empty(rows, cols),
                                         src=rank))
        columns += [f"{session.parties[rank]}.{c}" for c in
                    (mine.columns if len(mine.columns) == cols else range(cols))]
    x = crypten.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
    labelled = [r for r, (_, _, lab) in enumerate(shapes) if lab]
    y = None
    if labelled:
        owner = labelled[0]
        y = crypten.cryptensor(mine.labels if session.rank == owner else torch.empty(rows, 1),
                               src=owner)
    counts = [rows if r in holders else 0 for r in range(len(shapes))]
    return SharedTable(x, y, counts, tuple(columns), mine.classes)


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


def stack(values: list[Any]) -> Any:
    """One flat CrypTen tensor from scalars or vectors (for revealing several values at once)."""
    import crypten

    return crypten.cat([v.reshape(-1) for v in values])
