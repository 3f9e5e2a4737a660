"""CrypTen 0.4.1 on current torch: the import and the fixes it needs.

:func:`load_crypten` imports crypten with every compatibility fix for torch
2.13 applied (a moved ONNX module, torch.load's new weights_only default, the
dynamo exporter, an off-by-one in fixed-point decoding, slow config reads)
and makes CrypTen's two process-wide switches that its operations flip
(config overrides, the autograd switch) per thread, and makes
`crypten.nn.from_pytorch` convert the layers torch 2.13 exports differently
(parties/engine/onnx_import.py). It installs no party state: that is
parties/engine/context.py's job.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import torch

_loaded: types.ModuleType | None = None


def _trusted_torch_load(f: Any, *args: Any, **kwargs: Any) -> Any:
    """`torch.load` for files this party wrote itself (torch>=2.6 defaults to weights_only)."""
    kwargs.setdefault("weights_only", False)
    return torch.load(f, *args, **kwargs)


class _TorchWithTrustedLoad(types.ModuleType):
    """Stand-in for `torch` inside crypten's provider module: only `load` differs."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.load = _trusted_torch_load

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def _alias_onnx_registration() -> None:
    """crypten imports `torch.onnx._internal.registration`, moved in torch 2.9."""
    old = "torch.onnx._internal.registration"
    if old in sys.modules:
        return
    try:
        importlib.import_module(old)
    except ImportError:
        new = importlib.import_module("torch.onnx._internal.torchscript_exporter.registration")
        sys.modules[old] = new


def _fixed_decode(self: Any, tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Exact fixed-point decode: floor quotient plus the non-negative remainder.

    CrypTen 0.4.1 divides negative values by `scale - 1`, which returns some
    negative values off by exactly 1.0.
    """
    if tensor is None:
        return None
    if tensor.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"fixed-point decode needs an integer tensor, got {tensor.dtype}")
    scale = self._scale
    if scale <= 1:
        return tensor.data
    quotient = torch.div(tensor, scale, rounding_mode="floor")
    remainder = tensor - quotient * scale
    return (quotient.float() + remainder.float() / scale).data


def _export_torchscript(f: Any, pytorch_model: Any, dummy_input: Any) -> Any:
    """crypten's ONNX export, pinned to the TorchScript exporter (torch 2.9+ defaults to dynamo)."""
    import warnings

    from torch.onnx import OperatorExportTypes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            pytorch_model,
            dummy_input,
            f,
            do_constant_folding=False,
            export_params=True,
            input_names=["input"],
            operator_export_type=OperatorExportTypes.ONNX,
            output_names=["output"],
            opset_version=17,
            dynamo=False,
        )
    return f


class _ConfigView:
    """Read-only snapshot of one config subtree; attribute writes go through to CrypTen's cfg."""

    __slots__ = ("_cfg", "_data", "_path")

    def __init__(self, cfg: Any, path: str, data: dict[str, Any]) -> None:
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_data", data)

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(f"config has no {self._path}.{name}") from None
        return _ConfigView(self._cfg, f"{self._path}.{name}", value) \
            if isinstance(value, dict) else value

    def __setattr__(self, name: str, value: Any) -> None:
        self._cfg[f"{self._path}.{name}"] = value

    __getitem__ = __getattr__


def _speed_up_config(config_class: type) -> None:
    """Serve CrypTen's config reads from plain-dict snapshots; `temp_override` per thread.

    CrypTen reads its OmegaConf config on every operation; those lookups took
    about an eighth of a training run's time. A snapshot is kept per config
    object (every write replaces the object). `temp_override` (used inside
    CrypTen's approximations) applies to the calling thread only: CrypTen's
    version swaps the process-wide config, which parties running in threads of
    one process (the in-process tests) would see and restore in the wrong order.
    """
    from omegaconf import OmegaConf

    overrides = threading.local()  # .config: this thread's temp_override, if any

    def getattribute(self: Any, name: str) -> Any:
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            pass
        config = getattr(overrides, "config", None)
        if config is None:
            config = object.__getattribute__(self, "config")
        snaps = object.__getattribute__(self, "__dict__").setdefault("_smpc_snapshots", {})
        snap = snaps.get(id(config))
        if snap is None or snap[0] is not config:
            if len(snaps) > 16:
                snaps.clear()
            snap = snaps[id(config)] = (config, OmegaConf.to_container(config, resolve=True))
        value: Any = snap[1]
        path = ""
        for key in name.split("."):
            if not isinstance(value, dict) or key not in value:
                raise AttributeError(f"config has no {name}")
            value = value[key]
            path = f"{path}.{key}" if path else key
        return _ConfigView(self, path, value) if isinstance(value, dict) else value

    @contextlib.contextmanager
    def temp_override(self: Any, override_dict: dict[str, Any]) -> Iterator[None]:
        old = getattr(overrides, "config", None)
        base = old if old is not None else object.__getattribute__(self, "config")
        update = OmegaConf.from_dotlist([f"{k}={v}" for k, v in override_dict.items()])
        overrides.config = OmegaConf.merge(base, update)
        try:
            yield
        finally:
            overrides.config = old

    config_class.__getattribute__ = getattribute  # type: ignore[method-assign]
    config_class.temp_override = temp_override  # type: ignore[attr-defined]


def _autograd_switch_per_thread(cryptensor_class: type) -> None:
    """Make `CrypTensor.AUTOGRAD_ENABLED` (what crypten.no_grad() toggles) a per-thread switch.

    CrypTen keeps it in a class attribute: parties running in threads of one
    process (the in-process tests) would turn autograd off for each other in the
    middle of an operation and take different code paths. Each thread starts
    with autograd on, as CrypTen does.
    """
    state = threading.local()

    def get(cls: type) -> bool:
        return getattr(state, "enabled", True)

    def set_(cls: type, mode: bool) -> None:
        state.enabled = bool(mode)

    type(cryptensor_class).AUTOGRAD_ENABLED = property(get, set_)  # type: ignore[attr-defined]


def load_crypten() -> types.ModuleType:
    """Import crypten with every compatibility fix for current torch applied. Idempotent."""
    global _loaded
    if _loaded is not None:
        return _loaded
    import warnings

    _alias_onnx_registration()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crypten = importlib.import_module("crypten")
        import crypten.mpc.provider.provider as provider_module
        import crypten.nn.onnx_converter as onnx_converter
        from crypten.encoder import FixedPointEncoder

    provider_module.torch = _TorchWithTrustedLoad()
    for fn in (crypten.load, crypten.load_from_party):
        defaults = list(fn.__defaults__ or ())
        fn.__defaults__ = tuple(_trusted_torch_load if d is torch.load else d for d in defaults)
    onnx_converter._export_pytorch_model = _export_torchscript
    from parties.engine import onnx_import

    onnx_import.install(crypten)
    _speed_up_config(type(crypten.cfg))
    _autograd_switch_per_thread(crypten.CrypTensor)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    FixedPointEncoder.decode = _fixed_decode
    _loaded = crypten
    return crypten


@functools.cache
def reduce_ops() -> tuple[Any, Any]:
    """(SUM, BXOR) as CrypTen passes them to communicators."""
    from torch.distributed import ReduceOp

    return ReduceOp.SUM, ReduceOp.BXOR
