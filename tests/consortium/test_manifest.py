"""The manifest: a consortium file meets its protocol (errors name the line), and any
difference between two parties' manifests names the field, or the file of code."""

from __future__ import annotations

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

[protocol.parameters]
epochs = 5
learning_rate = 0.5

[tables.patients]
features = ["age", "dose"]
label = "outcome"
classes = [0, 1]

# metrics go to everyone
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


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_manifest_of_a_good_file(tmp_path: Path) -> None:
    m = manifest.build(load_consortium(_write(tmp_path, GOOD)))
    assert m["protocol"]["parameters"]["epochs"] == 5
    assert m["protocol"]["parameters"]["batch_size"] == 32  # defaults are part of the agreement
    assert m["inputs"] == {"train": "patients", "test": "patients"}
    assert "parties/engine/communicator.py" in m["code"]["smpc"]
    assert "protocols/horizontal/logistic_regression.py" in m["code"]["smpc"]
    assert m["code"]["torch"].startswith("2.") and m["code"]["crypten"] == "0.4.1"


@pytest.mark.parametrize(
    ("edit", "needle", "message"),
    [
        (("epochs = 5", 'epochs = "five"'), "epochs =",
         "logistic-regression: parameter 'epochs': must be an integer >= 1, got 'five'"),
        (("learning_rate = 0.5", "learning_rat = 0.5"), "learning_rat",
         "parameter 'learning_rat': is not a parameter of logistic-regression"),
        (('name = "logistic-regression"', 'name = "logistic-regresion"'), "logistic-regresion",
         "unknown protocol 'logistic-regresion' (registered: "),
        (('[[reveal]]\nname = "weights"', '[[reveal]]\nname = "model"'), 'name = "model"',
         "logistic-regression has no output 'model' (its outputs: metrics, weights)"),
        (('name = "logistic-regression"', 'name = "logistic-regression"\nversion = "7"'),
         'version = "7"', "the consortium wants logistic-regression version 7, this "
                          "installation has version 2"),
        (('label = "outcome"\nclasses = [0, 1]\n', ""), "[tables.patients]",
         "input 'train' needs a label column; table 'patients' declares none"),
    ],
)
def test_consortium_and_protocol_must_fit(tmp_path: Path, edit: tuple[str, str], needle: str,
                                          message: str) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        manifest.build(load_consortium(path))
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:{_line(path.read_text(), needle)}:")


def test_an_output_without_a_reveal_is_refused_unless_optional(tmp_path: Path) -> None:
    no_metrics = GOOD.replace('# metrics go to everyone\n[[reveal]]\nname = "metrics"\n'
                              'to = ["hospital-a", "hospital-b"]\n', "")
    with pytest.raises(ConfigError, match=r"reveals 'metrics' .*, but no \[\[reveal\]\] says "
                                          r"to whom"):
        manifest.build(load_consortium(_write(tmp_path, no_metrics)))
    no_weights = GOOD.split('[[reveal]]\nname = "weights"')[0]
    m = manifest.build(load_consortium(_write(tmp_path, no_weights, "b.toml")))
    assert m["reveal"] == [["metrics", ["hospital-a", "hospital-b"]]]  # weights: optional


def test_difference_names_the_field(tmp_path: Path) -> None:
    mine = manifest.build(load_consortium(_write(tmp_path, GOOD)))
    other = manifest.build(load_consortium(_write(tmp_path, GOOD.replace("epochs = 5",
                                                                         "epochs = 6"), "b.toml")))
    assert manifest.digest(mine) != manifest.digest(other)
    with pytest.raises(manifest.ManifestError,
                       match=r"differs from party 'hospital-b' in field "
                             r"'protocol\.parameters\.epochs': here 5, there 6"):
        manifest.compare(mine, other, "hospital-b")
    fewer = manifest.build(load_consortium(_write(tmp_path, GOOD.split(
        '[[reveal]]\nname = "weights"')[0], "c.toml")))
    with pytest.raises(manifest.ManifestError, match="field 'reveal'"):
        manifest.compare(mine, fewer, "hospital-b")
    manifest.compare(mine, dict(mine), "hospital-b")


def test_code_difference_names_the_first_differing_file(tmp_path: Path) -> None:
    mine = manifest.build(load_consortium(_write(tmp_path, GOOD)))
    code = {**mine["code"], "smpc": {**mine["code"]["smpc"],
                                     "parties/engine/communicator.py": "0" * 64}}
    with pytest.raises(manifest.ManifestError,
                       match=r"party 'hospital-b' runs different code: file "
                             r"parties/engine/communicator\.py differs"):
        manifest.compare(mine, {**mine, "code": code}, "hospital-b")
    older = {**mine["code"], "crypten": "0.4.0"}
    with pytest.raises(manifest.ManifestError, match=r"field 'code\.crypten'"):
        manifest.compare(mine, {**mine, "code": older}, "hospital-b")


def test_policy_refusals(tmp_path: Path) -> None:
    m = manifest.build(load_consortium(_write(tmp_path, GOOD)))
    policy = load_policy(_write(tmp_path, """\
party = "hospital-a"

[data]
train = "a.csv"

[accept]
protocols = ["logistic-regression"]
reveal = ["metrics"]
""", "policy.toml"))
    assert policy.data["train"] == tmp_path / "a.csv"
    assert "does not accept revealing 'weights'" in manifest.policy_objection(m, policy,
                                                                             "hospital-a")
    assert "is for party 'hospital-a', not 'hospital-b'" in manifest.policy_objection(
        m, policy, "hospital-b")
