"""A party's CSV: each bad case named with file, line and column, before anything is shared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from parties.consortium.config import Schema
from parties.consortium.data import DataError, load_table

SCHEMA = Schema(("age", "dose"), "outcome", {"outcome": "binary"})


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.csv"
    path.write_text(text)
    return path


def test_good_table(tmp_path: Path) -> None:
    t = load_table(_csv(tmp_path, "id,age,dose,outcome\n1,50,-0.5,1\n2,61.5,2,0\n"), SCHEMA)
    assert t.rows == 2
    assert torch.equal(t.features, torch.tensor([[50.0, -0.5], [61.5, 2.0]]))
    assert t.labels.tolist() == [[1.0], [0.0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("age,dose,outcome\n", "no data rows"),
        ("age,outcome\n1,0\n", ":1: column 'dose' is missing"),
        ("age,dose,outcome\n1,2,0\n3,abc,1\n", ":3: column 'dose': 'abc' is not a number"),
        ("age,dose,outcome\n1,nan,0\n", ":2: column 'dose': 'nan' is not a finite number"),
        ("age,dose,outcome\n1,,0\n", ":2: column 'dose' is empty"),
        ("age,dose,outcome\n1,2,0.5\n", ":2: column 'outcome': '0.5' is not an integer"),
        ("age,dose,outcome\n1,2,3\n", ":2: column 'outcome': '3' is not 0 or 1"),
        ("age,dose,outcome\n1,2\n", ":2: 2 fields, the header has 3"),
    ],
)
def test_bad_data_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_table(path, SCHEMA)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        load_table(tmp_path / "none.csv", SCHEMA)
