"""Per-example gradient clipping on shares, for DP-SGD [Abadi et al. 2016]: the clipped
gradient sum sum_i c_i g_i with c_i = min(1, C/||g_i||), never materialising the g_i.

For a linear layer z = a W^T + b, example i's gradient is (delta_i a_i^T, delta_i)
with delta_i = dL_i/dz_i, so ||g_i||^2 sums ||delta_i||^2 (||a_i||^2 + 1) over the
layers [Goodfellow 2015, the trick Opacus uses for nn.Linear], and the clipped sum
is ((c delta)^T a, sum_i c_i delta_i) per layer. Both need each layer's input a and
output gradient delta per example, which the summed autograd does not keep:

* :func:`instrument` replaces each Linear layer's Gemm node of the secure graph by
  one that keeps its input a and adds a zero tensor that requires a gradient (a
  probe); after ``scores.backward(p - y)`` the probe's gradient is delta. The
  parameters are marked as needing no gradient, so the backward pass computes the
  deltas only (no summed weight gradients nobody uses).
* :func:`clipped_gradient_sum` turns (a, delta) into the norms, the factors and the
  clipped sum.

The factor. u_i = max(||g_i||^2 / C^2, 1); c_i = (1 - MARGIN) y_i [u_i < CUTOFF],
where y_i is the engine's inverse square root of u_i (a comparison-picked start
within 8.6 % of 1/sqrt(u), then Newton steps y <- y (3 - u y^2)/2). Why
||c_i g_i|| <= C holds:

* Newton's step never overshoots: with y = t/sqrt(u), the step gives
  t' = (3t - t^3)/2, and 1 - t' = (t - 1)^2 (t + 2)/2 >= 0 for t >= 0; the start
  has t <= 1.086 < sqrt(3), so every iterate lies in (0, 1/sqrt(u)].
* Fixed point adds a few units of 2^-16 to y and to the computed norms; for
  u < CUTOFF = 2^12, y >= 2^-6, so they are below 2^-8 relative: MARGIN = 1 %
  covers them (the test checks the bound on shares against float64).
* An example with ||g_i|| >= 64 C gets c_i = 0 (dropped, rather than scaled to C):
  still within the bound, and past the range where the inverse square root's
  start is accurate.
* u_i itself must not wrap around the fixed-point ring: a product of two values
  is held exactly only while it stays below about 2^31. So an example is also
  dropped when, in any layer, ||DELTA_SCALE delta_i||^2 reaches DELTA_LIMIT = 2^10
  (||delta_i||^2 >= 4; the output layer's p - y has at most 2) or ||a_i||^2 + 1
  reaches INPUT_LIMIT = 2^19 (inputs scaled to [0, 1] stay far below): every
  layer's term is then below 2^29 and u_i of up to 4 layers cannot wrap. Without
  this an example with large activations wrapped into a small u_i and kept a
  factor near 1 (found by the test with rows 800x outside [0, 1]). Values whose
  own square wraps (|a| >= 2^15.5) are outside the engine's range for every
  product of the forward pass as well.
So c_i ||g_i|| <= (1 - MARGIN)(1 + 2^-8) C sqrt(u_i)/sqrt(u_i) <= C.

Layers other than Linear (Conv2d, BatchNorm) are refused by the DP protocol:
BatchNorm mixes the examples of a batch (no per-example gradient exists; Opacus
refuses it too), and Conv2d's per-example norms need each example's unfolded
input (not implemented here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from protocols.blocks import approximations

MARGIN = 0.01
DELTA_SCALE = 16  # deltas are squared as 16 delta (see norms_squared)
CUTOFF = 2.0**12  # u = ||g||^2 / C^2 beyond which an example is dropped (||g|| >= 64 C)
# A layer's ||16 delta||^2 (||delta||^2 >= 4) or ||a||^2 + 1 at which an example is dropped, so
# that no term of u wraps (see the module's docstring).
DELTA_LIMIT, INPUT_LIMIT = 2.0**10, 2.0**19


@dataclass
class LinearLayer:
    """One Linear layer of the secure graph: its Gemm node and parameter names."""

    node: str
    weight: str  # the parameter's name in named_parameters() ("fc1.weight.data")
    bias: str
    trans_b: bool
    seen: list[Any] = field(default_factory=list)  # [a, probe] of the last forward pass


class LayerError(ValueError):
    """A model whose parameters are not all Linear layers' (the message names one)."""


def instrument(graph: Any) -> list[LinearLayer]:
    """Make every Linear layer of the secure graph keep (a, probe) in training mode; the
    layers in graph order. LayerError when a parameter belongs to anything else."""
    import crypten

    nodes = graph._graph  # CrypTen's graph: node -> its input names
    params = {n.removesuffix(".data") for n, _ in graph.named_parameters()}
    layers, used = [], set()
    for node, inputs in nodes.items():
        module = graph._modules[node]
        if not isinstance(module, crypten.nn.module.Gemm) or len(inputs) != 3:
            continue
        a, b, c = inputs
        if a in params or b not in params or c not in params or module.trans_a:
            continue
        layer = LinearLayer(node, f"{b}.data", f"{c}.data", bool(module.trans_b))
        graph._modules[node] = _recording(crypten)(module, layer)
        layers.append(layer)
        used.update((b, c))
    other = sorted(params - used)
    if other:
        raise LayerError(f"parameter '{other[0]}' is not a Linear layer's weight or bias: "
                         "per-example clipping on shares covers Linear layers (with bias) only")
    return layers


def _recording(crypten: Any) -> type:
    class Recording(crypten.nn.Module):  # type: ignore[misc, name-defined]
        """A Gemm node that, in training mode, keeps its input and adds a zero probe."""

        def __init__(self, inner: Any, layer: LinearLayer) -> None:
            super().__init__()
            self.inner = inner
            object.__setattr__(self, "layer", layer)

        def forward(self, x: Any) -> Any:
            out = self.inner(x)
            if not self.training:
                return out
            probe = crypten.cryptensor(torch.zeros(out.size()), src=0, requires_grad=True)
            self.layer.seen[:] = [x[0], probe]
            return out + probe

    return Recording


@dataclass
class Norms:
    """Each example's squared gradient norm (n, 1) and the per-layer sizes behind it
    (n, 2L): ||DELTA_SCALE delta||^2 and ||a||^2 + 1 of every layer, as shares."""

    squared: Any
    sizes: Any


def norms_squared(layers: list[LinearLayer]) -> Norms:
    """||g_i||^2 = sum over layers of ||delta_i||^2 (||a_i||^2 + 1), as shares (n, 1): one
    round of squares for every layer at once, one of products.

    The deltas are mostly 1e-4..1e-1, whose squares fixed point holds to a few
    significant bits only: they are squared as DELTA_SCALE delta (an exact integer
    product), so the truncation's unit error is DELTA_SCALE^2 times smaller.
    """
    import crypten

    parts = []
    for layer in layers:
        a, probe = layer.seen
        parts += [probe.grad * DELTA_SCALE, a]
    squares = crypten.cat(parts, dim=1).square()
    sums, at = [], 0
    for part in parts:
        width = part.size(1)
        sums.append(squares[:, at:at + width].sum(1, keepdim=True))
        at += width
    deltas, inputs = crypten.cat(sums[0::2], dim=1), crypten.cat(sums[1::2], dim=1)
    squared = (deltas * (inputs + 1)).sum(1, keepdim=True) * (1.0 / DELTA_SCALE**2)
    return Norms(squared, crypten.cat([deltas, inputs + 1], dim=1))


def clip_factors(norms: Norms, max_grad_norm: float) -> Any:
    """c_i = (1 - MARGIN) / sqrt(max(u_i, 1)) [u_i < CUTOFF and every size below its limit] with
    u_i = ||g_i||^2 / C^2, as shares (n, 1); see the module's docstring for why
    c_i ||g_i|| <= C."""
    import crypten

    u = norms.squared * (1.0 / max_grad_norm**2)
    layers = norms.sizes.size(1) // 2
    limits = torch.tensor([1.0, CUTOFF] + [DELTA_LIMIT] * layers + [INPUT_LIMIT] * layers)
    bits = crypten.cat([u, u, norms.sizes], dim=1) >= limits  # one batched comparison, scale 1
    above = bits[:, 0:1]
    dropped = bits[:, 1:].sum(1, keepdim=True) >= 1  # u too large, or a term could wrap
    v = (u - 1) * above + 1  # max(u, 1)
    return v.inv_sqrt() * approximations.fixed(1 - dropped, 1 - MARGIN)


def clipped_gradient_sum(layers: list[LinearLayer], factors: Any) -> dict[str, Any]:
    """sum_i c_i g_i per parameter name: (c delta)^T a for a weight, sum_i c_i delta_i for a
    bias, with every layer's c delta in one product round."""
    import crypten

    deltas = [layer.seen[1].grad for layer in layers]
    scaled = crypten.cat(deltas, dim=1) * factors
    out, at = {}, 0
    for layer, delta in zip(layers, deltas, strict=True):
        width = delta.size(1)
        cd = scaled[:, at:at + width]
        at += width
        a = layer.seen[0]
        out[layer.weight] = cd.t().matmul(a) if layer.trans_b else a.t().matmul(cd)
        out[layer.bias] = cd.sum(0)
    return out


# ---------------------------------------------------------------- the plaintext twin

def per_example_gradients(model: torch.nn.Module, x: torch.Tensor, signal: torch.Tensor
                          ) -> dict[str, torch.Tensor]:
    """Each example's gradient of <scores_i, signal_i> (signal = p - y: the cross-entropy's)
    for every parameter, stacked (n, *shape), in float64 (torch.func)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def surrogate(p: dict[str, torch.Tensor], row: torch.Tensor, s: torch.Tensor
                  ) -> torch.Tensor:
        return (functional_call(model, p, (row.unsqueeze(0),)) * s.unsqueeze(0)).sum()

    return vmap(grad(surrogate), in_dims=(None, 0, 0), randomness="different")(
        params, x, signal)


def clipped_sum_plain(per_example: dict[str, torch.Tensor], max_grad_norm: float
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Opacus' clipping in float64: sum_i min(1, C/||g_i||) g_i per parameter, and ||g_i||."""
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in per_example.values()], dim=1)
    norms = flat.norm(dim=1)
    factors = (max_grad_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
    return ({k: torch.einsum("n,n...->...", factors, g) for k, g in per_example.items()},
            norms)
