"""The one place that touches CrypTen's globals.

CrypTen 0.4.1 keeps its state in module globals (`crypten.communicator.get()`,
`crypten.mpc.get_default_provider()`, `crypten.generators`, `cfg`). This module
is the only one in smpc that reads or writes them. It

* makes `import crypten` work on torch 2.13 and fixes the known breakages
  (:func:`load_crypten`);
* installs a party's communicator and randomness provider, then runs CrypTen's
  own seed exchange over that communicator (:func:`start_party`);
* replaces CrypTen's Beaver-style protocols with versions that let a dealer's
  correction share arrive while the opening round is on the wire, and, with
  the dealer, its comparison (`_ltz`) and ReLU with the dealer-table comparison
  and bit injection (:func:`_install_beaver`);
* adds a carry-save layer to CrypTen's arithmetic-to-binary conversion
  (:func:`_install_a2b`).

Everything else in smpc calls these functions instead of `crypten.init()`.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from typing import Any

import torch

PROVIDER_DEALER = "DEALER"
PROVIDER_INSECURE_TFP = "TFP"

_loaded: types.ModuleType | None = None
_active: dict[str, Any] = {}


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
    """Serve CrypTen's config reads from a plain-dict snapshot.

    CrypTen reads its OmegaConf config on every operation; those lookups took
    about an eighth of a training run's time. The snapshot is rebuilt whenever
    the config object is replaced (every write and `temp_override` replaces it).
    """
    from omegaconf import OmegaConf

    def getattribute(self: Any, name: str) -> Any:
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            pass
        config = object.__getattribute__(self, "config")
        snap = object.__getattribute__(self, "__dict__").get("_smpc_snapshot")
        if snap is None or snap[0] is not config:
            snap = (config, OmegaConf.to_container(config, resolve=True))
            object.__getattribute__(self, "__dict__")["_smpc_snapshot"] = snap
        value: Any = snap[1]
        path = ""
        for key in name.split("."):
            if not isinstance(value, dict) or key not in value:
                raise AttributeError(f"config has no {name}")
            value = value[key]
            path = f"{path}.{key}" if path else key
        return _ConfigView(self, path, value) if isinstance(value, dict) else value

    config_class.__getattribute__ = getattribute  # type: ignore[method-assign]


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
    _speed_up_config(type(crypten.cfg))
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    FixedPointEncoder.decode = _fixed_decode
    _loaded = crypten
    return crypten


def _communicator_module() -> types.ModuleType:
    return importlib.import_module("crypten.communicator")


def start_party(communicator: Any, provider: Any, provider_name: str) -> types.ModuleType:
    """Install `communicator` and `provider` as CrypTen's, then exchange PRNG seeds over it.

    `provider_name` is PROVIDER_DEALER for a dealer-backed provider, or
    PROVIDER_INSECURE_TFP for CrypTen's trusted-first-party mode (tests only:
    party 0 then knows everyone's randomness).
    """
    crypten = load_crypten()
    comm = _communicator_module()
    _active["communicator"] = communicator
    comm.get = lambda: communicator
    comm.is_initialized = lambda: "communicator" in _active
    comm.uninit = stop_party
    comm._init = lambda *a, **k: None

    providers = vars(crypten.mpc)["__SUPPORTED_PROVIDERS"]
    if provider is not None:
        providers[provider_name] = provider
    crypten.cfg["mpc.provider"] = provider_name
    _install_beaver(crypten)
    _install_a2b()
    communicator.set_name(communicator.get_name())
    crypten._setup_prng()  # CrypTen's own seed exchange, over our channels
    return crypten


def stop_party() -> None:
    """Forget the installed communicator; CrypTen calls fail until the next start_party."""
    _active.pop("communicator", None)


@functools.cache
def reduce_ops() -> tuple[Any, Any]:
    """(SUM, BXOR) as CrypTen passes them to communicators."""
    from torch.distributed import ReduceOp

    return ReduceOp.SUM, ReduceOp.BXOR


# ---------------------------------------------------------------- Beaver protocols
#
# CrypTen's protocols ask the provider for all their material, then open. With
# a dealer, party 0's last share is a correction that crosses the network; the
# versions below ask for it first and collect it after the opening round, so
# the dealer's round trip overlaps the parties' own. With any other provider
# (the insecure TFP test mode) CrypTen's originals run unchanged.

_BEAVER_NAMES = ("__beaver_protocol", "square", "wraps", "AND", "B2A_single_bit")
_originals: dict[str, Any] = {}


def _install_beaver(crypten: types.ModuleType) -> None:
    from crypten.common.util import count_wraps
    from crypten.mpc import MPCTensor
    from crypten.mpc.primitives import ArithmeticSharedTensor as AST
    from crypten.mpc.primitives import BinarySharedTensor as BST
    from crypten.mpc.primitives import beaver as module
    from crypten.mpc.ptype import ptype as ptypes

    from parties.dealer import material as cr

    namespace = vars(module)
    if not _originals:
        _originals.update({n: namespace[n] for n in _BEAVER_NAMES})
        _originals["_ltz"] = MPCTensor._ltz
        _originals["relu"] = MPCTensor.relu
    comm = _communicator_module()
    sum_op, xor_op = reduce_ops()

    def provider() -> Any:
        p = crypten.mpc.get_default_provider()
        return p if hasattr(p, "draw") else None

    def open_batch(shares: list[torch.Tensor], op: Any) -> list[torch.Tensor]:
        return comm.get().all_reduce(shares, op=op, batched=True)

    def beaver_protocol(op: str, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        """[z] = [c] + eps [b] + [a] delta + eps delta; eps = x-a, delta = y-b opened [Bea91]."""
        p = provider()
        if p is None or args or cfg_active_security(crypten):
            return _originals["__beaver_protocol"](op, x, y, *args, **kwargs)
        req = {"size0": x.size(), "size1": y.size(), "op": op, "kwargs": kwargs}
        (a, b), c = p.draw(cr.ADDITIVE, req)
        eps, delta = open_batch([x.share - a, y.share - b], sum_op)
        f = getattr(torch, op)
        z = f(eps, b + delta if x.rank == 0 else b, **kwargs)  # bilinear: one product less
        z += f(a, delta, **kwargs)
        z += c()
        return AST.from_shares(z, precision=0)

    def square(x: Any) -> Any:
        """[x^2] = [r^2] + 2 eps [r] + eps^2 with eps = x - r opened."""
        p = provider()
        if p is None:
            return _originals["square"](x)
        (r,), r2 = p.draw(cr.SQUARE, {"size0": x.size()})
        (eps,) = open_batch([x.share - r], sum_op)
        z = r.mul_(2).mul_(eps)
        if x.rank == 0:
            z += eps * eps
        z += r2()
        return AST.from_shares(z, precision=0)

    def wraps(x: Any) -> Any:
        """Shares of the wrap count of [x], from a random [r] with known wraps [theta_r]."""
        p = provider()
        if p is None:
            return _originals["wraps"](x)
        (r,), theta_r = p.draw(cr.WRAPS, {"size0": x.size()})
        beta = count_wraps([x.share, r])
        gathered = comm.get().gather(x.share + r, 0)
        theta = beta - theta_r()
        if x.rank == 0:
            theta += count_wraps(gathered)
        return AST.from_shares(theta, precision=0)

    def and_shares(p: Any, rank: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Binary Beaver triple: [z] = [c] ^ (eps & [b]) ^ ([a] & delta) ^ (eps & delta)."""
        (a, b), c = p.draw(cr.BINARY, {"size0": x.size(), "size1": y.size()})
        eps, delta = open_batch([x ^ a, y ^ b], xor_op)
        z = (b & eps) ^ (a & delta)
        if rank == 0:
            z ^= eps & delta
        z ^= c()
        return z

    def and_gate(x: Any, y: Any) -> Any:
        p = provider()
        if p is None:
            return _originals["AND"](x, y)
        return BST.from_shares(and_shares(p, x.rank, x.share, y.share))

    def ltz_bits(p: Any, rank: int, share: torch.Tensor) -> torch.Tensor:
        """XOR shares of [x < 0] (flat, in bit 0): one opening, log2(digits) AND rounds.

        c = x + r is opened (r uniform, so c reveals nothing); each party reads
        its shares of the digits' (lt, eq) bits from the dealer's tables at c's
        digits (parties/correlated.py), and a tree of AND rounds combines them:
        (lt, eq)_hi o (lt, eq)_lo = (lt_hi ^ eq_hi & lt_lo, eq_hi & eq_lo).
        """
        share = share.reshape(-1)
        width = cr.ltz_digit_bits(share.numel())
        (r,), tables = p.draw(cr.LTZ, {"size0": share.size(), "digit_bits": width})
        (c,) = open_batch([share + r], sum_op)
        lt, eq = cr.ltz_lookup(tables(), c, width)
        stride, digits = 1, cr.ltz_digits(width)
        while stride < digits:
            hi = eq >> stride
            if stride * 2 >= digits:  # last level: only lt is needed
                lt = (lt >> stride) ^ and_shares(p, rank, hi, lt)
            else:
                both = and_shares(p, rank, torch.stack([hi, hi]), torch.stack([lt, eq]))
                lt, eq = (lt >> stride) ^ both[0], both[1]
            stride *= 2
        bit = lt & 1
        if rank == 0:
            bit ^= (c < 0).long()
        return bit

    def bit_mul(p: Any, rank: int, bit: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[b * x] from XOR-shared bit b and additive x in one round (bit injection, ABY3).

        e = b ^ s and d = x - a are opened together; with b = e + (1 - 2e) s,
        b x = e d + e [a] + (1 - 2e) (d [s] + [s a]).
        """
        (s_bits, a), pair = p.draw(cr.BIT_MUL, {"size0": x.size()})
        e, d = open_batch([bit ^ s_bits, x - a], [xor_op, sum_op])
        s_arith, sa = pair()
        z = e * a
        z += (1 - 2 * e) * (d * s_arith + sa)
        if rank == 0:
            z += e * d
        return z

    def b2a_single_bit(xb: Any) -> Any:
        """Bit [x]_B to [x]_A with a random bit known in both forms: z = x ^ r opened."""
        p = provider()
        if p is None or comm.get().get_world_size() < 2:
            return _originals["B2A_single_bit"](xb)
        (rb,), ra = p.draw(cr.B2A, {"size0": xb.size()})
        (z,) = open_batch([xb.share ^ rb], xor_op)
        out = ra() * (1 - 2 * z)
        if xb.rank == 0:
            out += z
        return AST.from_shares(out, precision=0)

    def negative_bits(self: Any) -> tuple[Any, torch.Tensor] | None:
        """(provider, XOR shares of [x < 0] shaped like x), or None without the dealer."""
        p = provider()
        if p is None or self.ptype != ptypes.arithmetic:
            return None
        x = self._tensor
        return p, ltz_bits(p, x.rank, x.share).reshape(x.share.shape)

    def ltz(self: Any) -> Any:
        """[x < 0] as an arithmetic bit (scale 1): comparison bits, then one B2A round."""
        got = negative_bits(self)
        if got is None:
            return _originals["_ltz"](self)
        arithmetic = b2a_single_bit(BST.from_shares(got[1]))
        return MPCTensor.from_shares(arithmetic.share, precision=0)

    def relu(self: Any) -> Any:
        """x * [x >= 0] = x - x [x < 0], the product fused with the bit's conversion."""
        got = negative_bits(self)
        if got is None:
            return _originals["relu"](self)
        p, bit = got
        x = self._tensor
        out = MPCTensor.from_shares(x.share - bit_mul(p, x.rank, bit, x.share))
        out.encoder = self.encoder
        return out

    namespace.update({
        "__beaver_protocol": beaver_protocol, "square": square, "wraps": wraps,
        "AND": and_gate, "B2A_single_bit": b2a_single_bit,
    })
    MPCTensor._ltz = ltz
    MPCTensor.relu = relu


def _install_a2b() -> None:
    """Arithmetic-to-binary conversion with carry-save adders: n shares, one adder.

    CrypTen adds the n parties' shares with a tree of binary adders (log2(n)
    adders of ~7 AND rounds each: 14 rounds for 3 parties). A carry-save layer
    turns three addends into two in one AND round (sum = a^b^c, carry =
    ((a&b) ^ (c&(a^b))) << 1), so n shares need ~log1.5(n/2) rounds and then one
    adder: 8 rounds for 3 parties, 9 for 4. With the dealer, comparisons no
    longer convert (see `ltz_bits`); CrypTen's other conversions to binary
    and the test-only TFP mode still do.
    """
    from crypten.mpc.primitives import BinarySharedTensor as BST
    from crypten.mpc.primitives import converters

    if "_A2B" not in _originals:
        _originals["_A2B"] = converters._A2B

    def a2b(arithmetic: Any) -> Any:
        n = _communicator_module().get().get_world_size()
        words = [BST(arithmetic.share, src=i) for i in range(n)]
        while len(words) > 2:
            k = len(words) // 3
            a = BST.stack(words[0:3 * k:3])
            b = BST.stack(words[1:3 * k:3])
            c = BST.stack(words[2:3 * k:3])
            a_xor_b = a ^ b
            both = BST.stack([a, c]) & BST.stack([b, a_xor_b])  # one AND round for all
            carry = (both[0] ^ both[1]) << 1
            total = a_xor_b ^ c
            words = [w for i in range(k) for w in (total[i], carry[i])] + words[3 * k:]
        out = words[0] + words[1] if len(words) == 2 else words[0]
        out.encoder = arithmetic.encoder
        return out

    converters._A2B = a2b


def cfg_active_security(crypten: types.ModuleType) -> bool:
    return bool(crypten.cfg.mpc.active_security)
