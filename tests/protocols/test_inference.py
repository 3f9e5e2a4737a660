"""Private inference: hospital-a's model from the hospitals run scores clinic-d's rows
(examples/inference) as plaintext PyTorch does; a digits MLP scores two banks' rows, each
bank learning only its own; the model owner learns nothing undeclared; bad weights and a
table that does not fit the model are refused, one line each."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from parties.consortium.config import load_consortium
from parties.consortium.manifest import check_parameters, resolve_protocol
from parties.node import party
from protocols.inference.prediction import SCORE_TOLERANCE
from tests.conftest import run_smpc
from tests.support import edit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inference"
DIGITS = ROOT / "examples" / "digits"


def copy_inference(tmp: Path, model: Path | None = None) -> Path:
    """examples/inference in `tmp` (hospital-a's weights from `model` when given)."""
    target = tmp / "inference"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("certs", "out",
                                                                  "__pycache__"))
    if model is not None:
        shutil.copy(model, target / "model" / "hospital-a.pt")
    return target


def twin(consortium_path: Path) -> dict[str, Any]:
    """The protocol's plaintext twin on every party's files, as `smpc local` reads them."""
    consortium = load_consortium(consortium_path)
    protocol = resolve_protocol(consortium)
    inputs: dict[str, list[Any]] = {}
    for name in consortium.party_names:
        prepared = party.prepare_party(consortium_path, name, consortium_path.parent /
                                       "policies" / f"{name}.toml", tls=False)
        assert prepared.data_error is None, prepared.data_error
        own = {**party.plain_tables(consortium, prepared.inputs, prepared.loaded, name),
               **prepared.states}
        for key, value in own.items():
            inputs.setdefault(key, []).append(value)
    params = check_parameters(consortium, protocol)
    return protocol.plaintext(inputs, params, bytes(32), None)


def assert_same_predictions(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Class for class; every probability within SCORE_TOLERANCE of float64 PyTorch's."""
    assert got["class"] == want["class"]
    if "probabilities" in want:
        diff = torch.tensor(got["probabilities"]) - torch.tensor(want["probabilities"])
        assert float(diff.abs().max()) <= SCORE_TOLERANCE


@pytest.fixture(scope="session")
def clinic_run(local_result: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, Any]:
    """examples/inference with the model the session's hospitals run gave hospital-a."""
    folder = tmp_path_factory.mktemp("inference")
    model = local_result["folder"] / "out" / "hospitals" / "hospital-a" / "model.pt"
    base = copy_inference(folder, model)
    proc = run_smpc(["local", str(base / "consortium.toml"), "--json",
                     str(folder / "out.json")], folder, 300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((folder / "out.json").read_text())
    data["folder"], data["base"], data["stdout"] = folder, base, proc.stdout
    return data


def test_the_hospitals_model_scores_the_clinic_as_plaintext_pytorch(
        clinic_run: dict[str, Any]) -> None:
    want = twin(clinic_run["base"] / "consortium.toml")["predictions"][1]  # clinic-d: rank 1
    got = clinic_run["revealed_by_party"]["clinic-d"]["predictions"]
    assert len(got["class"]) == 40 and set(got["class"]) == {"benign", "malignant"}
    assert_same_predictions(got, want)
    rows = list(csv.reader((clinic_run["folder"] / "out" / "inference" / "clinic-d" /
                            "predictions.csv").open()))
    assert rows[0] == ["row", "class", "probability:benign", "probability:malignant"]
    assert [r[1] for r in rows[1:]] == got["class"]


def test_the_model_owner_learns_nothing_it_did_not_declare(clinic_run: dict[str, Any]) -> None:
    owner = clinic_run["revealed_by_party"]["hospital-a"]
    assert owner and all(v is None for v in owner.values()), owner
    assert not (clinic_run["folder"] / "out" / "inference" / "hospital-a").exists()


# ---------------------------------------------------------------- a digits MLP, two banks

def _digits_inference(tmp: Path, rows: int = 30) -> Path:
    """A lab's trained MLP scores two banks' digits (class only); the class counts go to all."""
    base = tmp / "digits-inference"
    (base / "policies").mkdir(parents=True)
    (base / "data").mkdir()
    shutil.copy(DIGITS / "models.py", base / "models.py")
    text = (DIGITS / "consortium.toml").read_text()
    table = text[text.index("[tables.digits]"):]
    table = table.replace('label = "digit"\nclasses = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n', "")
    (base / "consortium.toml").write_text(
        '[consortium]\nname = "digits-inference"\nca = ""\n\n'
        '[[parties]]\nname = "lab"\naddress = "127.0.0.1:0"\nroles = ["model owner"]\n\n'
        '[[parties]]\nname = "bank-north"\naddress = "127.0.0.1:0"\n\n'
        '[[parties]]\nname = "bank-south"\naddress = "127.0.0.1:0"\n\n'
        '[dealer]\naddress = "127.0.0.1:0"\n\n'
        '[protocol]\nname = "inference"\n\n[protocol.parameters]\nmodel = "models.py:MLP"\n'
        'model_args = {hidden = 32}\n\n[protocol.inputs]\nrows = "digits"\n\n'
        '[[reveal]]\nname = "predictions"\nto = ["bank-north", "bank-south"]\n\n'
        '[[reveal]]\nname = "class_counts"\nto = ["lab", "bank-north", "bank-south"]\n\n'
        + table)
    accept = '[accept]\nprotocols = ["inference"]\nreveal = ["predictions", "class_counts"]\n'
    (base / "policies" / "lab.toml").write_text(
        f'party = "lab"\n\n[data]\nmodel = "../mlp.pt"\n\n{accept}')
    for bank, keep in (("bank-north", rows), ("bank-south", rows // 2)):
        lines = (DIGITS / "data" / f"{bank}-test.csv").read_text().splitlines()[:keep + 1]
        (base / "data" / f"{bank}.csv").write_text("\n".join(lines) + "\n")
        (base / "policies" / f"{bank}.toml").write_text(
            f'party = "{bank}"\n\n[data]\nrows = "../data/{bank}.csv"\n\n{accept}')
    torch.save(_trained_mlp().state_dict(), base / "mlp.pt")
    return base


def _trained_mlp() -> torch.nn.Module:
    """The digits MLP after 300 full-batch SGD steps in plaintext on one bank's training rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("inference_test_models", DIGITS / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = [r for r in csv.reader((DIGITS / "data" / "bank-north-train.csv").open())][1:]
    x = torch.tensor([[float(v) / 16 for v in r[:-1]] for r in rows])
    y = torch.tensor([int(r[-1]) for r in rows])
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = module.MLP()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(300):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model


def test_two_banks_each_learn_only_their_own_rows_predictions(tmp_path: Path) -> None:
    base = _digits_inference(tmp_path)
    proc = run_smpc(["local", str(base / "consortium.toml"), "--insecure", "--json",
                     str(tmp_path / "out.json")], tmp_path, 300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    want = twin(base / "consortium.toml")
    by_party = out["revealed_by_party"]
    for rank, bank, rows in ((1, "bank-north", 30), (2, "bank-south", 15)):
        got = by_party[bank]["predictions"]
        assert len(got["class"]) == rows and "probabilities" not in got
        assert_same_predictions(got, want["predictions"][rank])
        assert by_party[bank]["class_counts"] == want["class_counts"]
    assert by_party["lab"]["predictions"] is None
    assert by_party["lab"]["class_counts"] == want["class_counts"]
    assert sum(want["class_counts"].values()) == 45 and len(want["class_counts"]) == 10
    assert "MPC (smpc)" in proc.stdout and "pooled plaintext" in proc.stdout


# ---------------------------------------------------------------- bad input

def test_weights_that_do_not_match_the_class_are_refused_before_anything_starts(
        tmp_path: Path) -> None:
    base = copy_inference(tmp_path)
    state = torch.load(base / "model" / "hospital-a.pt", weights_only=True)
    torch.save({"weight": state["weight"], "scale": torch.ones(1)},
               base / "model" / "hospital-a.pt")
    proc = run_smpc(["local", str(base / "consortium.toml")], tmp_path, 120)
    text = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0
    assert "hospital-a.pt: does not match the class torch.nn:Linear: missing bias; " \
           "unexpected scale" in text
    assert len(text.splitlines()) == 1, text


def test_a_model_whose_input_width_differs_from_the_table_is_refused(tmp_path: Path) -> None:
    """The table loses a column (29 encoded columns, the model reads 30): the model owner's
    serving node stops at once, naming both (in a one-shot run the same check, `build`,
    stops every party at the start of its run, before any row is shared)."""
    base = copy_inference(tmp_path)
    edit(base / "consortium.toml", ('  "mean_radius",\n', ""),
         ("mean_radius = [6.282, 30.922]\n", ""))
    proc = run_smpc(["serve", "--consortium", str(base / "consortium.toml"), "--as",
                     "hospital-a", "--policy", str(base / "policies" / "hospital-a.toml"),
                     "--insecure", "--queries", "1"], tmp_path, 120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 3, text
    assert "the table's 29 encoded columns do not fit model torch.nn:Linear" in text
