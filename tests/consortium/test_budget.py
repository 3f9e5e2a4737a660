"""Privacy budgets in the agreement: (epsilon, delta) on a DP output's [[reveal]] entry, checked
with the consortium's line; [accept] max_epsilon in a policy; the manifest and `smpc manifest`."""

from __future__ import annotations

from pathlib import Path

import pytest

from parties.consortium import manifest
from parties.consortium.config import ConfigError, load_consortium, load_policy
from tests.conftest import run_smpc

ROOT = Path(__file__).resolve().parents[2]

DP = """\
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
name = "dp-logistic-regression"

[tables.patients]
features = ["age", "dose"]
label = "outcome"
classes = [0, 1]

[[reveal]]
name = "metrics"
to = ["hospital-a", "hospital-b"]

[[reveal]]
name = "weights"
to = ["hospital-a"]
epsilon = 1.0
delta = 1e-5
"""

POLICY = """\
party = "hospital-b"

[data]
train = "b.csv"

[accept]
protocols = ["dp-logistic-regression", "logistic-regression"]
reveal = ["metrics", "weights"]
max_epsilon = {weights = 0.5}
"""


def _write(tmp_path: Path, text: str, name: str = "consortium.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_budget_is_read_and_goes_into_the_manifest(tmp_path: Path) -> None:
    c = load_consortium(_write(tmp_path, DP))
    assert [(r.name, r.epsilon, r.delta) for r in c.reveal] == [("metrics", None, None),
                                                                  ("weights", 1.0, 1e-5)]
    m = manifest.build(c)
    assert m["budget"] == {"weights": {"epsilon": 1.0, "delta": 1e-5}}
    other = manifest.build(load_consortium(_write(tmp_path, DP.replace(
        "epsilon = 1.0", "epsilon = 2.0"), "other.toml")))
    with pytest.raises(manifest.ManifestError, match=r"field 'budget\.weights\.epsilon'"):
        manifest.compare(m, other, "hospital-b")


@pytest.mark.parametrize(("old", "new", "needle", "message"), [
    ("epsilon = 1.0", "epsilon = 0", "epsilon = 0", "epsilon must be a number > 0, got 0"),
    ("epsilon = 1.0", "epsilon = -2.5", "epsilon = -2.5", "epsilon must be a number > 0"),
    ("delta = 1e-5", "delta = 1.0", "delta = 1.0", "delta must be a number >= 0 and < 1"),
    ("delta = 1e-5", "delta = \"small\"", "delta = ", "'delta' must be an integer or a number"),
    ("delta = 1e-5\n", "", "epsilon = 1.0", "needs both epsilon and delta; 'epsilon' is given"),
])
def test_a_budget_out_of_range_names_the_line(tmp_path: Path, old: str, new: str, needle: str,
                                             message: str) -> None:
    text = DP.replace(old, new)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_consortium(path)
    assert str(err.value).startswith(f"{path}:{_line(text, needle)}: [[reveal]] #2 'weights'")
    assert message in str(err.value)


def test_a_dp_output_without_a_budget_is_refused(tmp_path: Path) -> None:
    text = DP.replace("epsilon = 1.0\ndelta = 1e-5\n", "")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        manifest.build(load_consortium(path))
    header = _line(text, 'name = "weights"') - 1  # its [[reveal]] line
    assert str(err.value).startswith(f"{path}:{header}:")
    assert "reveals 'weights' with differential privacy: give this [[reveal]] its budget" in \
        str(err.value)


def test_a_budget_on_an_output_without_dp_is_refused(tmp_path: Path) -> None:
    text = DP.replace('name = "dp-logistic-regression"', 'name = "logistic-regression"')
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        manifest.build(load_consortium(path))
    assert str(err.value).startswith(f"{path}:{_line(text, 'epsilon = 1.0')}:")
    assert "'weights' is not differentially private" in str(err.value)


def test_max_epsilon_below_the_target_names_both_numbers_and_both_lines(tmp_path: Path) -> None:
    consortium = load_consortium(_write(tmp_path, DP))
    m = manifest.build(consortium)
    path = _write(tmp_path, POLICY, "policy.toml")
    policy = load_policy(path)
    assert policy.max_epsilon == {"weights": 0.5}
    public = manifest.policy_objection(m, policy, "hospital-b")
    assert public == ("its policy accepts epsilon <= 0.5 for 'weights'; the consortium asks "
                      "epsilon = 1 (field budget.weights.epsilon)")
    assert str(path) not in public  # the peers learn the numbers, not where the file is
    refusal = manifest.budget_refusal(m, policy, consortium)
    assert refusal is not None and refusal[0] == public
    assert refusal[1] == (f"{path}:{_line(POLICY, 'max_epsilon')}: the policy accepts epsilon "
                          f"<= 0.5 for 'weights', but {consortium.path}:"
                          f"{_line(DP, 'epsilon = 1.0')} asks epsilon = 1")
    relaxed = load_policy(_write(tmp_path, POLICY.replace("0.5", "1.0"), "relaxed.toml"))
    assert manifest.policy_objection(m, relaxed, "hospital-b") is None


def test_max_epsilon_refuses_an_output_revealed_without_dp(tmp_path: Path) -> None:
    plain = DP.replace('name = "dp-logistic-regression"', 'name = "logistic-regression"')
    m = manifest.build(load_consortium(_write(tmp_path, plain.replace(
        "epsilon = 1.0\ndelta = 1e-5\n", ""))))
    policy = load_policy(_write(tmp_path, POLICY, "policy.toml"))
    assert "accepts 'weights' only with differential privacy, epsilon <= 0.5" in \
        manifest.policy_objection(m, policy, "hospital-b")


@pytest.mark.parametrize("value", ["0", "-1", "\"high\"", "true"])
def test_a_bad_max_epsilon_names_the_policy_line(tmp_path: Path, value: str) -> None:
    text = POLICY.replace("{weights = 0.5}", f"{{weights = {value}}}")
    path = _write(tmp_path, text, "policy.toml")
    with pytest.raises(ConfigError, match=f"^{path}:{_line(text, 'max_epsilon')}: \\[accept\\]: "
                                          "max_epsilon for 'weights' must be a number > 0"):
        load_policy(path)


def test_smpc_manifest_prints_the_budget(tmp_path: Path) -> None:
    proc = run_smpc(["manifest", str(ROOT / "examples" / "hospitals" / "consortium-dp.toml")],
                    tmp_path, 60)
    assert proc.returncode == 0, proc.stderr
    assert ("weights -> hospital-a (differential privacy: epsilon 1, delta 1e-05)"
            in proc.stdout)
    assert "metrics -> hospital-a, hospital-b, hospital-c (differential privacy: epsilon 1, " \
           "delta 0)" in proc.stdout


@pytest.mark.parametrize("name", ["consortium-dp.toml", "consortium-federated.toml"])
def test_the_hospitals_dp_and_federated_consortia_fit_the_shipped_policies(name: str) -> None:
    c = load_consortium(ROOT / "examples" / "hospitals" / name)
    m = manifest.build(c)
    for party in c.party_names:
        policy = load_policy(ROOT / "examples" / "hospitals" / "policies" / f"{party}.toml")
        assert manifest.policy_objection(m, policy, party) is None
