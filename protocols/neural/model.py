"""The model a consortium names: a PyTorch class, its arguments, its source files, its layers.

``[protocol.parameters] model = "mlp.py:MLP"`` names the class ``MLP`` in the
file mlp.py beside the consortium file; ``model = "my_package.models:MLP"``
a class in an installed package. ``model_args = {hidden = 32}`` are its
constructor's keyword arguments. The source (the file, or the package) is part
of the manifest's code hash, so every party trains the same architecture.

Initial weights come from the run's joint seed: the class is instantiated
under a torch seed drawn from ``session.generator("model-init")``, so every
party builds the same weights and none chooses them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from protocols.api import ParameterError, Params

REFERENCE = re.compile(r"^(?P<where>[^:\s]+):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
# the layers with a secure implementation (parties/engine/onnx_import.py converts them)
SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm1d,
             nn.BatchNorm2d, nn.Dropout, nn.Flatten, nn.Softmax, nn.LogSoftmax, nn.Identity)
SUPPORTED_NAMES = ("Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, "
                   "Dropout, Flatten, Softmax, LogSoftmax and residual additions (x + f(x))")
INIT_PURPOSE = "model-init"


@dataclass(frozen=True)
class ModelSpec:
    """Where the model class is: a file beside the consortium, or an installed module."""

    reference: str  # as the consortium writes it
    name: str  # the class name
    file: Path | None  # the .py file, for a file beside the consortium
    module: str | None  # the dotted module, for an installed package
    args: dict[str, Any]


def spec(params: Params) -> ModelSpec:
    """The model named by `params.model` and `params.model_args`; ParameterError if malformed."""
    match = REFERENCE.match(params.model)
    if match is None:
        raise ParameterError("model", f"{params.model!r} is not 'file.py:Class' or "
                                      "'package.module:Class'")
    where, name = match["where"], match["name"]
    if where.endswith(".py"):
        folder = params.folder or Path.cwd()
        path = (folder / where).resolve()
        if not path.is_file():
            raise ParameterError("model", f"model file {where} not found (looked for {path})")
        return ModelSpec(params.model, name, path, None, dict(params.model_args))
    return ModelSpec(params.model, name, None, where, dict(params.model_args))


def _import_file(path: Path) -> Any:
    """The module of a model file (imported once per content: a changed file is new)."""
    digest = hashlib.sha256(path.read_bytes() + str(path).encode()).hexdigest()[:16]
    module_name = f"smpc_model_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ParameterError("model", f"model file {path.name} cannot be imported")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ParameterError("model", f"model file {path.name} failed to import: "
                                      f"{type(exc).__name__}: {exc}") from None
    return module


def model_class(s: ModelSpec) -> type[nn.Module]:
    """The class itself; ParameterError when the file or module does not define it."""
    if s.file is not None:
        module = _import_file(s.file)
        where = f"model file {s.file.name}"
    else:
        assert s.module is not None
        try:
            module = importlib.import_module(s.module)
        except ImportError as exc:
            raise ParameterError("model", f"module {s.module} cannot be imported: {exc}") \
                from None
        where = f"module {s.module}"
    cls = getattr(module, s.name, None)
    if cls is None:
        defined = sorted(n for n, v in vars(module).items() if inspect.isclass(v)
                         and issubclass(v, nn.Module) and v.__module__ == module.__name__)
        raise ParameterError("model", f"{where} defines no class '{s.name}' (its models: "
                                      f"{', '.join(defined) or 'none'})")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ParameterError("model", f"'{s.name}' in {where} is not a torch.nn.Module class")
    return cls


def build(s: ModelSpec, seed: int = 0) -> nn.Module:
    """A fresh model, its initial weights drawn by torch under `seed` (other RNG untouched)."""
    cls = model_class(s)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        try:
            model = cls(**s.args)
        except Exception as exc:
            raise ParameterError("model_args", f"{s.name}(**{s.args}) failed: "
                                               f"{type(exc).__name__}: {exc}") from None
    return model


def joint_seed(generator: torch.Generator) -> int:
    """The torch seed of the initial weights, drawn from the joint seed's generator."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def check_layers(model: nn.Module) -> None:
    """ParameterError naming the first layer of PyTorch's own (torch.nn) that has no secure
    implementation. Layers of the model's own code are checked when converted."""
    for name, layer in model.named_modules():
        own = type(layer).__module__.startswith("torch.nn")
        leaf = not any(True for _ in layer.children())
        if own and leaf and not isinstance(layer, SUPPORTED):
            what = f"layer '{name}'" if name else "the model"
            raise ParameterError("model", f"{what} ({type(layer).__name__}) has no secure "
                                          f"implementation (supported: {SUPPORTED_NAMES})")


def sources(params: Params) -> dict[str, Path]:
    """The model's source files by a name every party shares: 'model:mlp.py' for a file,
    'model:package/mod.py' for each file of an installed package (torch's own classes are
    covered by the torch version in the manifest)."""
    s = spec(params)
    if s.file is not None:
        return {f"model:{s.file.name}": s.file}
    assert s.module is not None
    top = s.module.split(".")[0]
    if top == "torch":
        return {}
    try:
        origin = Path(importlib.import_module(top).__file__ or "")
    except ImportError:
        return {}  # refused by validate with the import error
    if origin.name != "__init__.py":
        return {f"model:{origin.name}": origin}
    return {f"model:{top}/{p.relative_to(origin.parent).as_posix()}": p
            for p in sorted(origin.parent.rglob("*.py"))}


def validate(params: Params) -> None:
    """Everything that can be checked before connecting: the class exists, builds with its
    arguments, and holds only supported torch.nn layers (ParameterError otherwise)."""
    check_layers(build(spec(params)))


def scores_layer(model: nn.Module, width: int) -> str | None:
    """The name of a final Softmax/LogSoftmax module whose output is the model's output (its
    input, the class scores, is what training and evaluation use), or None."""
    last: list[tuple[str, Any]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: last.append((n, o)))
             for n, m in model.named_modules() if isinstance(m, nn.Softmax | nn.LogSoftmax)]
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(2, width))
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return next((n for n, o in last if o is out), None)


def without_final_softmax(model: nn.Module, width: int) -> nn.Module:
    """The model with a final Softmax/LogSoftmax replaced by the identity (same parameters)."""
    name = scores_layer(model, width)
    if name is None:
        return model
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return model
