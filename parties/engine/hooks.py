"""CrypTen's protocol entry points and random draws, routed to smpc's own.

Each public function here has the signature of the CrypTen function it
replaces (parties/engine/context.py installs them):

* the Beaver-style protocols (`beaver_protocol`, `square`, `wraps`, `and_gate`,
  `b2a_single_bit`), the comparison (`ltz`) and `relu`: with the dealer they call
  parties/engine/primitives with the party's provider, rank and an opening over
  its communicator; with any other provider (the insecure TFP test mode) they
  run CrypTen's original, inside `allow_openings` (its steps open masked values);
* `a2b`: arithmetic-to-binary conversion through the carry-save layer, for
  every provider;
* `argmax_helper` (behind `max(dim)`, `argmax(dim)` and max pooling): with the
  dealer, the first maximum along a dimension of up to 16 elements from one
  batch of pairwise comparisons and an AND tree (CrypTen's reduces a tree,
  tests equality with the maximum and breaks ties at random: 37 rounds for a
  2x2 max pool, 9 here);
* `generate_random_ring_element`, `generate_kbit_random_tensor`: every secret
  draw (PRZS, local randomness, the TFP provider's material) from the party's
  ChaCha20 streams instead of torch's Mersenne Twister.

The originals are captured when this module is first imported, before
context.py replaces anything.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import torch

from parties.engine import correlated as cr
from parties.engine.compat import load_crypten
from parties.engine.primitives import beaver, comparison, conversion
from parties.engine.randomness import random_bits
from parties.engine.reveal import allow_openings

crypten = load_crypten()

from crypten.common import rng as crypten_rng  # noqa: E402
from crypten.common.functions import maximum  # noqa: E402
from crypten.mpc import MPCTensor  # noqa: E402
from crypten.mpc.primitives import ArithmeticSharedTensor as AST  # noqa: E402
from crypten.mpc.primitives import BinarySharedTensor as BST  # noqa: E402
from crypten.mpc.primitives import beaver as crypten_beaver  # noqa: E402
from crypten.mpc.primitives import converters  # noqa: E402
from crypten.mpc.ptype import ptype as ptypes  # noqa: E402

ORIGINALS = types.MappingProxyType({
    **{name: vars(crypten_beaver)[name]
       for name in ("__beaver_protocol", "square", "wraps", "AND", "B2A_single_bit")},
    "_ltz": MPCTensor._ltz,
    "relu": MPCTensor.relu,
    "_A2B": converters._A2B,
    "_argmax_helper": maximum._argmax_helper,
    "generate_random_ring_element": crypten_rng.generate_random_ring_element,
    "generate_kbit_random_tensor": crypten_rng.generate_kbit_random_tensor,
})
"""CrypTen's own versions of everything this module replaces."""


def _dealer() -> Any:
    """The party's dealer provider, or None with another provider."""
    p = crypten.mpc.get_default_provider()
    return p if hasattr(p, "draw") else None


def _open_batch(shares: list[torch.Tensor], ops: Any) -> list[torch.Tensor]:
    return crypten.communicator.get().all_reduce(shares, op=ops, batched=True)


def _gather(share: torch.Tensor) -> Any:
    return crypten.communicator.get().gather(share, 0)


def _original(name: str, *args: Any, **kwargs: Any) -> Any:
    with allow_openings():  # CrypTen's steps open masked values only
        return ORIGINALS[name](*args, **kwargs)


# ---------------------------------------------------------------- protocols

def beaver_protocol(op: str, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
    """[op(x, y)] for arithmetic shares (CrypTen's beaver.__beaver_protocol)."""
    p = _dealer()
    if p is None or args or crypten.cfg.mpc.active_security:
        return _original("__beaver_protocol", op, x, y, *args, **kwargs)
    return AST.from_shares(beaver.product(p, x.rank, _open_batch, op, x.share, y.share, kwargs),
                           precision=0)


def square(x: Any) -> Any:
    """[x^2] (CrypTen's beaver.square)."""
    p = _dealer()
    if p is None:
        return _original("square", x)
    return AST.from_shares(beaver.square(p, x.rank, _open_batch, x.share), precision=0)


def wraps(x: Any) -> Any:
    """Shares of the wrap count of [x] (CrypTen's beaver.wraps)."""
    p = _dealer()
    if p is None:
        return _original("wraps", x)
    return AST.from_shares(beaver.wraps(p, x.rank, _gather, x.share), precision=0)


def and_gate(x: Any, y: Any) -> Any:
    """[x & y] for binary shares (CrypTen's beaver.AND)."""
    p = _dealer()
    if p is None:
        return _original("AND", x, y)
    return BST.from_shares(beaver.and_shares(p, x.rank, _open_batch, x.share, y.share))


def b2a_single_bit(xb: Any) -> Any:
    """A binary-shared bit as an arithmetic share (CrypTen's beaver.B2A_single_bit)."""
    p = _dealer()
    if p is None or crypten.communicator.get().get_world_size() < 2:
        return _original("B2A_single_bit", xb)
    return AST.from_shares(conversion.bit_to_arithmetic(p, xb.rank, _open_batch, xb.share),
                           precision=0)


def ltz(self: Any) -> Any:
    """[x < 0] as an arithmetic bit (scale 1): the comparison bits, then one B2A round."""
    p = _dealer()
    if p is None or self.ptype != ptypes.arithmetic:
        return _original("_ltz", self)
    x = self._tensor
    bit = comparison.negative_bits(p, x.rank, _open_batch, x.share)
    return MPCTensor.from_shares(conversion.bit_to_arithmetic(p, x.rank, _open_batch, bit),
                                 precision=0)


def relu(self: Any) -> Any:
    """max(x, 0): the comparison bits, then one bit injection."""
    p = _dealer()
    if p is None or self.ptype != ptypes.arithmetic:
        return _original("relu", self)
    x = self._tensor
    out = MPCTensor.from_shares(comparison.relu(p, x.rank, _open_batch, x.share))
    out.encoder = self.encoder
    return out


def a2b(arithmetic: Any) -> Any:
    """Arithmetic to binary shares: each party's share XOR-shared, carry-save layers, one adder.

    CrypTen adds the n XOR-shared addends with a tree of binary adders (log2(n)
    adders of ~7 AND rounds each: 14 rounds for 3 parties); the carry-save
    layers first bring them down to two, so 3 parties need 8 rounds, 4 need 9.
    """
    n = crypten.communicator.get().get_world_size()
    words = [BST(arithmetic.share, src=i).share for i in range(n)]  # PRZS: no communication
    two = conversion.carry_save_reduce(
        words, lambda x, y: (BST.from_shares(x) & BST.from_shares(y)).share)
    out = BST.from_shares(two[0])
    if len(two) == 2:
        out = out + BST.from_shares(two[1])  # CrypTen's adder circuit
    out.encoder = arithmetic.encoder
    return out


ARGMAX_PAIRS = 16  # the most elements along a dimension the pairwise argmax takes


def argmax_helper(enc_tensor: Any, dim: Any = None, one_hot: bool = True,
                  method: str = "pairwise", _return_max: bool = False) -> Any:
    """The one-hot (scale 1) of the first maximum along `dim` (CrypTen's _argmax_helper);
    the caller computes the maximum as sum(x * one-hot), one product without truncation."""
    p = _dealer()
    if p is None or dim is None or enc_tensor.dim() == 0 \
            or enc_tensor.ptype != ptypes.arithmetic \
            or not 2 <= enc_tensor.size(dim) <= ARGMAX_PAIRS:
        return ORIGINALS["_argmax_helper"](enc_tensor, dim, one_hot, method, _return_max)
    x = enc_tensor.transpose(dim, -1)._tensor
    bits = comparison.first_argmax(p, x.rank, _open_batch, x.share.contiguous())
    result = MPCTensor.from_shares(conversion.bit_to_arithmetic(p, x.rank, _open_batch, bits),
                                   precision=0).transpose(dim, -1)
    return (result, None) if _return_max else result


# ---------------------------------------------------------------- random draws

def _shape(size: Any) -> tuple[int, ...]:
    return (int(size),) if isinstance(size, int) else tuple(int(d) for d in size)


def _stream(generator: Any, kwargs: dict[str, Any]) -> Any:
    device = kwargs.get("device")
    return generator if generator is not None else crypten.generators["local"][device]


def _placed(t: torch.Tensor, device: Any) -> torch.Tensor:
    if device is None or torch.device(device).type == "cpu":
        return t
    from crypten.cuda import CUDALongTensor

    return CUDALongTensor(t.to(device))


def generate_random_ring_element(size: Sequence[int] | int, ring_size: int = 2**64,
                                 generator: Any = None, **kwargs: Any) -> torch.Tensor:
    """Uniform int64 ring elements from a ChaCha20 stream (the party's "local" one by default).

    A torch.Generator (CrypTen's public "global" one) keeps CrypTen's draw: public.
    """
    if isinstance(generator, torch.Generator):
        return ORIGINALS["generate_random_ring_element"](size, ring_size, generator, **kwargs)
    if ring_size != 2**64:
        raise ValueError(f"ring elements are drawn from Z_2^64, not Z_{ring_size}")
    return _placed(cr.ring(_stream(generator, kwargs), _shape(size)), kwargs.get("device"))


def generate_kbit_random_tensor(size: Sequence[int] | int, bitlength: int | None = None,
                                generator: Any = None, **kwargs: Any) -> torch.Tensor:
    """Uniform `bitlength`-bit integers (default 64) from a ChaCha20 stream."""
    if isinstance(generator, torch.Generator):
        return ORIGINALS["generate_kbit_random_tensor"](size, bitlength, generator, **kwargs)
    out = random_bits(_stream(generator, kwargs), _shape(size), 64 if bitlength is None
                      else bitlength)
    return _placed(out, kwargs.get("device"))
