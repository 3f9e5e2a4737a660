"""Vertical tables: which party holds which columns, who holds the label, the identifier
column; the manifest covers them; each bad setting or file is one line naming where."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from parties.consortium import manifest
from parties.consortium.config import ConfigError, load_consortium, load_policy
from parties.node import party as party_node
from tests.conftest import run_smpc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bank-insurer-retailer"
BANK = ["income_k", "balance_k", "credit_lines", "overdraft_days", "card_spend_k", "loan_k",
        "savings_rate_pct", "tenure_years"]


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example (consortium, policies, data), certificates left out."""
    target = tmp_path / "example"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("*.py", "certs"))
    return target


def _edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return path


def _line(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)


def test_the_schema_says_who_holds_what(example: Path) -> None:
    table = load_consortium(example / "consortium.toml").tables["customers"]
    assert table.layout == "columns" and table.label_holder == "bank"
    assert list(table.holders) == ["bank", "insurer", "retailer"]
    assert list(table.features[:8]) == BANK and len(table.features) == 20
    assert table.view("bank").features == tuple(BANK) and table.view("bank").label == "defaulted"
    insurer = table.view("insurer")
    assert insurer.label is None and len(insurer.features) == 6
    assert set(insurer.ranges) == set(insurer.features)
    assert table.owners()["defaulted"] == "bank" and table.owners()["basket_eur"] == "retailer"


def test_the_manifest_covers_the_layout(example: Path) -> None:
    consortium = load_consortium(example / "consortium.toml")
    built = manifest.build(consortium)
    layout = built["tables"]["customers"]["layout"]
    assert layout["columns"]["bank"] == BANK and layout["label_holder"] == "bank"
    assert ["intersection_size", ["bank", "insurer", "retailer"]] in built["reveal"]
    moved = _edit(example / "consortium.toml", '"basket_eur", ', "")
    moved = _edit(moved, 'insurer = ["claims_5y"', 'insurer = ["basket_eur", "claims_5y"')
    other = manifest.build(load_consortium(moved))
    with pytest.raises(manifest.ManifestError, match=r"tables\.customers"):
        manifest.compare(built, other, "retailer")


@pytest.mark.parametrize(("old", "new", "line_of", "message"), [
    ('retailer = ["basket_eur"', 'shop = ["basket_eur"', 'shop = [',
     "'shop' is not a party"),
    ('retailer = ["basket_eur"', 'retailer = ["income_k"', 'retailer = [',
     "column 'income_k' is already 'bank''s"),
    ('label_holder = "bank"\n', "", 'label = "defaulted"', "label needs its holder"),
    ('label_holder = "bank"', 'label_holder = "broker"', "label_holder",
     "label holder 'broker' is not a party"),
    ('label_holder = "bank"', 'label_holder = "bank"\nfeatures = ["x"]', "features = [",
     "give either 'features'"),
    ('retailer = ["basket_eur", "visits_month", "online_share_pct", "returns_pct",\n'
     '            "loyalty_points_k", "discount_use_pct"]\n', "", "[tables.customers.columns]",
     "party 'retailer' holds no column"),
    ('label_holder = "bank"', 'label_holder = "bank"\nidentifier = "income_k"', "identifier =",
     "identifier 'income_k' must be a column name that is neither"),
])
def test_bad_vertical_tables_name_their_line(example: Path, old: str, new: str, line_of: str,
                                             message: str) -> None:
    path = _edit(example / "consortium.toml", old, new)
    with pytest.raises(ConfigError) as err:
        load_consortium(path)
    assert str(err.value).startswith(f"{path}:{_line(path, line_of)}: "), str(err.value)
    assert message in str(err.value)


def test_intersection_size_goes_to_everyone_or_nobody(example: Path) -> None:
    path = _edit(example / "consortium.toml",
                 'name = "intersection_size"\nto = ["bank", "insurer", "retailer"]',
                 'name = "intersection_size"\nto = ["bank"]')
    with pytest.raises(ConfigError, match="goes to every party or, left out") as err:
        manifest.build(load_consortium(path))
    line = _line(path, 'name = "intersection_size"') + 1
    assert str(err.value).startswith(f"{path}:{line}:")
    hospitals = ROOT / "examples" / "hospitals" / "consortium.toml"
    horizontal = example / "h.toml"
    horizontal.write_text(hospitals.read_text() + '\n[[reveal]]\nname = "intersection_size"\n'
                          'to = ["hospital-a", "hospital-b", "hospital-c"]\n')
    with pytest.raises(ConfigError, match="has no output 'intersection_size'"):
        manifest.build(load_consortium(horizontal))


def test_a_policy_may_refuse_to_reveal_the_intersection_size(example: Path) -> None:
    consortium = load_consortium(example / "consortium.toml")
    built = manifest.build(consortium)
    policy = _edit(example / "policies" / "retailer.toml", ', "intersection_size"]', "]")
    assert manifest.policy_objection(built, load_policy(policy), "retailer") == (
        "its policy does not accept revealing 'intersection_size' (field reveal)")
    left_out = _edit(example / "consortium.toml",
                     '[[reveal]]\nname = "intersection_size"\nto = ["bank", "insurer", '
                     '"retailer"]\n', "")
    assert manifest.policy_objection(manifest.build(load_consortium(left_out)),
                                     load_policy(policy), "retailer") is None


def _data_error(example: Path, party: str) -> str | None:
    prepared = party_node.prepare_party(example / "consortium.toml", party,
                                        example / "policies" / f"{party}.toml", tls=False)
    return prepared.data_error


def test_the_example_loads_identifiers_and_own_columns(example: Path) -> None:
    prepared = party_node.prepare_party(example / "consortium.toml", "insurer",
                                        example / "policies" / "insurer.toml", tls=False)
    assert prepared.data_error is None
    table = party_node.plain_tables(prepared.consortium, prepared.inputs, prepared.loaded,
                                    "insurer")["train"]
    assert table.layout == "columns" and table.labels is None
    assert table.features.shape == (len(table.identifiers or ()), 6)
    assert len(set(table.identifiers or ())) == len(table.identifiers or ()) > 3000
    assert table.pooled_columns[:8] == tuple(BANK)
    bank = party_node.plain_tables(prepared.consortium, prepared.inputs, party_node.prepare_party(
        example / "consortium.toml", "bank", example / "policies" / "bank.toml",
        tls=False).loaded, "bank")["train"]
    assert bank.labels is not None and bank.features.shape[1] == 8


def test_duplicate_identifiers_are_named_with_their_lines(example: Path) -> None:
    data = example / "data" / "insurer.csv"
    lines = data.read_text().splitlines()
    ident = lines[3].split(",")[0]
    lines.insert(10, ",".join([ident, *lines[10].split(",")[1:]]))  # line 11 repeats line 4's
    data.write_text("\n".join(lines) + "\n")
    assert _data_error(example, "insurer") == (
        f"{data}:11: column 'client_ref': identifier '{ident}' appears again (first on line "
        "4); each row needs its own identifier")


def test_missing_empty_and_foreign_columns(example: Path) -> None:
    data = example / "data" / "retailer.csv"
    text = data.read_text()
    data.write_text(text.replace("loyalty_id,", "member,", 1))
    assert _data_error(example, "retailer") == (
        f"{data}:1: identifier column 'loyalty_id' is missing (the header has: member, "
        "basket_eur, visits_month, online_share_pct, returns_pct, loyalty_points_k, "
        "discount_use_pct)")
    lines = text.splitlines()
    lines[5] = "," + lines[5].split(",", 1)[1]
    data.write_text("\n".join(lines) + "\n")
    assert _data_error(example, "retailer") == (
        f"{data}:6: identifier column 'loyalty_id' is empty")
    data.write_text(text.replace("loyalty_id,", "loyalty_id,income_k,", 1)
                    .replace("\ncust-", "\ncust-", 1))
    lines = [ln if i == 0 else ln.replace(",", ",50,", 1)
             for i, ln in enumerate(text.replace("loyalty_id,", "loyalty_id,income_k,", 1)
                                    .splitlines())]
    data.write_text("\n".join(lines) + "\n")
    error = _data_error(example, "retailer") or ""
    assert error.startswith(f"{data}:1: column 'income_k' is held by party 'bank' in table "
                            "'customers', not by this party"), error
    bank = example / "data" / "bank.csv"
    _edit(bank, "customer_id,", "customer_id,basket_eur,")
    assert "column 'basket_eur' is held by party 'retailer'" in (_data_error(example, "bank")
                                                                 or "")
    insurer = example / "data" / "insurer.csv"
    _edit(insurer, "client_ref,", "client_ref,defaulted,")
    assert "column 'defaulted' is held by party 'bank'" in (_data_error(example, "insurer")
                                                           or "")


def test_the_identifier_column_must_be_named(example: Path) -> None:
    policy = _edit(example / "policies" / "bank.toml", 'train = "customer_id"', "")
    with pytest.raises(ConfigError, match="names no identifier column") as err:
        party_node.load_inputs(load_consortium(example / "consortium.toml"), load_policy(policy),
                               "bank", manifest.resolve_protocol(load_consortium(
                                   example / "consortium.toml")), {"train": "customers"})
    assert str(err.value).startswith(f"{policy}:")
    policy.write_text(policy.read_text().replace("[identifiers]", '[identifiers]\ntrain = '
                                                 '"income_k"'))
    with pytest.raises(ConfigError, match="'income_k' is a column of table 'customers'"):
        party_node.load_inputs(load_consortium(example / "consortium.toml"), load_policy(policy),
                               "bank", manifest.resolve_protocol(load_consortium(
                                   example / "consortium.toml")), {"train": "customers"})


def test_smpc_local_stops_on_a_duplicate_before_any_process(example: Path) -> None:
    data = example / "data" / "bank.csv"
    lines = data.read_text().splitlines()
    ident = lines[1].split(",")[0]
    lines.append(",".join([ident, *lines[2].split(",")[1:]]))
    data.write_text("\n".join(lines) + "\n")
    proc = run_smpc(["local", str(example / "consortium.toml"), "--insecure"], example, 60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, proc.stderr
    assert f"{data}:{len(lines)}: column 'customer_id': identifier '{ident}' appears again " \
           "(first on line 2)" in errors[0]
