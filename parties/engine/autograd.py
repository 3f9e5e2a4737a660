"""CrypTen's autograd, cheaper: no gradient nobody needs, and ReLU keeps its comparison bit.

* CrypTen's backward of a product (matmul, conv2d) computes the gradient of
  both inputs; for a network's first layer the input is the data, which needs
  none (a product of the batch with the weights every step; for a CNN a
  transposed convolution). :func:`install` makes them return None for an
  input that does not require a gradient; CrypTen's backward pass then skips it.
* CrypTen's ReLU computes [x > 0] as an arithmetic bit (the comparison, then a
  B2A round), multiplies x by it (one round) and multiplies the gradient by it
  in the backward pass. With the dealer, the forward pass keeps the
  comparison's XOR-shared bit [x < 0] and uses bit injection both ways
  (parties/engine/primitives/conversion.bit_times): relu(x) = x - [x < 0] x and
  g - [x < 0] g, one round each: one round and one B2A draw less per ReLU.

The originals are kept for any other provider (CrypTen's TFP test mode).
"""

from __future__ import annotations

from typing import Any

from parties.engine.compat import load_crypten
from parties.engine.hooks import _dealer, _open_batch
from parties.engine.primitives import comparison, conversion

crypten = load_crypten()

from crypten import gradients  # noqa: E402
from crypten.mpc import MPCTensor  # noqa: E402
from crypten.mpc.ptype import ptype as ptypes  # noqa: E402

_ORIGINAL: dict[str, Any] = {}


def _needs_grad(t: Any) -> bool:
    return bool(getattr(t, "requires_grad", False))


def _matmul_backward(ctx: Any, grad_output: Any) -> Any:
    self_, other = ctx.saved_tensors
    if _needs_grad(self_) and _needs_grad(other):
        return _ORIGINAL["matmul"](ctx, grad_output)
    if self_.dim() < 2 or other.dim() < 2 or grad_output.dim() < 2:
        return _ORIGINAL["matmul"](ctx, grad_output)  # vectors: CrypTen's shape handling
    if _needs_grad(other):
        grad = self_.transpose(-2, -1).matmul(grad_output)
        return None, gradients._inverse_broadcast(grad, other.size())
    grad = grad_output.matmul(other.transpose(-2, -1))
    return gradients._inverse_broadcast(grad, self_.size()), None


def _conv2d_backward(ctx: Any, grad_output: Any) -> Any:
    input_, kernel, padding, stride, dilation, groups = ctx.saved_tensors
    if _needs_grad(input_) or groups != 1:
        return _ORIGINAL["conv2d"](ctx, grad_output)
    # dL/dK[o, i, u, v] = sum_{n, y, x} G[n, o, y, x] X[n, i, y s + u d, x s + v d]: the
    # correlation of X with G over the batch, i.e. a convolution of X^T (channels as batch)
    # with G^T as its kernel, dilated by the stride, strided by the dilation
    grad = input_.transpose(0, 1).conv2d(grad_output.transpose(0, 1), padding=padding,
                                         stride=dilation, dilation=stride).transpose(0, 1)
    return None, grad[:, :, :kernel.size(2), :kernel.size(3)]


def _relu_forward(ctx: Any, input_: Any) -> Any:
    p = _dealer()
    if p is None or input_.ptype != ptypes.arithmetic:
        return _ORIGINAL["relu forward"](ctx, input_)
    x = input_._tensor
    bit = comparison.negative_bits(p, x.rank, _open_batch, x.share)
    ctx.save_for_backward(bit)
    out = MPCTensor.from_shares(x.share - conversion.bit_times(p, x.rank, _open_batch, bit,
                                                               x.share))
    out.encoder = input_.encoder
    return out


def _relu_backward(ctx: Any, grad_output: Any) -> Any:
    (saved,) = ctx.saved_tensors
    if isinstance(saved, crypten.CrypTensor):  # the original forward ran: an arithmetic mask
        return _ORIGINAL["relu backward"](ctx, grad_output)
    p = _dealer()
    g = grad_output._tensor
    out = MPCTensor.from_shares(g.share - conversion.bit_times(p, g.rank, _open_batch, saved,
                                                               g.share))
    out.encoder = grad_output.encoder
    return out


def install() -> None:
    """Patch CrypTen's matmul, conv2d and ReLU autograd functions (once per process)."""
    if _ORIGINAL:
        return
    registry = gradients.FUNCTION_REGISTRY
    _ORIGINAL["matmul"] = registry["matmul"].backward
    _ORIGINAL["conv2d"] = registry["conv2d"].backward
    _ORIGINAL["relu forward"] = registry["relu"].forward
    _ORIGINAL["relu backward"] = registry["relu"].backward
    registry["matmul"].backward = staticmethod(_matmul_backward)
    registry["conv2d"].backward = staticmethod(_conv2d_backward)
    registry["relu"].forward = staticmethod(_relu_forward)
    registry["relu"].backward = staticmethod(_relu_backward)
