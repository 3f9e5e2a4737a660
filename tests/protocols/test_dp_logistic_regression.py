"""dp-logistic-regression: the hospitals DP consortium end to end (accuracy, epsilon spent, the
baselines, the exported model), delta refused against the public row count, and the
per-example gradient bound the accountant relies on."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from parties.consortium.config import load_consortium, load_policy
from parties.consortium.manifest import check_parameters, resolve_inputs, resolve_protocol
from parties.node import party
from protocols.horizontal import dp_logistic_regression as dplr
from tests.conftest import run_smpc
from tests.support import PARTIES, all_stop_naming, copy_example, edit, node_commands, run_nodes

ROOT = Path(__file__).resolve().parents[2]
CONSORTIUM = ROOT / "examples" / "hospitals" / "consortium-dp.toml"


@pytest.fixture(scope="module")
def dp_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`smpc local examples/hospitals/consortium-dp.toml --json out.json`, once."""
    folder = tmp_path_factory.mktemp("hospitals-dp")
    proc = run_smpc(["local", str(CONSORTIUM), "--json", str(folder / "out.json")], folder, 400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((folder / "out.json").read_text())
    data["stdout"], data["folder"] = proc.stdout, folder
    return data


def test_local_run_reports_accuracy_epsilon_spent_and_baselines(dp_result: dict[str, Any]
                                                                ) -> None:
    revealed = dp_result["revealed"]
    m = revealed["metrics"]
    # the plaintext simulation of this configuration gave 0.85-0.94 over 5 noise draws
    assert 0.7 < m["accuracy"] <= 1.0
    assert m["auc"] is None  # with a budget on 'metrics' only noisy counts are released
    assert m["privacy"]["mechanism"] == "laplace"
    assert m["privacy"]["epsilon"] == pytest.approx(1.0) and m["privacy"]["epsilon"] <= 1.0
    spent = revealed["weights"]["privacy"]
    assert 0.99 <= spent["epsilon"] <= 1.0  # the declared target, not exceeded
    assert spent["delta"] == 1e-5 and spent["epsilon_rdp"] > spent["epsilon"]
    assert spent["steps"] == 5 * math.ceil(456 / 64)
    assert spent["sampling_probability"] == pytest.approx(64 / 456)
    by_party = dp_result["revealed_by_party"]
    assert len(by_party["hospital-a"]["weights"]["weights"]) == 31
    assert by_party["hospital-b"]["weights"] is None
    baseline = dp_result["baseline"]
    assert baseline["pooled"]["accuracy"] > 0.85
    assert set(baseline["alone"]) == set(PARTIES)
    assert "MPC (smpc)" in dp_result["stdout"] and "pooled plaintext" in dp_result["stdout"]


def test_exported_model_carries_the_privacy_spent(dp_result: dict[str, Any]) -> None:
    folder = dp_result["folder"] / "out" / "hospitals-dp" / "hospital-a"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["privacy"]["epsilon"] <= 1.0
    model = torch.nn.Linear(meta["in_features"], 1)
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    want = dp_result["revealed_by_party"]["hospital-a"]["weights"]["weights"]
    assert model.bias.item() == pytest.approx(want[-1], abs=1e-6)


def test_delta_not_below_one_over_rows_stops_every_party(tmp_path: Path) -> None:
    base = copy_example(tmp_path)
    consortium = edit(base / "consortium-dp.toml", ("delta = 1e-5", "delta = 0.005"))
    commands = node_commands(dict.fromkeys([*PARTIES, "dealer"], consortium),
                             {p: base / "policies" / f"{p}.toml" for p in PARTIES})
    run = run_nodes(commands, timeout=120)
    all_stop_naming(run, "'weights': delta 0.005 is not below 1/rows = 1/456")
    assert not any("epoch" in line for node in run.nodes.values() for line in node.lines)


def _tables() -> tuple[dict[str, list[Any]], Any]:
    consortium = load_consortium(CONSORTIUM)
    protocol = resolve_protocol(consortium)
    inputs = resolve_inputs(consortium, protocol)
    tables: dict[str, list[Any]] = {}
    for name in consortium.party_names:
        policy = load_policy(CONSORTIUM.parent / "policies" / f"{name}.toml")
        loaded = party.load_inputs(consortium, policy, name, protocol, inputs)
        for key, table in party.plain_tables(consortium, inputs, loaded).items():
            tables.setdefault(key, []).append(table)
    return tables, check_parameters(consortium, protocol)


@pytest.mark.parametrize("bound", [1.0, 0.3, 0.0])
def test_every_example_gradient_is_within_the_bound(bound: float) -> None:
    """||c_i (sigmoid(w.x_i) - y_i) x_i|| <= C for every hospital row and random weights;
    with C = sqrt(columns + 1) (bound 0) no row is scaled."""
    tables, _ = _tables()
    x = torch.cat([t.features for t in tables["train"]])
    y = torch.cat([t.labels for t in tables["train"]])
    c = bound or math.sqrt(x.shape[1] + 1)
    _, backward, _ = dplr._prepared(x, y, c, 1.0, "exact")
    design = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()
    generator = torch.Generator().manual_seed(5)
    for _ in range(20):
        w = torch.randn(x.shape[1] + 1, 1, generator=generator, dtype=torch.float64) * 10
        err = torch.sigmoid(design @ w) - y.double()
        norms = (backward.double() * err).norm(dim=1)
        assert norms.max() <= c * (1 + 1e-6)
    if not bound:
        assert torch.allclose(backward.double(), design, atol=1e-6)  # nothing clipped
    else:
        assert (backward.double().norm(dim=1) < design.norm(dim=1) - 1e-6).any()


def test_plaintext_twin_follows_the_joint_seed_and_learns() -> None:
    tables, params = _tables()
    one = dplr.plaintext(tables, params, b"a" * 32, None)
    assert one == dplr.plaintext(tables, params, b"a" * 32, None)
    assert one["weights"] != dplr.plaintext(tables, params, b"b" * 32, None)["weights"]
    assert one["metrics"]["accuracy"] > 0.85
    assert sum(map(sum, dplr.plaintext(tables, params, b"a" * 32, 2)["metrics"]
                   ["confusion_matrix"])) == 113  # alone: same test rows
