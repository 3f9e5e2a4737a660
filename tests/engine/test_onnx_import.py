"""crypten.nn.from_pytorch on torch 2.13: every supported layer's secure forward against
PyTorch's on the same weights and inputs, BatchNorm's repaired graph, unsupported layers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from parties.engine import load_crypten
from parties.engine.onnx_import import UnsupportedLayer, layer_name, to_onnx
from parties.engine.reveal import allow_openings
from tests.engine.harness import run_parties

# Fixed point has 16 fractional bits; products add truncation errors of a few units of
# 2^-16, BatchNorm's inverse square root and softmax's exp and reciprocal are
# approximations (CrypTen's), hence the looser rows.
TOLERANCE = 5e-3
LOOSE = {"batchnorm1d train": 3e-2, "batchnorm2d train": 3e-2, "batchnorm1d eval": 2e-2,
         "batchnorm2d eval": 2e-2, "softmax": 1e-2, "logsoftmax": 3e-2}


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class SmallCNN(nn.Module):
    """Conv, BatchNorm, ReLU, pooling, flatten, dropout, linear: the digits CNN's layers."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.bn(self.conv(x.view(-1, 1, 8, 8)))))
        return self.fc(self.drop(torch.flatten(h, 1)))


def _cases() -> dict[str, tuple[nn.Module, torch.Tensor, bool]]:
    """name -> (model with fixed weights, input, train mode)."""
    torch.manual_seed(7)
    image = torch.randn(4, 2, 6, 6)
    rows = torch.randn(8, 6)
    cases = {
        "linear": (nn.Linear(6, 3), rows, False),
        "linear without bias": (nn.Linear(6, 3, bias=False), rows, False),
        "conv2d": (nn.Conv2d(2, 3, 3, stride=1, padding=1), image, False),
        "relu": (nn.ReLU(), rows, False),
        "maxpool2d": (nn.MaxPool2d(2), image, False),
        "avgpool2d": (nn.AvgPool2d(2), image, False),
        "batchnorm1d train": (nn.BatchNorm1d(6), rows * 2 + 1, True),
        "batchnorm2d train": (nn.BatchNorm2d(2), image * 2 + 1, True),
        "dropout eval": (nn.Dropout(0.5), rows, False),
        "dropout train": (nn.Dropout(0.5), torch.randn(64, 6), True),
        "flatten": (nn.Sequential(nn.Flatten(), nn.Linear(72, 2)), image, False),
        "softmax": (nn.Softmax(dim=1), rows, False),
        "logsoftmax": (nn.LogSoftmax(dim=1), rows, False),
        "residual add": (Residual(), rows, False),
    }
    for name, kind, shape in (("batchnorm1d eval", nn.BatchNorm1d, rows),
                              ("batchnorm2d eval", nn.BatchNorm2d, image)):
        bn = kind(shape.shape[1])
        with torch.no_grad():  # trained statistics, not the defaults
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        cases[name] = (bn, shape, False)
    for model, _, train in cases.values():
        model.train(train)
    return cases


CASES = _cases()  # built once: parties in threads share torch's global generator


def _case(name: str) -> tuple[nn.Module, torch.Tensor, bool]:
    """A fresh copy of a case (a BatchNorm forward in training mode moves its statistics)."""
    model, x, train = CASES[name]
    return copy.deepcopy(model), x, train


CNN = SmallCNN(dropout=0.0).train()  # in training mode: BatchNorm on the batch's statistics


def _secure_forwards(comm: Any) -> dict[str, torch.Tensor]:
    from parties.engine import context

    crypten = load_crypten()
    context.use_public_seed(bytes(32))  # dropout's masks are public draws
    out = {}
    for name in CASES:
        model, x, _ = _case(name)
        secure = crypten.nn.from_pytorch(model, torch.empty_like(x)).encrypt(src=0)
        y = secure(crypten.cryptensor(x, src=1))
        with allow_openings():
            out[name] = y.get_plain_text()
            if name == "batchnorm2d train":
                out["running_var"] = next(b for n, b in secure.named_buffers()
                                          if n.startswith("running_var")).get_plain_text()
    secure = crypten.nn.from_pytorch(copy.deepcopy(CNN), torch.empty(2, 64)).encrypt(src=0)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(3))
    y = secure(crypten.cryptensor(x, src=1))
    with allow_openings():
        out["cnn train"] = y.get_plain_text()
    return out


@pytest.fixture(scope="module")
def forwards() -> dict[str, torch.Tensor]:
    return run_parties(2, _secure_forwards, timeout=120)[0]


@pytest.mark.parametrize("name", [n for n in CASES if n != "dropout train"])
def test_secure_forward_matches_pytorch(forwards: dict[str, torch.Tensor], name: str) -> None:
    model, x, _ = _case(name)
    with torch.no_grad():
        expected = model(x)
    error = float((forwards[name] - expected).abs().max())
    assert error <= LOOSE.get(name, TOLERANCE), f"{name}: max error {error}"


def test_batchnorm_trains_its_own_running_statistics(forwards: dict[str, torch.Tensor]
                                                     ) -> None:
    model, x, _ = _case("batchnorm2d train")
    with torch.no_grad():
        model(x)  # PyTorch updates the running statistics in training mode
    assert torch.allclose(forwards["running_var"], model.running_var, atol=2e-2)
    assert not torch.allclose(model.running_var, torch.ones(2))  # it moved from 1


def test_cnn_with_batchnorm_in_training_mode(forwards: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        expected = copy.deepcopy(CNN)(torch.randn(6, 64, generator=torch.Generator()
                                                  .manual_seed(3)))
    assert float((forwards["cnn train"] - expected).abs().max()) <= 3e-2


def test_dropout_in_training_mode_drops_and_rescales(forwards: dict[str, torch.Tensor]) -> None:
    _, x, _ = _case("dropout train")
    y = forwards["dropout train"]
    kept = (y - 2 * x).abs() < 1e-3  # kept elements are scaled by 1/(1 - p)
    dropped = y.abs() < 1e-3
    assert bool((kept | dropped).all())
    # the mask is public randomness from the joint seed: each element is dropped with
    # probability 1/2; 384 elements leave [0.3, 0.7] with probability below 1e-14
    assert 0.3 < float(dropped.float().mean()) < 0.7


def test_shared_initializers_become_separate_parameters() -> None:
    load_crypten()
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[0].bias.zero_()
        model[2].bias.zero_()  # two equal biases: the exporter keeps one plus an Identity
    ops = [n.op_type for n in to_onnx(model, torch.empty(2, 4)).graph.node]
    assert "Identity" in ops  # what CrypTen cannot take
    crypten = load_crypten()
    secure = crypten.nn.from_pytorch(model, torch.empty(2, 4))
    params = {n.removesuffix(".data") for n, _ in secure.named_parameters()}
    buffers = {n.removesuffix(".data") for n, _ in secure.named_buffers()}
    assert params == {k for k, _ in model.named_parameters()}
    assert buffers == {"3.running_mean", "3.running_var"}


def test_an_unsupported_layer_is_named_with_the_supported_list() -> None:
    crypten = load_crypten()

    class WithGelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(x))

    with pytest.raises(UnsupportedLayer) as info:
        crypten.nn.from_pytorch(WithGelu(), torch.empty(2, 4))
    message = str(info.value)
    assert message.startswith("layer 'act' (GELU) has no secure implementation (it computes "
                              "ONNX ")
    assert "Linear, Conv2d, ReLU, MaxPool2d" in message and "\n" not in message


def test_layer_names_come_from_the_node_scope() -> None:
    assert layer_name("/block/fc1/Gemm") == "block.fc1"
    assert layer_name("/Relu") == ""
