"""A party's private table: a CSV file checked against one table of the consortium.

Everything is checked before a single value is secret-shared; an error reads
"FILE:LINE: column 'x': ..." and names what was expected. Declared columns must
all be in the header; other columns are accepted and reported as ignored (an
organization may keep more than it shares).

The file is streamed: rows are parsed a chunk at a time straight into one
preallocated float32 matrix (its size bounded by a cheap count of the file's
lines), so loading takes about the size of the result plus one chunk, never a
Python list of every row. Each chunk first takes a vectorized path; a chunk
that has anything unusual (a bad cell, a blank row, a short line) is parsed
again cell by cell, which finds the first problem in file order.

The loaded features follow `TableSchema.encoded_columns`: numeric features as
float32, scaled to [0, 1] where the consortium declares a public range, and
each categorical feature one-hot over its declared categories. Labels are the
class index (0..K-1) of each row's label cell among `TableSchema.classes`;
integer classes match any number equal to them ("1", "1.0", "1e0"), string
classes match the stripped cell text exactly.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parties.consortium.config import DEFAULT_MAX_ROWS, TableSchema

CHUNK_ROWS = 4096
_COUNT_BLOCK = 1 << 20


class DataError(ValueError):
    """A data file that does not fit its table; the message says where.

    The message names the party's own file, line and cell values: it is for the
    party's own operator only. `public` is what may be told to the other parties.
    """

    table: str | None = None

    @property
    def public(self) -> str:
        """A summary without paths, line numbers or values, safe to send to peers."""
        which = f"table {self.table!r}" if self.table else "its table"
        return f"a data file does not fit {which} (the details are in that party's log)"


@dataclass(frozen=True)
class LoadedTable:
    """Validated rows of one CSV file, encoded for the protocol.

    features: rows x len(schema.encoded_columns), float32.
    labels: rows x 1 float32 class indices, or None for a table without a label.
    ignored_columns: header columns that the table does not declare, in header order.
    """

    path: Path
    features: torch.Tensor
    labels: torch.Tensor | None
    ignored_columns: tuple[str, ...]
    identifiers: tuple[str, ...] | None = None  # a vertical table's: one per row, distinct

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


def load_table(path: str | Path, schema: TableSchema, max_rows: int = DEFAULT_MAX_ROWS,
               identifier: str | None = None, foreign: dict[str, str] | None = None
               ) -> LoadedTable:
    """Read `path`, check every declared cell of every row, and encode the table.

    With `identifier` (a vertical table), that column is read too: every row needs one,
    and no two rows may share one. `foreign` maps the columns that other parties hold
    to their holder: a file that has one of them is refused.

    Raises DataError naming the file, line and column of the first problem, or
    the line where the file passes `max_rows` data rows (the rest is not read).
    """
    try:
        return _read(Path(path), schema, max_rows, identifier, foreign or {})
    except DataError as exc:
        exc.table = schema.name
        raise


def _read(path: Path, schema: TableSchema, max_rows: int, identifier: str | None,
          foreign: dict[str, str]) -> LoadedTable:
    capacity = _line_bound(path, max_rows)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            try:
                return _load(path, reader, schema, max_rows, capacity, identifier, foreign)
            except csv.Error as exc:
                raise DataError(f"{path}:{reader.line_num}: not a readable CSV line "
                                f"({exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the file as UTF-8 CSV") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def _line_bound(path: Path, max_rows: int) -> int:
    """An upper bound on the data rows (newlines in the file), counting no further than
    max_rows + 1; the matrix is allocated once with this many rows."""
    count = 0
    try:
        with path.open("rb") as raw:
            while count <= max_rows + 1 and (block := raw.read(_COUNT_BLOCK)):
                count += block.count(b"\n")
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    return max(1, min(count, max_rows))


def _load(path: Path, reader: Any, schema: TableSchema, max_rows: int,
          capacity: int, identifier: str | None, foreign: dict[str, str]) -> LoadedTable:
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise DataError(f"{path}: the file is empty (no header line)")
    plan = _Plan(path, schema, [h.strip() for h in header], identifier, foreign)
    features = np.zeros((capacity, plan.out_width), np.float32)
    labels = np.zeros((capacity, 1), np.float32) if plan.label is not None else None
    ids: list[str] | None = [] if identifier is not None else None
    first_line: dict[str, int] = {}
    rows = 0
    while parsed := _parse_chunk(reader, plan, min(CHUNK_ROWS, max_rows - rows + 1)):
        x, y, lines, chunk_ids = parsed
        if rows + len(x) > max_rows:
            line = lines[max_rows - rows]
            raise DataError(f"{path}:{line}: more than {max_rows} data rows, the limit set by "
                            "the policy's 'max_rows'")
        if ids is not None:
            _distinct(path, identifier, chunk_ids, lines, first_line)
            ids += chunk_ids
        if rows + len(x) > len(features):  # only when lines end in a lone '\r'
            grow = min(max(2 * len(features), rows + len(x)), max_rows)
            features = np.concatenate([features, np.zeros((grow - len(features),
                                                           plan.out_width), np.float32)])
            if labels is not None:
                labels = np.concatenate([labels, np.zeros((grow - len(labels), 1), np.float32)])
        features[rows:rows + len(x)] = x
        if labels is not None:
            labels[rows:rows + len(x)] = y
        rows += len(x)
    if rows == 0:
        raise DataError(f"{path}: no data rows after the header")
    y = torch.from_numpy(labels[:rows]) if labels is not None else None
    return LoadedTable(path, torch.from_numpy(features[:rows]), y, plan.ignored,
                       tuple(ids) if ids is not None else None)


def _distinct(path: Path, column: str | None, ids: list[str], lines: list[int],
              first_line: dict[str, int]) -> None:
    """Refuse an identifier seen before (on this chunk's or an earlier line)."""
    for ident, line in zip(ids, lines, strict=True):
        seen = first_line.setdefault(ident, line)
        if seen != line:
            raise DataError(f"{path}:{line}: column {column!r}: identifier {ident!r} appears "
                            f"again (first on line {seen}); each row needs its own identifier")


def _parse_chunk(reader: Any, plan: _Plan, limit: int
                 ) -> tuple[np.ndarray, np.ndarray | None, list[int], list[str]] | None:
    """The next chunk's encoded rows, the line each starts on and their identifiers (empty
    without an identifier column); None at the end of the file. The chunk's cells (Python
    strings) are freed on return, before the next chunk is read."""
    chunk, lines = _read_chunk(reader, limit)
    if not chunk:
        return None
    x, y, kept = plan.fast(chunk) or plan.slow(chunk, lines)
    lines = lines if isinstance(kept, range) else [lines[k] for k in kept]
    return x, y, lines, plan.identifiers(chunk, kept, lines)


def _read_chunk(reader: Any, limit: int) -> tuple[list[list[str]], list[int]]:
    """Up to `limit` non-empty rows and the line each starts on (blank lines are skipped)."""
    rows: list[list[str]] = []
    lines: list[int] = []
    last = reader.line_num
    for row in reader:
        if row:
            rows.append(row)
            lines.append(last + 1)
            if len(rows) >= limit:
                break
        last = reader.line_num
    return rows, lines


def _number(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


class _Plan:
    """Where each declared column is in the header and in the encoded matrix, and its checks."""

    def __init__(self, path: Path, schema: TableSchema, header: list[str],
                 identifier: str | None = None, foreign: dict[str, str] | None = None) -> None:
        self.path = path
        self.width = len(header)
        for col in header:
            if col in (foreign or {}):
                raise DataError(f"{path}:1: column {col!r} is held by party "
                                f"{(foreign or {})[col]!r} in table {schema.name!r}, not by "
                                f"this party (its columns: {', '.join(schema.features)})")
        declared = [*schema.features, *([schema.label] if schema.label else [])]
        if identifier is not None and identifier not in header:
            raise DataError(f"{path}:1: identifier column {identifier!r} is missing (the "
                            f"header has: {', '.join(header)})")
        for col in [*declared, *([identifier] if identifier is not None else [])]:
            if col not in header:
                raise DataError(f"{path}:1: column {col!r} is missing "
                                f"(the header has: {', '.join(header)})")
            if header.count(col) > 1:
                raise DataError(f"{path}:1: column {col!r} appears {header.count(col)} times "
                                "in the header")
        self.identifier = identifier
        self.id_index = header.index(identifier) if identifier is not None else -1
        self.ignored = tuple(h for h in header if h not in declared and h != identifier)
        # numeric features: (column, header index, output index, type)
        self.numeric: list[tuple[str, int, int, str]] = []
        # categorical features: (column, header index, first output index, category -> offset)
        self.categorical: list[tuple[str, int, int, dict[str, int]]] = []
        self.ranges: dict[str, tuple[float, float]] = dict(schema.ranges)
        out = 0
        for col in schema.features:
            kind = schema.types.get(col, "float")
            if kind == "categorical":
                cats = schema.categories[col]
                self.categorical.append((col, header.index(col), out,
                                         {c: k for k, c in enumerate(cats)}))
                out += len(cats)
            else:
                self.numeric.append((col, header.index(col), out, kind))
                out += 1
        self.out_width = out
        self.numeric_out = [o for _, _, o, _ in self.numeric]
        # scaling with the public ranges, in float32 like the rest of the matrix
        self.scaled = [k for k, (c, _, _, _) in enumerate(self.numeric) if c in self.ranges]
        bounds = [self.ranges[self.numeric[k][0]] for k in self.scaled]
        self.low = np.array([lo for lo, _ in bounds], np.float32)
        self.span = np.array([hi - lo for lo, hi in bounds], np.float32)
        self.order = [*schema.features]  # the slow path checks columns in schema order
        self.label = schema.label
        self.classes = schema.classes
        self.label_index = header.index(schema.label) if schema.label else -1
        numeric_classes = all(isinstance(c, int) for c in schema.classes)
        self.class_of: dict[Any, int] = {
            (float(c) if numeric_classes else c): k for k, c in enumerate(schema.classes)}
        self.label_key: Callable[[str], Any] = float if numeric_classes else str.strip
        self.int_cols = [k for k, (_, _, _, kind) in enumerate(self.numeric)
                         if kind in ("int", "binary")]
        self.binary_cols = [k for k, (_, _, _, kind) in enumerate(self.numeric)
                            if kind == "binary"]
        self.range_cols = [(k, self.ranges[c]) for k, (c, _, _, _) in enumerate(self.numeric)
                           if c in self.ranges]

    def identifiers(self, chunk: list[list[str]], kept: range | list[int],
                    lines: list[int]) -> list[str]:
        """The identifier of each kept row (stripped); DataError for an empty one."""
        if self.identifier is None:
            return []
        ids = [chunk[k][self.id_index].strip() for k in kept]
        if not all(ids):
            line = lines[ids.index("")]
            raise DataError(f"{self.path}:{line}: identifier column {self.identifier!r} is "
                            "empty")
        return ids

    # -- the vectorized path: None as soon as anything needs a closer look ----------------

    def fast(self, chunk: list[list[str]]
             ) -> tuple[np.ndarray, np.ndarray | None, range] | None:
        """Encode a chunk with whole-column operations, or None if any cell needs a message."""
        n = len(chunk)
        if set(map(len, chunk)) != {self.width}:
            return None
        x = np.zeros((n, self.out_width), np.float32)
        try:
            if self.numeric:
                values = self._numbers(chunk)
                if not self._numbers_ok(values):
                    return None
                x[:, self.numeric_out] = self._scale(values)
            rows = np.arange(n)
            for _, i, start, offset in self.categorical:
                cells = map(str.strip, map(itemgetter(i), chunk))
                codes = np.fromiter(map(offset.__getitem__, cells), np.intp, n)
                x[rows, start + codes] = 1.0
            y = None
            if self.label is not None:
                keys = map(self.label_key, map(itemgetter(self.label_index), chunk))
                y = np.fromiter(map(self.class_of.__getitem__, keys), np.float32, n)
        except (ValueError, KeyError):
            return None
        return x, (y.reshape(n, 1) if y is not None else None), range(n)

    def _numbers(self, chunk: list[list[str]]) -> np.ndarray:
        index = [i for _, i, _, _ in self.numeric]
        get = itemgetter(*index)
        cells = map(get, chunk) if len(index) == 1 else chain.from_iterable(map(get, chunk))
        flat = np.fromiter(map(float, cells), np.float64, len(chunk) * len(index))
        return flat.reshape(len(chunk), len(index))

    def _scale(self, values: np.ndarray) -> np.ndarray:
        """float32 values, those with a public range mapped to [0, 1]: (x - low) / (high - low)."""
        out = values.astype(np.float32)
        if self.scaled:
            out[:, self.scaled] = (out[:, self.scaled] - self.low) / self.span
        return out

    def _numbers_ok(self, values: np.ndarray) -> bool:
        if not np.isfinite(values).all():
            return False
        ints = values[:, self.int_cols]
        if (ints != np.trunc(ints)).any():
            return False
        bits = values[:, self.binary_cols]
        if ((bits != 0) & (bits != 1)).any():
            return False
        return all(((values[:, k] >= lo) & (values[:, k] <= hi)).all()
                   for k, (lo, hi) in self.range_cols)

    # -- the cell-by-cell path: exact messages, blank rows skipped ------------------------

    def slow(self, chunk: list[list[str]], lines: list[int]
             ) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
        """Encode a chunk one cell at a time; raise DataError at the first bad cell."""
        kept = [k for k, row in enumerate(chunk) if any(cell.strip() for cell in row)]
        x = np.zeros((len(kept), self.out_width), np.float32)
        y = np.zeros((len(kept), 1), np.float32) if self.label is not None else None
        values = np.zeros((len(kept), len(self.numeric)), np.float64)
        numeric = {c: (k, i, kind) for k, (c, i, _, kind) in enumerate(self.numeric)}
        categorical = {c: (i, o, off) for c, i, o, off in self.categorical}
        for r, k in enumerate(kept):
            row, line = chunk[k], lines[k]
            if len(row) != self.width:
                raise DataError(f"{self.path}:{line}: {len(row)} fields, the header has "
                                f"{self.width}")
            for col in self.order:
                if col in numeric:
                    j, i, kind = numeric[col]
                    values[r, j] = self._cell(line, col, row[i], kind)
                else:
                    i, o, offset = categorical[col]
                    x[r, o + self._category(line, col, row[i], offset)] = 1.0
            if y is not None:
                y[r, 0] = self._class(line, row[self.label_index])
        x[:, self.numeric_out] = self._scale(values)
        return x, y, kept

    def _cell(self, line: int, col: str, text: str, kind: str) -> float:
        raw = self._present(line, col, text)
        try:
            value = float(raw)
        except ValueError:
            raise self._error(line, col, f"{raw!r} is not a number") from None
        if not math.isfinite(value):
            raise self._error(line, col, f"{raw!r} is not a finite number")
        if kind in ("int", "binary") and not value.is_integer():
            raise self._error(line, col, f"{raw!r} is not an integer")
        if kind == "binary" and value not in (0.0, 1.0):
            raise self._error(line, col, f"{raw!r} is not 0 or 1")
        if col in self.ranges:
            lo, hi = self.ranges[col]
            if not lo <= value <= hi:
                raise self._error(line, col, f"{raw!r} is outside the agreed range "
                                             f"[{_number(lo)}, {_number(hi)}]")
        return value

    def _category(self, line: int, col: str, text: str, offset: dict[str, int]) -> int:
        raw = self._present(line, col, text)
        if raw not in offset:
            allowed = ", ".join(repr(c) for c in offset)
            raise self._error(line, col, f"{raw!r} is not one of the categories {allowed}")
        return offset[raw]

    def _class(self, line: int, text: str) -> int:
        assert self.label is not None
        raw = self._present(line, self.label, text)
        try:
            index = self.class_of.get(self.label_key(raw))
        except ValueError:
            index = None
        if index is None:
            allowed = ", ".join(repr(c) for c in self.classes)
            raise self._error(line, self.label, f"label {raw!r} is not one of the classes "
                                                f"{allowed}")
        return index

    def _present(self, line: int, col: str, text: str) -> str:
        raw = text.strip()
        if raw == "":
            raise DataError(f"{self.path}:{line}: column {col!r} is empty")
        return raw

    def _error(self, line: int, col: str, message: str) -> DataError:
        return DataError(f"{self.path}:{line}: column {col!r}: {message}")
