"""A party's private table: a CSV checked against the consortium's schema.

Everything is checked before a single value is secret-shared; an error names
the file, the line and the column. Extra columns are ignored (an organization
may keep more than it shares); declared columns must all be there.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from parties.consortium.config import Schema


class DataError(ValueError):
    """A data file that does not fit the schema; the message says where."""


@dataclass(frozen=True)
class Table:
    """Validated rows: features (rows x features, float32) and labels (rows x 1)."""

    path: Path
    features: torch.Tensor
    labels: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


def load_table(path: str | Path, schema: Schema) -> Table:
    """Read `path` and check every declared column of every row."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{path}: the file is empty (no header line)")
        header = [h.strip() for h in header]
        columns = [*schema.features, schema.label]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}:1: column {missing[0]!r} is missing "
                            f"(the header has: {', '.join(header)})")
        index = [header.index(c) for c in columns]
        types = schema.types
        values: list[list[float]] = []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line_no}: {len(row)} fields, the header has "
                                f"{len(header)}")
            parsed = []
            for col, i in zip(columns, index, strict=True):
                parsed.append(_cell(path, line_no, col, row[i], types.get(col, "float")))
            label = parsed[-1]
            if label not in (0.0, 1.0):
                raise DataError(f"{path}:{line_no}: column {schema.label!r}: label "
                                f"{row[index[-1]]!r} is not 0 or 1")
            values.append(parsed)
    if not values:
        raise DataError(f"{path}: no data rows after the header")
    t = torch.tensor(values, dtype=torch.float32)
    return Table(path, t[:, :-1].contiguous(), t[:, -1:].contiguous())


def _cell(path: Path, line: int, column: str, text: str, kind: str) -> float:
    raw = text.strip()
    if raw == "":
        raise DataError(f"{path}:{line}: column {column!r} is empty")
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{path}:{line}: column {column!r}: {raw!r} is not a number") from None
    if math.isnan(value) or math.isinf(value):
        raise DataError(f"{path}:{line}: column {column!r}: {raw!r} is not a finite number")
    if kind in ("int", "binary") and value != int(value):
        raise DataError(f"{path}:{line}: column {column!r}: {raw!r} is not an integer")
    if kind == "binary" and value not in (0.0, 1.0):
        raise DataError(f"{path}:{line}: column {column!r}: {raw!r} is not 0 or 1")
    return value


def scaled(table: Table, schema: Schema) -> Table:
    """Scale each feature with a declared range to [0, 1] (public ranges, local rows)."""
    x = table.features.clone()
    for j, col in enumerate(schema.features):
        if col in schema.ranges:
            lo, hi = schema.ranges[col]
            x[:, j] = (x[:, j] - lo) / (hi - lo)
    return Table(table.path, x, table.labels)
