"""What start_party installs: the party's CrypTen, tracing refused with the dealer, models
loaded without pickle."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from parties.engine import context, reveal
from parties.engine.communicator import GrpcCommunicator
from parties.engine.models import ModelMismatch
from tests.engine.harness import run_parties


def _attempt(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:  # the message is what the test checks
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_tracing_is_refused_loudly_with_the_dealer() -> None:
    def party(comm: GrpcCommunicator) -> list[str]:
        import crypten

        return [_attempt(crypten.trace), _attempt(crypten.trace_once),
                _attempt(crypten.fill_cache), _attempt(lambda: crypten.trace(False))]

    for trace, once, fill, off in run_parties(2, party):
        assert trace.startswith("NotImplementedError: crypten.trace() is not available with "
                                "the dealer")
        assert once.startswith("NotImplementedError: crypten.trace_once() is not available")
        assert fill.startswith("NotImplementedError: crypten.fill_cache() is not available")
        assert off == "ok"  # turning tracing off is harmless


def test_tracing_still_works_with_the_insecure_tfp_provider() -> None:
    def party(comm: GrpcCommunicator) -> Any:
        import crypten

        crypten.trace()
        x = crypten.cryptensor(torch.tensor([2.0, -1.0]), src=0)
        _ = x * x
        crypten.trace(False)
        crypten.fill_cache()
        provider = crypten.mpc.get_default_provider()
        cached = sum(len(v) for v in provider.tuple_cache.values())
        provider.tuple_cache.clear()
        provider.request_cache.clear()
        return cached

    assert all(cached >= 1 for cached in run_parties(2, party, dealer=False))


class Small(torch.nn.Module):
    """The class every party agreed on."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.register_buffer("scale", torch.full((2,), 7.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


class Other(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)


def _trained() -> Small:
    model = Small()
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.25, 0.0, -1.0]]))
        model.fc.bias.copy_(torch.tensor([0.5, -0.5]))
    return model


def test_a_model_loads_from_its_party_without_pickle() -> None:
    x = torch.tensor([[1.0, 2.0, -1.0]])

    def party(comm: GrpcCommunicator) -> Any:
        import crypten

        mine = _trained() if comm.get_rank() == 1 else None
        model = crypten.load_from_party(preloaded=mine, model_class=Small, src=1)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        # the weights travel as secret shares only
        w = crypten.cryptensor(model.fc.weight.detach(), src=1)
        b = crypten.cryptensor(model.fc.bias.detach(), src=1)
        secret_x = crypten.cryptensor(x, src=0)
        y = secret_x.matmul(w.t()) + b
        data = crypten.load_from_party(preloaded=torch.tensor([3.0, -4.0]) if comm.get_rank()
                                       == 0 else None, src=0)
        opened = reveal.open_to([y, data], [[0], [1]])
        return type(model), model.src, state, opened

    got = run_parties(3, party)
    for rank, (cls, src, state, _) in enumerate(got):
        assert cls is Small and src == 1
        if rank == 1:
            assert torch.equal(state["fc.weight"], _trained().fc.weight)
        else:  # the others got the structure, zeroed, buffers too
            assert all(torch.count_nonzero(v) == 0 for v in state.values())
            assert set(state) == {"fc.weight", "fc.bias", "scale"}
    assert torch.allclose(got[0][3][0], _trained().fc(x), atol=1e-3)
    assert torch.allclose(got[1][3][1], torch.tensor([3.0, -4.0]))


@pytest.mark.parametrize(("model_class", "message"), [
    (None, "ModelMismatch: party 0 sends a model of class tests.engine.test_context.Small: "
           "pass model_class="),
    (Other, "ModelMismatch: party 0 sends a tests.engine.test_context.Small, model_class "
            "builds a tests.engine.test_context.Other"),
])
def test_a_model_of_another_class_is_refused(model_class: Any, message: str) -> None:
    def party(comm: GrpcCommunicator) -> str:
        import crypten

        mine = _trained() if comm.get_rank() == 0 else None
        return _attempt(lambda: crypten.load_from_party(preloaded=mine, model_class=model_class,
                                                        src=0))

    got = run_parties(2, party)
    assert got[0] == "ok"
    assert got[1].startswith(message)
    assert issubclass(ModelMismatch, TypeError)


def test_crypten_outside_a_started_party_says_so() -> None:
    run_parties(2, lambda comm: None)  # the engine is installed, no party left running
    import crypten

    with pytest.raises(context.NotStarted, match="no party is started in this process"):
        crypten.communicator.get()
    with pytest.raises(ValueError, match="provider 'TTP' is not DEALER or TFP"):
        context.start_party(None, None, "TTP")
