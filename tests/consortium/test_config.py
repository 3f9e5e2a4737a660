"""Consortium and policy files: the format, and every error naming its exact file and line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from parties.consortium.config import (
    DEFAULT_MAX_ROWS,
    ConfigError,
    Consortium,
    Policy,
    load_consortium,
    load_policy,
)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
[consortium]
name = "hospitals"
ca = ""

[[parties]]
name = "hospital-a"
address = "127.0.0.1:7101"

[[parties]]
name = "hospital-b"
address = "127.0.0.1:7102"
roles = ["data holder", "model owner"]

[dealer]
address = "127.0.0.1:7100"

[protocol]
name = "logistic-regression"
version = "1"

[protocol.parameters]
epochs = 5
learning_rate = 0.5

[protocol.inputs]
train = "patients"
test = "patients"

[tables.patients]
features = ["age", "smoker", "dose"]
label = "outcome"
classes = ["benign", "malignant"]

[tables.patients.types]
smoker = "categorical"
dose = "int"

[tables.patients.categories]
smoker = ["never", "former", "current"]

[tables.patients.ranges]
age = [0, 120]

# the evaluation metrics go to everyone
[[reveal]]
name = "metrics"
to = ["hospital-a", "hospital-b"]

# the weights only to hospital-a
[[reveal]]
name = "weights"
to = ["hospital-a"]
"""

POLICY = """\
party = "hospital-a"
max_rows = 500

[data]
train = "a-train.csv"
test = "/abs/a-test.csv"

[accept]
protocols = ["logistic-regression"]
reveal = ["metrics"]
"""


def _write(tmp_path: Path, text: str, name: str = "consortium.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _line(text: str, content: str, nth: int = 1) -> int:
    """1-based line of the nth line of `text` that is exactly `content`."""
    hits = [i for i, row in enumerate(text.splitlines(), 1) if row == content]
    return hits[nth - 1]


def _error(tmp_path: Path, text: str,
           loader: Callable[[Path], object] = load_consortium) -> str:
    path = _write(tmp_path, text, "policy.toml" if loader is load_policy else "consortium.toml")
    with pytest.raises(ConfigError) as info:
        loader(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_file_loads(tmp_path: Path) -> None:
    c = load_consortium(_write(tmp_path, GOOD))
    assert c.name == "hospitals" and c.ca_path is None
    assert c.party_names == ["hospital-a", "hospital-b"]
    assert c.roles_of("hospital-a") == ("data holder",)
    assert c.roles_of("hospital-b") == ("data holder", "model owner")
    assert c.address_of("dealer") == "127.0.0.1:7100" and c.all_loopback()
    assert (c.protocol, c.protocol_version, c.protocol_file) == ("logistic-regression", "1", None)
    assert c.parameters == {"epochs": 5, "learning_rate": 0.5}
    assert c.inputs == {"train": "patients", "test": "patients"}
    assert c.reveal[1].name == "weights" and c.reveal[1].to == ("hospital-a",)
    t = c.tables["patients"]
    assert t.types == {"age": "float", "smoker": "categorical", "dose": "int"}
    assert t.encoded_columns == ("age", "smoker=never", "smoker=former", "smoker=current",
                                 "dose")
    assert t.classes == ("benign", "malignant") and t.ranges == {"age": (0.0, 120.0)}
    assert t.as_manifest() == {
        "name": "patients", "features": ["age", "smoker", "dose"], "label": "outcome",
        "classes": ["benign", "malignant"],
        "types": {"age": "float", "dose": "int", "smoker": "categorical"},
        "categories": {"smoker": ["never", "former", "current"]},
        "ranges": {"age": [0.0, 120.0]},
    }
    with pytest.raises(ConfigError, match=r"no party named 'hospital-z'"):
        c.roles_of("hospital-z")


def test_defaults(tmp_path: Path) -> None:
    text = (GOOD.replace('version = "1"\n', "")
            .replace('classes = ["benign", "malignant"]\n', ""))
    c = load_consortium(_write(tmp_path, text))
    assert c.protocol_version is None and c.tables["patients"].classes == (0, 1)
    no_label = text.replace('label = "outcome"\n', "")
    assert load_consortium(_write(tmp_path, no_label)).tables["patients"].label is None


def test_where_names_the_line_of_any_key(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    c = load_consortium(path)
    def at(content: str, nth: int = 1) -> str:
        return f"{path}:{_line(GOOD, content, nth)}"

    assert c.where("protocol", "parameters", "epochs") == at("epochs = 5")
    assert c.where("reveal", 1, "to") == at('to = ["hospital-a"]')
    assert c.where("reveal", 1) == at("[[reveal]]", 2)
    assert c.where("tables", "patients", "types", "dose") == at('dose = "int"')
    # a key that is not written falls back to its table's header
    params = _line(GOOD, "[protocol.parameters]")
    assert c.where("protocol", "parameters", "batch_size") == f"{path}:{params}"
    assert c.where("nothing") == str(path)


CASES = [
    # (old text, new text, the line to point at in the edited text, its occurrence, message)
    ('address = "127.0.0.1:7102"', 'address = "nowhere"', 'address = "nowhere"', 1,
     r"\[\[parties\]\] #2: address 'nowhere' is not host:port"),
    ('address = "127.0.0.1:7102"', 'address = "10.0.0.2:0"', 'address = "10.0.0.2:0"', 1,
     r"port 0 \(assigned at launch\) is only allowed on a loopback host"),
    ('address = "127.0.0.1:7102"', 'address = "127.0.0.1:70000"',
     'address = "127.0.0.1:70000"', 1, r"is not host:port"),
    ('address = "127.0.0.1:7100"', 'address = "127.0.0.1:7101"', 'address = "127.0.0.1:7101"', 2,
     r"the dealer: address '127.0.0.1:7101' is already hospital-a's"),
    ('name = "hospital-b"', 'name = "hospital-a"', 'name = "hospital-a"', 2,
     r"\[\[parties\]\] #2: party 'hospital-a' is listed twice"),
    ('name = "hospital-b"', 'name = "Hospital B"', 'name = "Hospital B"', 1,
     r"party name 'Hospital B' must be lowercase"),
    ('name = "hospital-b"', 'name = "dealer"', 'name = "dealer"', 1, r"and not 'dealer'"),
    ('roles = ["data holder", "model owner"]', "roles = []", "roles = []", 1,
     r"'roles' must list at least one role"),
    ('roles = ["data holder", "model owner"]', 'roles = ["data holder", ""]',
     'roles = ["data holder", ""]', 1, r"each role must be a non-empty string"),
    ('address = "127.0.0.1:7102"\n', "", "[[parties]]", 2,
     r"\[\[parties\]\] #2: 'address' is missing"),
    ('to = ["hospital-a"]', 'to = ["hospital-z"]', 'to = ["hospital-z"]', 1,
     r"\[\[reveal\]\] #2 'weights': recipient 'hospital-z' is not a party"),
    ('name = "weights"', 'name = "metrics"', 'name = "metrics"', 2,
     r"\[\[reveal\]\] #2: output 'metrics' is declared twice"),
    ('label = "outcome"', 'label = "age"', 'label = "age"', 1, r"label 'age' is also a feature"),
    ('dose = "int"', 'dose = "text"', 'dose = "text"', 1,
     r"\[tables\.patients\.types\]: 'dose' has type 'text'; use one of float, int, binary, "
     r"categorical"),
    ('dose = "int"', 'outcome = "binary"', 'outcome = "binary"', 1,
     r"'outcome' is the label; its values are given by 'classes'"),
    ('dose = "int"', 'weight = "int"', 'weight = "int"', 1, r"'weight' is not a feature"),
    ('dose = "int"', 'dose = "categorical"', 'dose = "categorical"', 1,
     r"categorical column 'dose' needs its values in \[tables\.patients\.categories\]"),
    ('smoker = ["never", "former", "current"]',
     'smoker = ["never", "former", "current"]\ndose = ["low"]', 'dose = ["low"]', 1,
     r"'dose' is of type 'int'; categories are for categorical features only"),
    ('smoker = ["never", "former", "current"]',
     'smoker = [\n  "never",\n  "former",\n  "never",\n]', '  "never",', 2,
     r"category of 'smoker' 'never' is listed twice"),
    ('classes = ["benign", "malignant"]', 'classes = ["benign", "benign"]',
     'classes = ["benign", "benign"]', 1, r"class 'benign' is listed twice"),
    ('classes = ["benign", "malignant"]', "classes = [1]", "classes = [1]", 1,
     r"'classes' must list at least 2 classes"),
    ('classes = ["benign", "malignant"]', 'classes = [0, "one"]', 'classes = [0, "one"]', 1,
     r"'classes' must be all integers or all strings"),
    ('classes = ["benign", "malignant"]', "classes = [true, false]", "classes = [true, false]", 1,
     r"class True must be an integer or a string"),
    ("age = [0, 120]", "age = [120, 0]", "age = [120, 0]", 1,
     r"\[tables\.patients\.ranges\]: 'age' must be \[low, high\]"),
    ("age = [0, 120]", "smoker = [0, 2]", "smoker = [0, 2]", 1,
     r"'smoker' is categorical; it has no range"),
    ("age = [0, 120]", "weight = [0, 2]", "weight = [0, 2]", 1, r"'weight' is not a feature"),
    ('features = ["age", "smoker", "dose"]', 'features = ["age", "smoker", "dose", "age"]',
     'features = ["age", "smoker", "dose", "age"]', 1, r"feature column 'age' is listed twice"),
    ('features = ["age", "smoker", "dose"]', 'feature = ["age", "smoker", "dose"]',
     'feature = ["age", "smoker", "dose"]', 1, r"\[tables\.patients\]: unknown key 'feature'"),
    ('test = "patients"', 'test = "holdout"', 'test = "holdout"', 1,
     r"\[protocol\.inputs\]: 'test' = 'holdout' is not a declared table \(tables: patients\)"),
    ('version = "1"', "version = 1", "version = 1", 1,
     r"\[protocol\]: 'version' must be a string, got 1"),
    ('version = "1"', 'file = "missing.py"', 'file = "missing.py"', 1,
     r"protocol file 'missing.py' not found"),
    ('name = "hospitals"', 'name = "Hospitals!"', 'name = "Hospitals!"', 1,
     r"\[consortium\]: name 'Hospitals!' must be lowercase"),
    ("epochs = 5", "epochs = = 5", "epochs = = 5", 1, r"not valid TOML: "),
]


@pytest.mark.parametrize(("old", "new", "at", "nth", "message"), CASES,
                         ids=[c[1].splitlines()[0] if c[1] else "missing" for c in CASES])
def test_errors_name_the_exact_line(tmp_path: Path, old: str, new: str, at: str, nth: int,
                                    message: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    got = _error(tmp_path, text)
    line = _line(text, at, nth)
    assert got.startswith(f"{tmp_path}/consortium.toml:{line}: "), got
    assert re.search(message, got), got


def test_duplicate_party_points_at_the_duplicate(tmp_path: Path) -> None:
    text = GOOD + '\n[[parties]]\nname = "hospital-a"\naddress = "127.0.0.1:7109"\n'
    got = _error(tmp_path, text)
    line = _line(text, 'name = "hospital-a"', 2)
    assert got.startswith(f"{tmp_path}/consortium.toml:{line}: ")
    assert "[[parties]] #3: party 'hospital-a' is listed twice" in got


def test_reveal_error_points_at_the_entry_not_the_comment_above(tmp_path: Path) -> None:
    text = GOOD.replace('to = ["hospital-a", "hospital-b"]', 'to = ["hospital-a", "nobody"]')
    got = _error(tmp_path, text)
    line = _line(text, 'to = ["hospital-a", "nobody"]')
    assert text.splitlines()[line - 4].startswith("#")  # a comment sits above the entry
    assert got.startswith(f"{tmp_path}/consortium.toml:{line}: [[reveal]] #1 'metrics': "
                          "recipient 'nobody' is not a party")


def test_retired_schema_table_says_what_to_write(tmp_path: Path) -> None:
    text = GOOD + '\n[schema]\nfeatures = ["age"]\nlabel = "outcome"\n'
    got = _error(tmp_path, text)
    assert got.startswith(f"{tmp_path}/consortium.toml:{_line(text, '[schema]')}: ")
    assert "'schema' is no longer supported" in got and "[tables.NAME]" in got


def test_party_count_and_missing_tables(tmp_path: Path) -> None:
    one = GOOD.replace('[[parties]]\nname = "hospital-b"', '[[nobody]]\nname = "hospital-b"')
    got = _error(tmp_path, one)
    assert "unknown key 'nobody'" in got
    second = ('[[parties]]\nname = "hospital-b"\naddress = "127.0.0.1:7102"\n'
              'roles = ["data holder", "model owner"]\n')
    only_a = GOOD.replace(second, "").replace(', "hospital-b"]', "]")
    got = _error(tmp_path, only_a)
    assert re.search(r"consortium\.toml:5: 1 parties: smpc runs 2 to 8", got), got
    no_dealer = GOOD.replace('[dealer]\naddress = "127.0.0.1:7100"\n', "")
    assert _error(tmp_path, no_dealer).endswith("consortium.toml: consortium file: 'dealer' is "
                                                "missing")


def test_port_zero_on_loopback_is_assigned_at_launch(tmp_path: Path) -> None:
    text = GOOD.replace(":7101", ":0").replace(":7102", ":0").replace(":7100", ":0")
    c = load_consortium(_write(tmp_path, text))
    assert [p.address for p in c.parties] == ["127.0.0.1:0", "127.0.0.1:0"]
    assert load_consortium(_write(tmp_path, text.replace("127.0.0.1:0", "[::1]:0"))).all_loopback()


def test_protocol_file_beside_the_consortium_is_absolute(tmp_path: Path) -> None:
    (tmp_path / "proto").mkdir()
    (tmp_path / "proto" / "mine.py").write_text("NAME = 'mine'\n")
    text = GOOD.replace('version = "1"', 'version = "1"\nfile = "proto/mine.py"')
    c = load_consortium(_write(tmp_path, text))
    assert c.protocol_file == tmp_path / "proto" / "mine.py"
    assert c.protocol_file is not None and c.protocol_file.is_absolute()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_consortium(tmp_path / "nope.toml")


# ---- policies ---------------------------------------------------------------------------------

def test_good_policy(tmp_path: Path) -> None:
    path = _write(tmp_path, POLICY, "policy.toml")
    p = load_policy(path)
    assert isinstance(p, Policy)
    assert p.party == "hospital-a" and p.max_rows == 500
    assert p.data == {"train": tmp_path / "a-train.csv", "test": Path("/abs/a-test.csv")}
    assert p.accept_protocols == ("logistic-regression",) and p.accept_reveal == ("metrics",)
    assert (p.key, p.cert) == (None, None)
    test_line = _line(POLICY, 'test = "/abs/a-test.csv"')
    assert p.where("data", "test") == f"{path}:{test_line}"
    assert p.where("accept", "nothing") == f"{path}:{_line(POLICY, '[accept]')}"
    keyed = load_policy(_write(tmp_path, 'key = "k.pem"\ncert = "../c.pem"\n' + POLICY,
                               "policy.toml"))
    assert keyed.key == tmp_path / "k.pem"
    assert keyed.cert == Path(str(tmp_path.parent / "c.pem"))
    bare = load_policy(_write(tmp_path, 'party = "hospital-b"\n', "policy.toml"))
    assert (bare.data, bare.max_rows, bare.accept_reveal) == ({}, DEFAULT_MAX_ROWS, ())
    nothing = load_policy(_write(tmp_path, 'party = "hospital-b"\n[accept]\nreveal = []\n',
                                 "policy.toml"))
    assert nothing.accept_reveal == ()


@pytest.mark.parametrize(("old", "new", "at", "message"), [
    ('max_rows = 500', 'max_rows = 0', 'max_rows = 0', r"'max_rows' must be at least 1"),
    ('max_rows = 500', 'max_rows = true', 'max_rows = true', r"'max_rows' must be an integer"),
    ('party = "hospital-a"', 'party = 3', 'party = 3', r"'party' must be a string"),
    ('train = "a-train.csv"', 'train = ""', 'train = ""', r"\[data\]: 'train' is an empty path"),
    ('reveal = ["metrics"]', 'reveal = "metrics"', 'reveal = "metrics"',
     r"\[accept\]: 'reveal' must be a list"),
    ('reveal = ["metrics"]', 'reveal = ["metrics", "metrics"]', 'reveal = ["metrics", "metrics"]',
     r"\[accept\]: output name 'metrics' is listed twice"),
    ('[accept]', '[accepts]', '[accepts]', r"policy: unknown key 'accepts'"),
])
def test_policy_errors_name_the_line(tmp_path: Path, old: str, new: str, at: str,
                                     message: str) -> None:
    text = POLICY.replace(old, new)
    got = _error(tmp_path, text, load_policy)
    assert got.startswith(f"{tmp_path}/policy.toml:{_line(text, at)}: "), got
    assert re.search(message, got), got


def test_old_policy_forms_say_what_to_write(tmp_path: Path) -> None:
    old = 'party = "hospital-a"\ndata = "a.csv"\n'
    got = _error(tmp_path, old, load_policy)
    assert got.startswith(f"{tmp_path}/policy.toml:2: policy: 'data' is now a table")
    assert "[data] then train = 'a.csv'" in got
    got = _error(tmp_path, 'party = "hospital-a"\ntest_data = "t.csv"\n', load_policy)
    assert got.startswith(f"{tmp_path}/policy.toml:2: policy: 'test_data' is no longer "
                          "supported: name each protocol input's file in a [data] table")


# ---- the shipped files ------------------------------------------------------------------------

@pytest.mark.parametrize("folder", ["examples/hospitals", "docker"])
def test_shipped_consortium_files_and_policies_load(folder: str) -> None:
    c = load_consortium(ROOT / folder / "consortium.toml")
    assert isinstance(c, Consortium) and len(c.parties) == 3
    assert c.inputs == {"train": "patients", "test": "patients"}
    table = c.tables["patients"]
    assert (table.label, table.classes, len(table.features)) == ("malignant", (0, 1), 30)
    assert set(table.ranges) == set(table.features)
    for party in c.party_names:
        policy = load_policy(ROOT / folder / "policies" / f"{party}.toml")
        assert policy.party == party and set(policy.data) == set(c.inputs)
        assert {r.name for r in c.reveal} <= set(policy.accept_reveal)  # and other consortia's
