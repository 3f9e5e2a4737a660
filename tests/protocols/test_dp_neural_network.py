"""dp-neural-network: per-example clipping on shares against float64 (each clipped norm within
the bound, the clipped sum equal to Opacus-style clipping), the epsilon from the accountant,
a short digits DP run end to end, and the bad inputs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from protocols.api import ParameterError
from protocols.blocks import accounting, approximations
from protocols.neural import dp_network, per_example
from tests.conftest import run_smpc
from tests.engine.harness import run_parties
from tests.protocols.digits import BANKS, DIGITS, digits_copy
from tests.support import edit

ROWS = 120  # training rows per bank in the end-to-end run (40 test rows each)


def _mlp(seed: int, hidden: int = 16) -> torch.nn.Module:
    sys.path.insert(0, str(DIGITS))
    try:
        from models import MLP  # the consortium's class, as a bank would import it
    finally:
        sys.path.remove(str(DIGITS))
    torch.manual_seed(seed)
    return MLP(hidden=hidden)


def test_per_example_clipping_on_shares_holds_the_bound_and_matches_float64() -> None:
    """Two parties and the dealer: 24 rows through the MLP 64-16-10 with weights scaled up so
    that about half of the examples' gradient norms exceed C = 2 (some beyond 64 C); the
    norms computed on shares equal float64's (relative 1 %), every clipped norm c_i ||g_i|| is
    at most C, and the clipped sum equals float64's sum of min(1, C/||g_i||) g_i within 2 %
    + fixed point."""
    model = _mlp(5)
    with torch.no_grad():
        model.fc1.weight.mul_(3.0)
    generator = torch.Generator().manual_seed(11)
    x = torch.rand(24, 64, generator=generator)
    x[:3] *= 200  # rows far outside [0, 1]: norms beyond 64 C, dropped
    x[2:4] *= 4
    y = torch.randint(0, 10, (24,), generator=generator)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    bound = 2.0

    def party(comm: object) -> dict[str, Any]:
        import crypten

        graph = crypten.nn.from_pytorch(model, torch.empty(2, 64)).encrypt(src=0)
        layers = per_example.instrument(graph)
        graph.train()
        for p in graph.parameters():
            p.requires_grad = False
        scores = graph(crypten.cryptensor(x, src=0))
        with crypten.no_grad():
            p_, _, _ = approximations.softmax_gradient(scores, 1, 8)
            signal = p_ - crypten.cryptensor(onehot, src=1)
        scores.backward(signal)
        with crypten.no_grad():
            norms = per_example.norms_squared(layers)
            factors = per_example.clip_factors(norms, bound)
            sums = per_example.clipped_gradient_sum(layers, factors)
            return {"norms2": norms.squared.get_plain_text().double().reshape(-1),
                    "sizes": norms.sizes.get_plain_text().double(),
                    "factors": factors.get_plain_text().double().reshape(-1),
                    "signal": signal.get_plain_text().double(),
                    "sums": {k.removesuffix(".data"): v.get_plain_text().double()
                             for k, v in sums.items()}}

    got = run_parties(2, party, refuse_openings=False, timeout=240)[0]
    twin = model.double()
    grads = per_example.per_example_gradients(twin, x.double(), got["signal"])
    want, norms = per_example.clipped_sum_plain(grads, bound)
    big = norms < 64 * bound  # the examples the secure clipping keeps (and below)
    assert (norms > bound).sum() >= 6 and (~big).sum() >= 1  # clipping is exercised
    assert torch.allclose(got["norms2"][big], norms[big] ** 2, rtol=0.01, atol=1e-3)
    layers = got["sizes"].shape[1] // 2
    limits = torch.tensor([per_example.DELTA_LIMIT] * layers + [per_example.INPUT_LIMIT] * layers,
                          dtype=torch.float64)
    in_range = (got["sizes"] < limits).all(1)  # no term of u_i can wrap the ring
    assert not in_range[:2].any()  # rows 200x outside [0, 1]: dropped whatever their gradient
    big &= in_range
    clipped_norms = got["factors"] * norms
    assert clipped_norms.max() <= bound, clipped_norms.max()
    assert torch.all(got["factors"][~big] == 0)
    assert torch.all(got["factors"][big & (norms < 0.95 * bound)] > 0.985)  # not clipped
    # the secure sum leaves the dropped examples out: compare with float64's without them
    kept = {k: g[big] for k, g in grads.items()}
    want, _ = per_example.clipped_sum_plain(kept, bound)
    for name, value in want.items():
        diff = (got["sums"][name] - value).abs().max()
        assert diff <= 0.02 * value.abs().max() + 1e-3, (name, float(diff))


@pytest.fixture(scope="module")
def dp_digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """examples/digits/consortium-dp.toml shortened: two banks of 120 rows, 2 epochs."""
    folder = tmp_path_factory.mktemp("digits-dp")
    consortium = digits_copy(folder, "consortium-dp.toml", banks=2, rows=ROWS)
    edit(consortium, ("epochs = 5", "epochs = 2"))
    proc = run_smpc(["local", str(consortium), "--json", str(folder / "out.json")], folder, 600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((folder / "out.json").read_text())
    data["stdout"], data["folder"] = proc.stdout, folder
    return data


def test_digits_dp_run_reports_the_epsilon_of_the_accountant(dp_digits: dict[str, Any]) -> None:
    spent = dp_digits["revealed"]["model"]["privacy"]
    q, steps = 64 / (2 * ROWS), 2 * math.ceil(2 * ROWS / 64)
    assert spent["steps"] == steps and spent["sampling_probability"] == pytest.approx(q)
    assert spent["epsilon"] <= 8.0 and spent["delta"] == 1e-5
    event = accounting.dp_sgd_event(spent["noise_multiplier"], q, steps)
    assert spent["epsilon"] == pytest.approx(accounting.epsilon(event, 1e-5))
    assert spent["epsilon_rdp"] == pytest.approx(accounting.epsilon(event, 1e-5, "rdp"))
    assert spent["epsilon"] > 7.9  # calibrated to the target, not far below it
    assert spent["max_grad_norm"] == 1.0
    m = dp_digits["revealed"]["metrics"]
    assert len(m["confusion_matrix"]) == 10
    assert sum(map(sum, m["confusion_matrix"])) == pytest.approx(2 * ROWS // 3, abs=0.5)
    assert m["accuracy"] > 0.2  # ten classes: 0.1 by chance; 4 noisy steps on 240 rows
    assert set(dp_digits["baseline"]["alone"]) == set(BANKS[:2])
    assert dp_digits["revealed_by_party"]["bank-south"]["model"] is None


def test_the_exported_dp_model_loads_into_the_class(dp_digits: dict[str, Any]) -> None:
    folder = dp_digits["folder"] / "out" / "digits-dp" / "bank-north"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["privacy"]["epsilon"] <= 8.0 and meta["model"] == "models.py:MLP"
    model = _mlp(0, **meta["model_args"])
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    state = dp_digits["revealed"]["model"]["state_dict"]
    assert model.fc2.bias.tolist() == pytest.approx(state["fc2.bias"], abs=1e-6)


def test_bad_dp_network_parameters_are_refused_before_connecting() -> None:
    base = {"model": "models.py:MLP"}
    cases = [({"max_grad_norm": 0.0}, "parameter 'max_grad_norm': must be a number > 0"),
             ({"max_grad_norm": -1.0}, "parameter 'max_grad_norm': must be a number > 0"),
             ({"model": "models.py:CNN"}, "layer 'conv' (Conv2d) is not supported with "
                                          "DP-SGD")]
    assert dp_network.PROTOCOL.parameters(base, DIGITS).max_grad_norm == 1.0
    for raw, message in cases:
        with pytest.raises(ParameterError) as info:
            dp_network.PROTOCOL.parameters({**base, **raw}, DIGITS)
        assert message in str(info.value), (raw, str(info.value))


def test_a_delta_not_below_one_over_rows_stops_every_party(tmp_path: Path) -> None:
    consortium = digits_copy(tmp_path, "consortium-dp.toml", banks=2, rows=40)
    edit(consortium, ("delta = 1e-5", "delta = 0.02"))
    proc = run_smpc(["local", str(consortium)], tmp_path, 300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "'model': delta 0.02 is not below 1/rows = 1/80" in text, text
    assert "bank-south: exit" in text and "dealer: exit" in text
