"""Consortium files, policies and the manifest: validation with locations, differences named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from parties.consortium import manifest
from parties.consortium.config import ConfigError, load_consortium, load_policy

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

[dealer]
address = "127.0.0.1:7100"

[protocol]
name = "logistic-regression"
version = "1"

[protocol.parameters]
epochs = 5
learning_rate = 0.5

[schema]
features = ["age", "dose"]
label = "outcome"

[schema.types]
outcome = "binary"

[[reveal]]
name = "metrics"
to = ["hospital-a", "hospital-b"]

[[reveal]]
name = "weights"
to = ["hospital-a"]
"""


def _write(tmp_path: Path, text: str, name: str = "consortium.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_file_loads(tmp_path: Path) -> None:
    c = load_consortium(_write(tmp_path, GOOD))
    assert c.party_names == ["hospital-a", "hospital-b"]
    assert c.parameters == {"epochs": 5, "learning_rate": 0.5}
    assert c.reveal[1].to == ("hospital-a",)
    assert c.address_of("dealer") == "127.0.0.1:7100"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("address = \"127.0.0.1:7102\"", "address = \"nowhere\""),
         r"consortium.toml:11: \[\[parties\]\] #2: address 'nowhere' is not host:port"),
        (("name = \"hospital-b\"", "name = \"hospital-a\""), r"'hospital-a' is listed twice"),
        (("to = [\"hospital-a\"]", "to = [\"hospital-z\"]"),
         r"consortium.toml:\d+: \[\[reveal\]\] #2 'weights': recipients \['hospital-z'\]"),
        (("label = \"outcome\"", "label = \"age\""), r"label 'age' is also a feature"),
        (("outcome = \"binary\"", "outcome = \"text\""), r"'outcome' has type 'text'"),
        (("epochs = 5", "epochs = = 5"), r"not valid TOML"),
    ],
)
def test_bad_file_names_file_line_and_field(tmp_path: Path, edit: tuple[str, str],
                                            message: str) -> None:
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError, match=message):
        load_consortium(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_consortium(tmp_path / "nope.toml")


def test_manifest_difference_names_the_field(tmp_path: Path) -> None:
    module = sys.modules[__name__]
    mine = manifest.build(load_consortium(_write(tmp_path, GOOD)), module)
    other = manifest.build(
        load_consortium(_write(tmp_path, GOOD.replace("epochs = 5", "epochs = 6"), "b.toml")),
        module)
    assert manifest.digest(mine) != manifest.digest(other)
    with pytest.raises(manifest.ManifestError,
                       match=r"differs from party 'hospital-b' in field "
                             r"'protocol\.parameters\.epochs': here 5, there 6"):
        manifest.compare(mine, other, "hospital-b")
    fewer = manifest.build(load_consortium(_write(
        tmp_path, GOOD.split("[[reveal]]\nname = \"weights\"")[0], "c.toml")), module)
    with pytest.raises(manifest.ManifestError, match="field 'reveal'"):
        manifest.compare(mine, fewer, "hospital-b")
    code = dict(mine, protocol=dict(mine["protocol"], code_sha256="0" * 64))
    with pytest.raises(manifest.ManifestError, match=r"field 'protocol\.code_sha256'"):
        manifest.compare(mine, code, "hospital-b")
    manifest.compare(mine, dict(mine), "hospital-b")


def test_policy_refusals(tmp_path: Path) -> None:
    m = manifest.build(load_consortium(_write(tmp_path, GOOD)), sys.modules[__name__])
    policy = load_policy(_write(tmp_path, """\
party = "hospital-a"
data = "a.csv"
[accept]
protocols = ["logistic-regression"]
reveal = ["metrics"]
""", "policy.toml"))
    assert policy.data == tmp_path / "a.csv"
    assert "does not accept revealing 'weights'" in manifest.policy_objection(m, policy,
                                                                             "hospital-a")
    assert "is for party 'hospital-a', not 'hospital-b'" in manifest.policy_objection(
        m, policy, "hospital-b")
