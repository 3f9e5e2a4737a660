"""crypten.load_from_party without pickle: tensors as before, models by class and shapes.

CrypTen's load_from_party broadcasts the loaded object with its values
zeroed; for a model that means pickling an nn.Module, which smpc's wire
refuses. Here the source party sends only the model's class name and the
shapes and dtypes of its state_dict, through the safe object encoding; every
other party builds the model from the class it passes as `model_class` (the
class the parties agreed on), checks that the names and shapes match, and
zeroes its state, exactly what CrypTen's receivers got. The real weights then
travel only as secret shares (e.g. `crypten.nn.from_pytorch(model, x).encrypt(src=src)`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from parties.engine.compat import load_crypten

_crypten = load_crypten()


class ModelMismatch(TypeError):
    """The source party's model does not match the class this party builds."""


def class_name(model: torch.nn.Module) -> str:
    """'module.QualifiedName' of a model's class."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def describe(model: torch.nn.Module) -> dict[str, Any]:
    """What a receiver needs to rebuild `model` with zeros: its class and state shapes."""
    return {"model": class_name(model),
            "state": {k: [list(v.shape), str(v.dtype).removeprefix("torch.")]
                      for k, v in model.state_dict().items()}}


def build_zeroed(description: Any, model_class: Callable[[], torch.nn.Module] | None,
                 src: int) -> torch.nn.Module:
    """`model_class()` with every parameter and buffer zeroed, checked against `description`."""
    if not isinstance(description, dict) or not isinstance(description.get("model"), str) \
            or not isinstance(description.get("state"), dict):
        raise ModelMismatch(f"party {src} sent a malformed model description")
    if model_class is None:
        raise ModelMismatch(f"party {src} sends a model of class {description['model']}: pass "
                            "model_class= (the class every party agreed on) to load_from_party")
    model = model_class()
    if class_name(model) != description["model"]:
        raise ModelMismatch(f"party {src} sends a {description['model']}, model_class builds "
                            f"a {class_name(model)}")
    mine = describe(model)["state"]
    theirs = {k: list(v) if isinstance(v, tuple) else v for k, v in description["state"].items()}
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ModelMismatch(f"party {src}'s {description['model']} differs from model_class's "
                            f"in {', '.join(diff[:3])}")
    with torch.no_grad():
        for t in model.state_dict().values():
            t.zero_()
    return model


def _trusted_load(f: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("weights_only", False)  # a file this party wrote itself
    return torch.load(f, **kwargs)


def load_from_party(f: Any = None, preloaded: Any = None, encrypted: bool = False,
                    model_class: Callable[[], torch.nn.Module] | None = None, src: int = 0,
                    load_closure: Callable[..., Any] = _trusted_load, **kwargs: Any) -> Any:
    """CrypTen's load_from_party with models sent as class + shapes (no pickle).

    The source party loads `f` (or takes `preloaded`). A tensor is secret-shared
    from it (the others receive only its shape); a model is returned as it is on
    the source and as `model_class()` with zeroed state elsewhere.
    """
    if encrypted:
        raise NotImplementedError("loading encrypted tensors is not supported (as in CrypTen)")
    comm = _crypten.communicator.get()
    if not isinstance(src, int) or not 0 <= src < comm.get_world_size():
        raise ValueError(f"load_from_party: src {src!r} is not a rank "
                         f"0..{comm.get_world_size() - 1}")
    if comm.get_rank() == src:
        if (f is None) == (preloaded is None):
            raise ValueError("load_from_party: give exactly one of f and preloaded")
        result = preloaded if f is None else load_closure(f, **kwargs)
        if torch.is_tensor(result):
            comm.broadcast_obj({"tensor": list(result.size())}, src)
        elif isinstance(result, torch.nn.Module):
            comm.broadcast_obj(describe(result), src)
        else:
            comm.broadcast_obj({"unsupported": type(result).__name__}, src)
            raise TypeError("load_from_party loads tensors and models, not "
                            f"{type(result).__name__}")
    else:
        got = comm.broadcast_obj(None, src)
        if isinstance(got, dict) and "unsupported" in got:
            raise TypeError(f"party {src} loaded a {got['unsupported']}: load_from_party loads "
                            "tensors and models")
        if isinstance(got, dict) and "tensor" in got:
            result = torch.zeros(torch.Size(got["tensor"]))
        else:
            result = build_zeroed(got, model_class, src)
    if torch.is_tensor(result):
        result = _crypten.cryptensor(result, src=src)
    result.src = src
    return result
