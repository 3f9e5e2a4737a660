"""A party's CSV: encoded as the table declares, each bad case named with file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from parties.consortium import data
from parties.consortium.config import TableSchema, load_consortium, load_policy
from parties.consortium.data import DataError, load_table
from tests.consortium import load_probe

ROOT = Path(__file__).resolve().parents[2]


def _schema(**changes: object) -> TableSchema:
    fields: dict[str, object] = dict(
        name="patients", features=("age", "dose"), label="outcome",
        types={"age": "float", "dose": "float"}, ranges={}, categories={}, classes=(0, 1))
    fields.update(changes)
    return TableSchema(**fields)  # type: ignore[arg-type]


SCHEMA = _schema()
SMOKER = _schema(features=("age", "smoker", "dose"),
                 types={"age": "float", "smoker": "categorical", "dose": "int"},
                 categories={"smoker": ("never", "former", "current")},
                 ranges={"age": (20.0, 120.0)}, classes=("benign", "malignant"))


def _csv(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "mine.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _error(path: Path, schema: TableSchema = SCHEMA, **kw: int) -> str:
    with pytest.raises(DataError) as info:
        load_table(path, schema, **kw)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_good_table(tmp_path: Path) -> None:
    t = load_table(_csv(tmp_path, "id,age,dose,outcome\n1,50,-0.5,1\n2,61.5,2,0\n"), SCHEMA)
    assert t.rows == 2
    assert torch.equal(t.features, torch.tensor([[50.0, -0.5], [61.5, 2.0]]))
    assert t.labels is not None and t.labels.tolist() == [[1.0], [0.0]]
    assert t.features.dtype == torch.float32 and t.labels.dtype == torch.float32
    assert t.ignored_columns == ("id",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("age,dose,outcome\n", "no data rows"),
        ("age,outcome\n1,0\n", ":1: column 'dose' is missing (the header has: age, outcome)"),
        ("age,dose,outcome,dose\n1,2,0,3\n", ":1: column 'dose' appears 2 times in the header"),
        ("age,dose,outcome\n1,2,0\n3,abc,1\n", ":3: column 'dose': 'abc' is not a number"),
        ("age,dose,outcome\n1,nan,0\n", ":2: column 'dose': 'nan' is not a finite number"),
        ("age,dose,outcome\n1,-inf,0\n", ":2: column 'dose': '-inf' is not a finite number"),
        ("age,dose,outcome\n1,,0\n", ":2: column 'dose' is empty"),
        ("age,dose,outcome\n1,2,0.5\n", ":2: column 'outcome': label '0.5' is not one of the "
                                        "classes 0, 1"),
        ("age,dose,outcome\n1,2,3\n", ":2: column 'outcome': label '3' is not one of the "
                                      "classes 0, 1"),
        ("age,dose,outcome\n1,2,\n", ":2: column 'outcome' is empty"),
        ("age,dose,outcome\n1,2\n", ":2: 2 fields, the header has 3"),
        ("age,dose,outcome\n\n\n1,2,0\n,,\n4,5\n", ":6: 2 fields, the header has 3"),
        ('note,age,dose,outcome\n"a\nb",1,2,0\nc,5,x,1\n',
         ":4: column 'dose': 'x' is not a number"),
        (b"age,dose,outcome\n1,2,\xff\n", "not UTF-8 text"),
        ("age,dose,outcome\n1,2,0\n1," + "9" * 200_000 + ",0\n",
         ":3: not a readable CSV line (field larger than field limit"),
    ],
)
def test_bad_data_is_named(tmp_path: Path, text: str | bytes, message: str) -> None:
    assert message in _error(_csv(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    assert "data file not found" in _error(tmp_path / "none.csv")


def test_types_ranges_and_scaling(tmp_path: Path) -> None:
    schema = _schema(types={"age": "int", "dose": "binary"}, ranges={"age": (20.0, 120.0)})
    t = load_table(_csv(tmp_path, "age,dose,outcome\n20,1,0\n120,0,1\n70.0,1,1\n"), schema)
    assert t.features.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.5, 1.0]]  # ends of the range
    bad = {
        "age,dose,outcome\n20,1,0\n121,0,1\n":
            ":3: column 'age': '121' is outside the agreed range [20, 120]",
        "age,dose,outcome\n19.5,1,0\n": ":2: column 'age': '19.5' is not an integer",
        "age,dose,outcome\n30,2,0\n": ":2: column 'dose': '2' is not 0 or 1",
        "age,dose,outcome\n30,0.5,0\n": ":2: column 'dose': '0.5' is not an integer",
    }
    for text, message in bad.items():
        assert message in _error(_csv(tmp_path, text), schema)
    fine = _schema(ranges={"dose": (0.001, 0.035)})
    got = _error(_csv(tmp_path, "age,dose,outcome\n1,0.04,0\n"), fine)
    assert "'0.04' is outside the agreed range [0.001, 0.035]" in got


def test_categorical_columns_are_one_hot(tmp_path: Path) -> None:
    text = ("id,age,smoker,dose,outcome,site\n"
            "1,20,never,3,benign,x\n2,120,current,0,malignant,y\n3,70, former ,1,benign,z\n")
    t = load_table(_csv(tmp_path, text), SMOKER)
    assert SMOKER.encoded_columns == ("age", "smoker=never", "smoker=former", "smoker=current",
                                      "dose")
    assert t.features.tolist() == [[0.0, 1.0, 0.0, 0.0, 3.0],
                                   [1.0, 0.0, 0.0, 1.0, 0.0],
                                   [0.5, 0.0, 1.0, 0.0, 1.0]]
    assert t.labels is not None and t.labels.ravel().tolist() == [0.0, 1.0, 0.0]
    assert t.ignored_columns == ("id", "site")
    bad = _error(_csv(tmp_path, "age,smoker,dose,outcome\n30,sometimes,1,benign\n"), SMOKER)
    assert bad.endswith(":2: column 'smoker': 'sometimes' is not one of the categories "
                        "'never', 'former', 'current'")
    empty = _error(_csv(tmp_path, "age,smoker,dose,outcome\n30,,1,benign\n"), SMOKER)
    assert empty.endswith(":2: column 'smoker' is empty")


def test_classes_map_to_indices(tmp_path: Path) -> None:
    # string classes: the stripped cell must be one of them, exactly
    text = "age,smoker,dose,outcome\n30,never,1,malignant\n40,never,1, benign\n"
    t = load_table(_csv(tmp_path, text), SMOKER)
    assert t.labels is not None and t.labels.ravel().tolist() == [1.0, 0.0]
    bad = _error(_csv(tmp_path, "age,smoker,dose,outcome\n30,never,1,Benign\n"), SMOKER)
    assert bad.endswith(":2: column 'outcome': label 'Benign' is not one of the classes "
                        "'benign', 'malignant'")
    # integer classes: any number equal to one ("1.0" is class 1), in declared order
    grades = _schema(classes=(3, 1, 2))
    t = load_table(_csv(tmp_path, "age,dose,outcome\n1,1,1.0\n1,1,3\n1,1,2e0\n"), grades)
    assert t.labels is not None and t.labels.ravel().tolist() == [1.0, 0.0, 2.0]
    bad = _error(_csv(tmp_path, "age,dose,outcome\n1,1,1.5\n"), grades)
    assert bad.endswith("label '1.5' is not one of the classes 3, 1, 2")
    # string classes that look like numbers still match text, not value
    text_classes = _schema(classes=("0", "1"))
    assert "label '1.0' is not one of the classes '0', '1'" in _error(
        _csv(tmp_path, "age,dose,outcome\n1,1,1.0\n"), text_classes)


def test_unlabelled_table(tmp_path: Path) -> None:
    t = load_table(_csv(tmp_path, "age,dose,outcome\n1,2,anything\n"), _schema(label=None))
    assert t.labels is None and t.features.tolist() == [[1.0, 2.0]]
    assert t.ignored_columns == ("outcome",)


def test_utf8_bom_and_blank_rows(tmp_path: Path) -> None:
    text = "\ufeffage,dose,outcome\r\n1,2,0\r\n\r\n , , \r\n3,4,1\r\n"
    t = load_table(_csv(tmp_path, text.encode("utf-8")), SCHEMA)
    assert t.features.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    # old Mac line ends: no '\n' to count, so the matrix grows as rows arrive
    mac = "age,dose,outcome\r" + "".join(f"{i},{i},{i % 2}\r" for i in range(9))
    t = load_table(_csv(tmp_path, mac.encode()), SCHEMA)
    assert t.features[:, 0].tolist() == [float(i) for i in range(9)]
    assert t.labels is not None and t.labels.ravel().tolist() == [float(i % 2) for i in range(9)]


def test_row_limit_stops_at_the_first_row_over_it(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i},{i % 2}\n" for i in range(5))
    path = _csv(tmp_path, "age,dose,outcome\n\n" + rows + "this line is never read\n")
    assert "1 fields, the header has 3" in _error(path, max_rows=6)  # the line after them
    got = _error(path, max_rows=3)
    assert got == (f"{path}:6: more than 3 data rows, the limit set by the policy's "
                   "'max_rows'")
    exact = _csv(tmp_path, "age,dose,outcome\n" + rows)
    assert load_table(exact, SCHEMA, max_rows=5).rows == 5


def test_chunks_agree_with_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows spread over many chunks, some taking the cell-by-cell path, load as in one pass."""
    lines = ["id,age,smoker,dose,outcome"]
    expected = []
    cats = ("never", "former", "current")
    for i in range(200):
        age, dose = 20 + i % 100, i % 7
        lines.append(f"p{i},{age},{cats[i % 3]},{dose},{('benign', 'malignant')[i % 2]}")
        onehot = [1.0 if k == i % 3 else 0.0 for k in range(3)]
        scaled = (torch.tensor(float(age)) - 20.0) / 100.0
        expected.append([scaled.item(), *onehot, float(dose)])
        if i % 37 == 0:
            lines.append(",,,,")  # a blank row: that chunk goes the slow way
    path = _csv(tmp_path, "\n".join(lines) + "\n")
    whole = load_table(path, SMOKER)
    monkeypatch.setattr(data, "CHUNK_ROWS", 7)
    chunked = load_table(path, SMOKER)
    assert torch.equal(whole.features, chunked.features)
    assert whole.labels is not None and chunked.labels is not None
    assert torch.equal(whole.labels, chunked.labels)
    assert chunked.features.tolist() == expected
    over = _error(path, SMOKER, max_rows=150)
    assert f":{lines.index('p150,70,never,3,benign') + 1}: more than 150 data rows" in over


def test_scaling_is_the_agreed_float32_formula(tmp_path: Path) -> None:
    lo, hi = 6.282, 30.922
    values = [6.282, 7.0, 12.345678, 30.922, 19.99]
    path = _csv(tmp_path, "age,dose,outcome\n" + "".join(f"{v},1,0\n" for v in values))
    t = load_table(path, _schema(ranges={"age": (lo, hi)}))
    expected = (torch.tensor(values, dtype=torch.float32) - lo) / (hi - lo)
    assert torch.equal(t.features[:, 0], expected)


def test_shipped_example_data_loads(tmp_path: Path) -> None:
    for folder in ("examples/hospitals", "docker"):
        c = load_consortium(ROOT / folder / "consortium.toml")
        for party in c.party_names:
            policy = load_policy(ROOT / "examples/hospitals/policies" / f"{party}.toml")
            for name, table in c.inputs.items():
                t = load_table(policy.data[name], c.tables[table], policy.max_rows)
                assert t.rows > 30 and t.features.shape[1] == 30
                assert t.ignored_columns == ("patient_id",)
                assert float(t.features.min()) >= 0.0 and float(t.features.max()) <= 1.0
                assert t.labels is not None and set(t.labels.ravel().tolist()) == {0.0, 1.0}


def test_loading_streams_instead_of_holding_every_row(tmp_path: Path) -> None:
    """Peak memory while loading stays near the result's size (the old loader took ~6x the
    file's size: every cell as a Python float in a list of rows)."""
    path = tmp_path / "big.csv"
    rows = load_probe.write_csv(path, mib=24)
    size_kib = path.stat().st_size / 1024
    m = load_probe.measure(path, timeout=240)
    assert m["rows"] == rows
    grown = m["peak_kib"] - m["baseline_kib"]
    assert grown < 1.5 * size_kib, (grown, size_kib)  # the old loader: about 6x


def test_public_summary_leaks_no_path_line_or_value(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age,dose,outcome\n1,2,0\n1,31337.25,1\n")
    with pytest.raises(DataError) as info:
        load_table(path, _schema(ranges={"dose": (0.0, 10.0)}))
    assert "31337.25" in str(info.value) and ":3:" in str(info.value)
    public = info.value.public
    assert "table 'patients'" in public
    assert not any(secret in public for secret in ("31337", "mine.csv", str(tmp_path), "3"))
