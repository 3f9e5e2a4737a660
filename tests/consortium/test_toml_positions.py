"""The TOML key scanner: exact lines on tricky TOML, agreement with tomllib, safe fallbacks."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from parties.consortium.toml_positions import KeyPath, key_lines, nearest_line

ROOT = Path(__file__).resolve().parents[2]

TRICKY = '''\
# a comment that looks like a table: [fake.table] and a key: fake = 1
title = "not # a comment"  # a real comment
"quoted key" = 'literal [x] = y'
[server]
ports = [
  8001,  # [fake] = 2
  "a[=b",
  [1, 2],
]
desc = """
[not.a.table]
key = "value" \\""" still inside
"""
name = "srv"
point = { x = 1, y = { z = 2 }, "w v" = [3, 4] }
a.b.c = 3
"dotted . key".x = 4

[[reveal]]
name = "m"

# a comment above the second entry
[[reveal]]
# and one inside it
name = "w"
to = ["a",
      "b"]  # ]
[reveal.sub]
k = 1
[[reveal.items]]
q = """x""""
[[reveal.items]]
q = \'\'\'it's \'\'\'\'\'

[ tables . "my table" . types ]
smoker = "categorical"
when = 1979-05-27 07:32:00Z
[tables."my table".ranges]
age = [0, 120]
[[points]]
[[points]]
x = [{ a = 1 },
  { a = 2, b = 3 }]
'''

EXPECTED: dict[KeyPath, int] = {
    ("title",): 2,
    ("quoted key",): 3,
    ("server",): 4,
    ("server", "ports"): 5,
    ("server", "ports", 0): 6,
    ("server", "ports", 1): 7,
    ("server", "ports", 2): 8,
    ("server", "ports", 2, 1): 8,
    ("server", "desc"): 10,
    ("server", "name"): 14,
    ("server", "point"): 15,
    ("server", "point", "y", "z"): 15,
    ("server", "point", "w v", 1): 15,
    ("server", "a"): 16,
    ("server", "a", "b", "c"): 16,
    ("server", "dotted . key", "x"): 17,
    ("reveal",): 19,
    ("reveal", 0): 19,
    ("reveal", 0, "name"): 20,
    ("reveal", 1): 23,
    ("reveal", 1, "name"): 25,
    ("reveal", 1, "to"): 26,
    ("reveal", 1, "to", 1): 27,
    ("reveal", 1, "sub"): 28,
    ("reveal", 1, "sub", "k"): 29,
    ("reveal", 1, "items", 0): 30,
    ("reveal", 1, "items", 0, "q"): 31,
    ("reveal", 1, "items", 1): 32,
    ("reveal", 1, "items", 1, "q"): 33,
    ("tables",): 35,
    ("tables", "my table"): 35,
    ("tables", "my table", "types"): 35,
    ("tables", "my table", "types", "smoker"): 36,
    ("tables", "my table", "types", "when"): 37,
    ("tables", "my table", "ranges"): 38,
    ("tables", "my table", "ranges", "age"): 39,
    ("points", 0): 40,
    ("points", 1): 41,
    ("points", 1, "x", 0, "a"): 42,
    ("points", 1, "x", 1): 43,
    ("points", 1, "x", 1, "b"): 43,
}


def test_tricky_toml_is_valid_and_every_key_has_its_line() -> None:
    doc = tomllib.loads(TRICKY)
    assert doc["server"]["desc"].startswith("[not.a.table]")  # the scanner must skip it
    assert doc["reveal"][1]["items"][1]["q"] == "it's ''"
    lines = key_lines(TRICKY)
    wrong = {k: (lines.get(k), v) for k, v in EXPECTED.items() if lines.get(k) != v}
    assert not wrong, wrong
    # nothing inside strings or comments was taken for a key or a table
    assert not any("fake" in map(str, k) or "not" in k or "key" in k[-1:] for k in lines)


def _leaf_paths(value: Any, path: KeyPath = ()) -> list[KeyPath]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*path, i))] or [path]
    return [path]


@pytest.mark.parametrize("text", [
    TRICKY,
    (ROOT / "examples" / "hospitals" / "consortium.toml").read_text(),
    (ROOT / "docker" / "consortium.toml").read_text(),
    (ROOT / "examples" / "hospitals" / "policies" / "hospital-a.toml").read_text(),
])
def test_every_value_tomllib_reads_has_a_line(text: str) -> None:
    lines = key_lines(text)
    missing = [p for p in _leaf_paths(tomllib.loads(text)) if p and p not in lines]
    assert not missing
    rows = text.splitlines()
    for path, line in lines.items():  # a bare key's own line names it
        last = path[-1]
        if isinstance(last, str) and last.isidentifier():
            assert last in rows[line - 1], (path, line)


def test_missing_keys_fall_back_to_the_enclosing_table() -> None:
    lines = key_lines(TRICKY)
    assert nearest_line(lines, ("reveal", 1, "nope")) == 23
    assert nearest_line(lines, ("tables", "my table", "types", "dose")) == 35
    assert nearest_line(lines, ("server", "ports", 7)) == 5
    assert nearest_line(lines, ("nowhere", "at all")) is None
    assert nearest_line(lines, ()) is None


def test_text_that_is_not_toml_gives_what_was_found_before_the_problem() -> None:
    lines = key_lines('a = 1\n[t]\nb = "unterminated\nc = 2\n')
    assert lines[("a",)] == 1 and lines[("t", "b")] == 3
    assert ("t", "c") not in lines
    assert key_lines("") == {}
