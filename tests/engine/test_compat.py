"""The CrypTen compatibility fixes for torch 2.13, and its process-wide switches made per thread."""

from __future__ import annotations

import io
import threading
from typing import Any

import torch

from parties.engine import load_crypten


def test_import_works_on_this_torch() -> None:
    crypten = load_crypten()
    assert crypten.mpc.MPCTensor is not None


def test_negative_values_decode_exactly() -> None:
    crypten = load_crypten()
    enc = crypten.encoder.FixedPointEncoder(precision_bits=16)
    steps = torch.arange(-5 * 2**16, 5 * 2**16, 997, dtype=torch.long)
    values = steps.double() / 2**16
    decoded = enc.decode(enc.encode(values.float()))
    assert torch.equal(decoded.double(), values.float().double())
    # the exact cases CrypTen 0.4.1 got wrong by 1.0
    for v in (-1.0, -0.5, -3 + 2**-16, -2**-16, -100.25):
        assert enc.decode(torch.tensor([round(v * 2**16)])).item() == v


def test_crypten_load_reads_what_save_wrote() -> None:
    crypten = load_crypten()
    buf = io.BytesIO()
    torch.save({"w": torch.tensor([1.5, -2.0]), "meta": (1, "x")}, buf)
    buf.seek(0)
    assert crypten.load.__defaults__ is not None
    loader = next(d for d in crypten.load.__defaults__ if callable(d))
    got = loader(buf)
    assert got["meta"] == (1, "x") and torch.equal(got["w"], torch.tensor([1.5, -2.0]))


def test_from_pytorch_uses_the_torchscript_exporter() -> None:
    crypten = load_crypten()
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    secure = crypten.nn.from_pytorch(model, torch.empty(1, 3))
    assert len(list(secure.parameters())) == 2


def _in_thread(fn: Any) -> Any:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(10)
    return out[0]


def test_config_overrides_apply_to_the_calling_thread_only() -> None:
    crypten = load_crypten()
    before = crypten.cfg.functions.exp_iterations
    with crypten.cfg.temp_override({"functions.exp_iterations": before + 5}):
        assert crypten.cfg.functions.exp_iterations == before + 5
        assert _in_thread(lambda: crypten.cfg.functions.exp_iterations) == before
        with crypten.cfg.temp_override({"functions.log_iterations": 7}):
            assert crypten.cfg.functions.exp_iterations == before + 5  # nested: both apply
            assert crypten.cfg.functions.log_iterations == 7
    assert crypten.cfg.functions.exp_iterations == before


def test_crypten_no_grad_applies_to_the_calling_thread_only() -> None:
    crypten = load_crypten()
    with crypten.no_grad():
        assert crypten.CrypTensor.AUTOGRAD_ENABLED is False
        assert _in_thread(lambda: crypten.CrypTensor.AUTOGRAD_ENABLED) is True
    assert crypten.CrypTensor.AUTOGRAD_ENABLED is True
