"""Line numbers of the keys in a TOML text, so that config errors can point at them.

`tomllib` gives values but no positions. `key_lines(text)` scans the same text
once and maps each key path to the 1-based line where it is written:

    ("consortium", "name")              a key in a [table]
    ("reveal", 1, "to")                 a key in the second [[reveal]] entry
    ("tables", "patients", "types")     a [table] header (or an implicit parent table)
    ("protocol", "inputs", "train")     a dotted key, or a key in an inline table
    ("tables", "t", "features", 2)      the third element of an array value

The scanner expects text that `tomllib` has already accepted; on anything it does
not understand it stops and returns what it has found so far (positions are a
help for error messages, never a second parser that could reject a file).
`nearest_line` falls back from a path that is not written in the file (a
missing key) to the line of the nearest enclosing key or table header.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from collections.abc import Mapping

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = frozenset(",]}#\n\r")


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map every key path written in `text` (a valid TOML document) to its 1-based line."""
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (IndexError, ValueError, tomllib.TOMLDecodeError):
        pass  # not valid TOML after all: keep the positions found up to here
    return scanner.lines


def nearest_line(lines: Mapping[KeyPath, int], keys: KeyPath) -> int | None:
    """The line of `keys`, else of its nearest enclosing path that is written; None if none is."""
    path = tuple(keys)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


class _Scanner:
    """A single pass over the text that records where keys, headers and array elements start."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._arrays: dict[KeyPath, int] = {}  # [[array]] path -> entries seen so far

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def skip_blank(self, newlines: bool) -> None:
        """Skip spaces and tabs, and also newlines and comments when `newlines` is true."""
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in " \t" or (newlines and c in "\r\n"):
                self.pos += 1
            elif newlines and c == "#":
                self.skip_comment()
            else:
                return

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            if self.peek() == "[":
                table = self.header()
            else:
                self.key_value(table)
            self.skip_blank(newlines=False)
            if self.peek() == "#":
                self.skip_comment()

    def header(self) -> KeyPath:
        """Read `[a.b]` or `[[a.b]]`; return the concrete path (array entries get their index)."""
        start = self.pos
        array = self.peek(2) == "[["
        self.pos += 2 if array else 1
        keys = self.key()
        self.pos += 2 if array else 1
        path: KeyPath = ()
        for i, k in enumerate(keys):
            path = (*path, k)
            last = i == len(keys) - 1
            if array and last:
                count = self._arrays.get(path, 0)
                self._arrays[path] = count + 1
                self.lines.setdefault(path, self.line(start))
                path = (*path, count)
            elif path in self._arrays:
                path = (*path, self._arrays[path] - 1)
            if last:
                self.lines[path] = self.line(start)
            else:
                self.lines.setdefault(path, self.line(start))
        return path

    def key(self) -> list[str]:
        """Read a (possibly dotted, possibly quoted) key; return its parts."""
        parts = []
        while True:
            self.skip_blank(newlines=False)
            c = self.peek()
            if c in "\"'":
                start = self.pos
                self.string()
                parts.append(tomllib.loads("k = " + self.text[start:self.pos])["k"])
            else:
                m = _BARE_KEY.match(self.text, self.pos)
                if m is None:
                    raise ValueError(f"no key at offset {self.pos}")
                parts.append(m.group())
                self.pos = m.end()
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return parts
            self.pos += 1

    def key_value(self, table: KeyPath) -> None:
        """Read `key = value` inside `table`, recording the key (and its dotted parents)."""
        start = self.pos
        keys = self.key()
        line = self.line(start)
        for i in range(1, len(keys)):
            self.lines.setdefault((*table, *keys[:i]), line)
        path = (*table, *keys)
        self.lines[path] = line
        self.skip_blank(newlines=False)
        if self.peek() != "=":
            raise ValueError(f"no '=' at offset {self.pos}")
        self.pos += 1
        self.skip_blank(newlines=False)
        self.value(path)

    def value(self, path: KeyPath) -> None:
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.array(path)
        elif c == "{":
            self.inline_table(path)
        else:
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1
            if self.pos == start:
                raise ValueError(f"no value at offset {start}")

    def array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self.skip_blank(newlines=True)
            if self.peek() == "]":
                self.pos += 1
                return
            self.lines[(*path, index)] = self.line(self.pos)
            self.value((*path, index))
            index += 1
            self.skip_blank(newlines=True)
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "]":
                raise ValueError(f"unexpected {self.peek()!r} in an array at offset {self.pos}")

    def inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self.skip_blank(newlines=True)  # newlines are TOML 1.1; harmless to accept
            if self.peek() == "}":
                self.pos += 1
                return
            self.key_value(path)
            self.skip_blank(newlines=True)
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise ValueError(f"unexpected {self.peek()!r} in a table at offset {self.pos}")

    def string(self) -> None:
        """Skip a basic, literal or multi-line string starting at the current position."""
        quote = self.peek()
        if self.peek(3) == quote * 3:
            end = self._closing(quote * 3, self.pos + 3, escapes=quote == '"')
            while self.text[end + 3:end + 4] == quote:
                end += 1  # up to two quotes may precede the closing delimiter
            self.pos = end + 3
        else:
            self.pos = self._closing(quote, self.pos + 1, escapes=quote == '"') + 1

    def _closing(self, delimiter: str, pos: int, escapes: bool) -> int:
        while True:
            end = self.text.find(delimiter, pos)
            if end < 0:
                raise ValueError("unterminated string")
            if not escapes or _unescaped(self.text, end):
                return end
            pos = end + 1


def _unescaped(text: str, pos: int) -> bool:
    """Whether the character at `pos` is preceded by an even number of backslashes."""
    count = 0
    while pos - count - 1 >= 0 and text[pos - count - 1] == "\\":
        count += 1
    return count % 2 == 0
