"""federated-averaging with a network (the digits MLP): the revealed average equals the
plaintext average of the banks' updates, the multi-class metrics and the exported model match
the twin, no bank's update crosses the wire, a bank with fewer rows than a batch stops every
party, and the distributed-DP bound for networks (each update clipped, sensitivity 2 S n_i/N)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from parties.wire import wire_pb2 as pb
from protocols.api import Budget, ProtocolError, public_generator
from protocols.blocks import accounting, metrics
from protocols.federated import averaging
from protocols.federated.local_network import clipped
from protocols.neural import model as models
from tests.conftest import run_smpc
from tests.node.test_wire_privacy import _payloads
from tests.protocols.digits import BANKS, DIGITS, digits_copy
from tests.protocols.test_federated import _found, _needles, _tables
from tests.support import edit

# One round: later rounds train on from the rounded average, and SGD amplifies the rounding.
ROUNDS, ROWS = 1, 150


@pytest.fixture(scope="module")
def fed_digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two banks (150 training rows each), the MLP, ROUNDS rounds of 8 local epochs; every byte
    each node sends recorded."""
    folder = tmp_path_factory.mktemp("federated-digits")
    consortium = digits_copy(folder, "consortium-federated.toml", banks=2, rows=ROWS)
    edit(consortium, ("rounds = 10", f"rounds = {ROUNDS}"), ("local_epochs = 2",
                                                            "local_epochs = 8"))
    proc = run_smpc(["local", str(consortium), "--json", str(folder / "out.json")], folder, 400,
                    env={"SMPC_WIRE_LOG": str(folder / "wire")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((folder / "out.json").read_text())
    tables, params = _tables(consortium)
    return {"out": out, "folder": folder, "tables": tables, "params": params,
            "seed": bytes.fromhex(out["seed"])}


def test_revealed_average_equals_the_plaintext_average_of_the_updates(
        fed_digits: dict[str, Any]) -> None:
    out, tables, params = fed_digits["out"], fed_digits["tables"], fed_digits["params"]
    want = averaging.plaintext(tables, params, fed_digits["seed"], None)
    got = out["revealed"]["weights"]
    assert got["rounds"] == ROUNDS and got["privacy"] is None
    assert len(got["weights"]) == 64 * 32 + 32 + 32 * 10 + 10
    start = averaging.local_model(params).initial(
        64, models.joint_seed(public_generator(fed_digits["seed"], models.INIT_PURPOSE)))
    moved = np.abs(np.array(want["weights"]["weights"]) - start.numpy()).max()
    assert moved > 0.05  # the rounds did move the joint initial weights
    diff = np.abs(np.array(got["weights"]) - np.array(want["weights"]["weights"]))
    assert diff.max() < 1e-3, diff.max()  # 16-bit fixed point: ~2^-16 per round and bank
    for bank in BANKS[:2]:
        assert out["revealed_by_party"][bank]["weights"]["weights"] == got["weights"]


def test_multiclass_metrics_match_the_twin_and_the_model_loads_into_the_class(
        fed_digits: dict[str, Any]) -> None:
    out, tables, params = fed_digits["out"], fed_digits["tables"], fed_digits["params"]
    m = out["revealed"]["metrics"]
    want = averaging.plaintext(tables, params, fed_digits["seed"], None)["metrics"]
    assert m["accuracy"] == pytest.approx(want["accuracy"], abs=0.011)  # one of 100 rows
    assert len(m["confusion_matrix"]) == 10 and len(m["f1"]) == 10
    assert sum(map(sum, m["confusion_matrix"])) == pytest.approx(100, abs=0.5)
    assert m["accuracy"] > 0.5  # ten classes: 0.1 by chance (the twin: 0.6-0.8)
    assert set(out["baseline"]["alone"]) == set(BANKS[:2])
    folder = fed_digits["folder"] / "out" / "digits-federated" / "bank-north"
    meta = json.loads((folder / "model.json").read_text())
    sys.path.insert(0, str(DIGITS))
    try:
        from models import MLP  # the consortium's class, as a bank would import it
    finally:
        sys.path.remove(str(DIGITS))
    model = MLP(**meta["model_args"])
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    x = torch.cat([t.features for t in tables["test"]])
    y = torch.cat([t.labels for t in tables["test"]]).reshape(-1)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).double().mean())
    assert accuracy == pytest.approx(m["accuracy"], abs=0.011)
    assert meta["class"] == "MLP" and meta["rounds"] == ROUNDS


def test_no_bank_update_appears_on_the_wire(fed_digits: dict[str, Any]) -> None:
    """bank-south's first-round update (weighted and not) and its locally trained model, in
    CrypTen's fixed point, float32 or float64: in none of the bytes bank-south sends."""
    tables, params, seed = fed_digits["tables"], fed_digits["params"], fed_digits["seed"]
    model = averaging.local_model(params)
    mine = tables["train"][1]
    start = model.initial(64, models.joint_seed(public_generator(seed, models.INIT_PURPOSE)))
    local = model.train(start, mine.features, mine.labels, params.local_epochs,
                        params.batch_size, params.learning_rate,
                        averaging._local_order(seed, 1, 0))
    update = (local - start).numpy()
    needles = _needles(np.concatenate([update, update * mine.rows / (2 * ROWS),
                                       local.numpy()]))
    assert len(needles["int64"]) > 1000
    frames = _payloads((fed_digits["folder"] / "wire.bank-south").read_bytes())
    assert frames
    leak = pb.Frame(kind=pb.TENSOR, dtype=pb.INT64, data=needles["int64"][:10].tobytes())
    assert _found([leak], needles) == 10  # the check can fail
    assert _found(frames, needles) == 0


def test_a_bank_with_fewer_rows_than_a_batch_stops_every_party(tmp_path: Path) -> None:
    consortium = digits_copy(tmp_path, "consortium-federated.toml", banks=2, rows=40)
    edit(consortium, ("batch_size = 32", "batch_size = 50"))
    proc = run_smpc(["local", str(consortium)], tmp_path, 300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "party 'bank-north' has 40 training rows, fewer than one batch (batch_size 50)" \
        in text
    assert "bank-south: exit" in text and "dealer: exit" in text


def test_update_clipping_bounds_each_bank_and_sets_the_noise() -> None:
    update = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert clipped(update, 1.0).norm() == pytest.approx(1.0)
    assert torch.equal(clipped(update, 10.0), update)
    params = averaging.PROTOCOL.parameters({"model": "models.py:MLP", "rounds": 5,
                                            "clipping_norm": 0.5}, DIGITS)
    model = averaging.local_model(params)
    std, report = averaging._calibrated(model, None, Budget(8.0, 1e-5), params, 0.35, 1438)
    assert report["sensitivity"] == pytest.approx(2 * 0.5 * 0.35)
    assert std == pytest.approx(report["noise_multiplier"] * 2 * 0.5 * 0.35)
    assert report["epsilon"] <= 8.0 and report["clipping_norm"] == 0.5
    assert report["epsilon"] == pytest.approx(accounting.epsilon(
        accounting.gaussian_event(report["noise_multiplier"], 5), 1e-5))
    unclipped = averaging.PROTOCOL.parameters({"model": "models.py:MLP"}, DIGITS)
    with pytest.raises(ProtocolError, match=r"needs clipping_norm > 0"):
        averaging._calibrated(model, None, Budget(8.0, 1e-5), unclipped, 0.35, 1438)


def test_metrics_from_a_noisy_multiclass_confusion_matrix() -> None:
    """Post-processing of released counts: cells rounded and clamped at 0, then the same
    metrics as the float64 ones of the matrix they stand for."""
    noisy = [[4.6, -1.2, 0.4], [1.3, 2.8, 0.0], [0.0, 0.2, -0.7]]
    got = metrics.from_multiclass_confusion(noisy)
    assert got["confusion_matrix"] == [[5.0, 0.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]
    assert got["accuracy"] == pytest.approx(8 / 9)
    assert got["precision"] == pytest.approx([5 / 6, 1.0, 0.0])
    assert got["recall"] == pytest.approx([1.0, 0.75, 0.0])
    assert got["macro_f1"] == pytest.approx((2 * 5 / 11 + 6 / 7) / 3)
