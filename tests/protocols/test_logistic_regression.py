"""Logistic regression: the hospitals run against its plaintext twin, the exported model,
separate party processes, and the plaintext reference's own rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from parties.consortium.config import load_consortium, load_policy
from parties.consortium.manifest import check_parameters, resolve_inputs, resolve_protocol
from parties.node import party
from protocols.horizontal import logistic_regression as lr
from tests.support import PARTIES, copy_example, edit, on_free_ports

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hospitals"


def test_local_run_matches_pooled_plaintext(local_result: dict[str, Any]) -> None:
    mpc = local_result["revealed"]["metrics"]
    pooled = local_result["baseline"]["pooled"]
    assert abs(mpc["accuracy"] - pooled["accuracy"]) <= 0.01
    assert abs(mpc["auc"] - pooled["auc"]) <= 0.01
    assert mpc["accuracy"] > 0.9
    assert set(local_result["baseline"]["alone"]) == set(PARTIES)
    assert set(mpc) == {"accuracy", "precision", "recall", "f1", "auc", "confusion_matrix"}
    assert sum(map(sum, mpc["confusion_matrix"])) == pytest.approx(113, abs=0.5)
    by_party = local_result["revealed_by_party"]
    assert len(by_party["hospital-a"]["weights"]) == 31  # 30 features + intercept
    assert by_party["hospital-b"]["weights"] is None and by_party["hospital-c"]["weights"] is None
    out = local_result["stdout"]
    assert "MPC (smpc)" in out and "pooled plaintext" in out and "hospital-c alone" in out


def _tables(consortium_path: Path) -> tuple[Any, dict[str, list[Any]], Any]:
    consortium = load_consortium(consortium_path)
    protocol = resolve_protocol(consortium)
    inputs = resolve_inputs(consortium, protocol)
    tables: dict[str, list[Any]] = {}
    for name in consortium.party_names:
        policy = load_policy(consortium_path.parent / "policies" / f"{name}.toml")
        loaded = party.load_inputs(consortium, policy, name, protocol, inputs)
        for key, table in party.plain_tables(consortium, inputs, loaded).items():
            tables.setdefault(key, []).append(table)
    return protocol, tables, check_parameters(consortium, protocol)


def test_exported_model_loads_and_reproduces_the_revealed_accuracy(
        local_result: dict[str, Any]) -> None:
    folder = local_result["folder"] / "out" / "hospitals" / "hospital-a"
    meta = json.loads((folder / "model.json").read_text())
    model = torch.nn.Linear(meta["in_features"], 1)
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    _, tables, _ = _tables(EXAMPLE / "consortium.toml")
    x = torch.cat([t.features for t in tables["test"]])
    y = torch.cat([t.labels for t in tables["test"]])
    with torch.no_grad():
        accuracy = float(((model(x) > 0).float() == y).float().mean())
    assert accuracy == pytest.approx(local_result["revealed"]["metrics"]["accuracy"], abs=0.01)
    assert meta["manifest_digest"] == local_result["manifest_digest"]
    assert meta["columns"][0] == "mean_radius" and meta["classes"] == [0, 1]
    assert not (local_result["folder"] / "out" / "hospitals" / "hospital-b").exists()


def test_plaintext_reference_follows_the_joint_seed() -> None:
    _, tables, params = _tables(EXAMPLE / "consortium.toml")
    one = lr.plaintext(tables, params, b"a" * 32, None)
    again = lr.plaintext(tables, params, b"a" * 32, None)
    assert one == again
    other = lr.plaintext(tables, params, b"b" * 32, None)
    assert one["weights"] != other["weights"]  # another shuffle, another SGD path
    alone = lr.plaintext(tables, params, b"a" * 32, 1)
    assert alone["weights"] != one["weights"]
    assert sum(map(sum, alone["metrics"]["confusion_matrix"])) == 113  # same test rows


def test_without_test_rows_a_fraction_of_the_shuffled_rows_is_held_out() -> None:
    _, tables, params = _tables(EXAMPLE / "consortium.toml")
    no_test = {"train": tables["train"], "test": [t.__class__(t.features[:0], t.labels[:0],
                                                              t.columns, t.classes)
                                                  for t in tables["test"]]}
    got = lr.plaintext(no_test, params, b"a" * 32, None)
    train_rows = sum(t.rows for t in tables["train"])
    held_out = train_rows - lr._training_rows(train_rows, params.test_fraction)
    assert sum(map(sum, got["metrics"]["confusion_matrix"])) == held_out
    assert got["metrics"]["accuracy"] > 0.85


def test_separate_party_processes_match_the_plaintext_twin(tmp_path: Path) -> None:
    """Three `smpc party` commands and a dealer, as three organizations would run them."""
    base = copy_example(tmp_path)
    consortium = on_free_ports(edit(base / "consortium.toml", ("epochs = 10", "epochs = 2")))
    procs = {"dealer": subprocess.Popen(
        [sys.executable, "-m", "parties.cli", "dealer", "--consortium", str(consortium)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)}
    outs = {p: tmp_path / f"{p}.json" for p in PARTIES}
    for p in PARTIES:
        procs[p] = subprocess.Popen(
            [sys.executable, "-m", "parties.cli", "party", "--consortium", str(consortium),
             "--as", p, "--policy", str(base / "policies" / f"{p}.toml"), "--json",
             str(outs[p]), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        for name, proc in procs.items():
            assert proc.wait(timeout=300) == 0, f"{name}: {proc.stdout.read()}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    got = json.loads(outs["hospital-b"].read_text())
    _, tables, params = _tables(consortium)
    want = lr.plaintext(tables, params, bytes.fromhex(got["seed"]), None)["metrics"]
    assert got["revealed"]["metrics"]["accuracy"] == pytest.approx(want["accuracy"], abs=0.01)
    assert got["revealed"]["weights"] is None
    assert json.loads(outs["hospital-a"].read_text())["revealed"]["weights"] is not None
    assert {json.loads(o.read_text())["seed"] for o in outs.values()} == {got["seed"]}
