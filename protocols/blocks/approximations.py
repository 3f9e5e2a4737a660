"""Cheaper secure approximations of nonlinear functions, each with its plaintext twin.

Rounds are what a training step waits for: with three or more parties every
fixed-point product costs two (the Beaver opening, then the truncation), a
comparison four or five (one masked opening and the AND rounds over the
dealer's truth tables) plus one to turn its bit into an arithmetic share.
CrypTen's own sigmoid and softmax spend 34 and 116 rounds on repeated
squaring and Newton-Raphson iterations; the functions here spend 6 to 36:

* ``piecewise_sigmoid``: SecureML's clip(1/2 + z/4, 0, 1) [MZ17], one
  comparison of 2x the elements and no product.
* ``accurate_sigmoid``: 1/(1 + e^-z) as a cubic spline on unit intervals over
  [-12, 12] (error < 4e-5, 0 and 1 outside): one batched comparison against
  the 25 knots selects each element's piece, whose coefficients are linear in
  the comparison bits, then three rounds of products evaluate the cubic
  (piecewise-polynomial evaluation as in [KSS22], Chebyshev nodes [Tre13]).
* ``exp_nonpositive``: e^x for x <= 0 by the limit (1 + x/2^k)^(2^k), k
  squarings [KVK+21]; for x <= 0 every intermediate lies in [0, 1], so no
  product is large (a truncation's rare failure grows with the value).
* ``softmax_gradient``: p/B for cross-entropy's gradient p - y over a batch of
  B rows. Subtracting the row maximum (CrypTen's max; with the dealer one
  batch of pairwise comparisons and an AND tree) instead of a bound makes the
  sum S of the exponentials lie in [1, K]; one batched comparison of S against
  geometric thresholds (20% apart) picks a piecewise-constant first guess of
  1/(B S) within 9.1%, and one Newton-Raphson step y(2 - B S y) [CS10] brings
  it within 0.83% (below the exp's own error; a common factor of a row's p
  only shifts its scores, which softmax ignores), its first product shared
  with e y.

Each public function has a twin ending in ``_plain`` that computes the same
approximation in float64; the tests compare the two.

[MZ17] Mohassel, Zhang. SecureML. IEEE S&P 2017.
[KVK+21] Knott et al. CrypTen: Secure Multi-Party Computation Meets Machine Learning.
         NeurIPS 2021.
[CS10] Catrina, Saxena. Secure Computation With Fixed-Point Numbers. FC 2010.
[KSS22] Keller, Sun. Secure Quantized Training for Deep Learning. ICML 2022.
[Tre13] Trefethen. Approximation Theory and Approximation Practice. SIAM 2013.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

SIGMOIDS = ("piecewise", "exact")
FRACTION_BITS = 16  # CrypTen's fixed point: a value v is shared as round(v * 2^16)
SPLINE_RANGE = 12  # the accurate sigmoid is a cubic spline on [-12, 12], 0 and 1 outside
RECIPROCAL_RATIO = 1.2  # consecutive thresholds of the first guess of 1/S differ by 20%


# ---------------------------------------------------------------- fixed-point helpers

def fixed(bits: Any, factor: float | torch.Tensor = 1.0) -> Any:
    """Arithmetic bits or counts (scale 1, as comparisons return them) times a public
    `factor` (a number, or a tensor that broadcasts), as fixed-point values.

    Local: the factor is rounded to fixed point and multiplied as an integer.
    """
    from crypten.encoder import FixedPointEncoder

    scaled = torch.round(torch.as_tensor(factor, dtype=torch.float64) * (1 << FRACTION_BITS))
    out = bits * scaled.long()  # an integer product: local
    out.encoder = FixedPointEncoder()
    return out


def select(bits: Any, steps: torch.Tensor, base: torch.Tensor | float = 0.0) -> Any:
    """base + bits @ steps for threshold bits (..., T) of ascending thresholds ([x >= t_1]
    >= [x >= t_2] >= ...) and public steps (T,) or (T, M): a piecewise-constant function.

    Local: the levels base + steps[0] + ... + steps[j] are rounded to fixed point
    and their integer differences multiplied with the bits, so every level (the
    last one too, e.g. an exact 0) is reached exactly.
    """
    from crypten.encoder import FixedPointEncoder

    scale = float(1 << FRACTION_BITS)
    base = torch.as_tensor(base, dtype=torch.float64)
    levels = torch.round((base + torch.cumsum(steps.double(), 0)) * scale).long()
    first = torch.round(base * scale).long()
    table = torch.diff(levels, dim=0, prepend=first.unsqueeze(0).expand_as(levels[:1]))
    out = bits.matmul(table)
    out.encoder = FixedPointEncoder()
    return out + first.double() / scale


def _at_least(x: Any, thresholds: torch.Tensor) -> Any:
    """[x >= t] for every threshold t: bits (..., T), scale 1, one batched comparison."""
    return x.unsqueeze(-1) >= thresholds


# ---------------------------------------------------------------- sigmoids

def piecewise_sigmoid(z: Any) -> Any:
    """clip(1/2 + z/4, 0, 1) on a CrypTen tensor: one comparison of 2x the elements."""
    return piecewise_sigmoid_of_quarter(z * 0.25)


def piecewise_sigmoid_of_quarter(q: Any) -> Any:
    """The same sigmoid given q = z/4 (a caller that already holds z/4 saves the product)."""
    import crypten

    ramps = crypten.stack([q + 0.5, q - 0.5]).relu()
    return ramps[0] - ramps[1]


def piecewise_sigmoid_plain(z: torch.Tensor) -> torch.Tensor:
    """The same function in plaintext."""
    return (0.5 + z / 4).clamp(0.0, 1.0)


@functools.cache
def _spline(name: str, low: int, high: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Knots low..high and the (pieces, 4) local cubic coefficients of `name` on each unit
    interval, interpolated at Chebyshev nodes [Tre13]; constant pieces outside."""
    f = {"sigmoid": lambda v: 1 / (1 + np.exp(-v))}[name]
    nodes = 0.5 + 0.5 * np.cos((2 * np.arange(4) + 1) / 8 * np.pi)  # in [0, 1]
    pieces = [[float(f(low - 1e3)), 0.0, 0.0, 0.0]]
    for start in range(low, high):
        c = np.polyfit(nodes, f(start + nodes), 3)[::-1]  # r^0 .. r^3, r = z - start
        pieces.append([float(v) for v in c])
    pieces.append([float(f(high + 1e3)), 0.0, 0.0, 0.0])
    knots = torch.arange(low, high + 1, dtype=torch.float64)
    return knots, torch.tensor(pieces, dtype=torch.float64)


def _cubic_spline(z: Any, name: str, low: int, high: int) -> Any:
    """A cubic spline with unit pieces on [low, high] (constant outside) on a CrypTen tensor.

    One comparison against the knots gives bits b_t = [z >= t]; the piece's
    start s(z) = low - 1 + sum b_t and its coefficients C_m(z) are linear in
    the bits (local). r = z - s(z) lies in [0, 1) inside the range and is set
    to 0 outside (a product with a bit: one round, no truncation), so the
    truncations' unit errors are never multiplied by a large r. Then two
    product rounds: (r^2, C_1 r, C_3 r), then r^2 (C_2 + C_3 r).
    """
    import crypten

    knots, pieces = _spline(name, low, high)
    bits = _at_least(z, knots.float())
    coefficients = select(bits, pieces[1:] - pieces[:-1], pieces[0])  # (..., 4)
    start = select(bits, torch.ones(len(knots), dtype=torch.float64), float(low - 1))
    inside = bits[..., 0] - bits[..., -1]  # low <= z < high
    r = (z - start) * inside
    c = [coefficients[..., m] for m in range(4)]
    first = crypten.stack([r, c[1], c[3]]) * r  # r^2, C1 r, C3 r: one product
    square, linear, cubic = first[0], first[1], first[2]
    return c[0] + linear + square * (c[2] + cubic)


def _cubic_spline_plain(z: torch.Tensor, name: str, low: int, high: int) -> torch.Tensor:
    knots, pieces = _spline(name, low, high)
    z = z.double()
    index = (z.unsqueeze(-1) >= knots).sum(-1)
    c = pieces[index]
    r = z - (low - 1 + index.double())
    r = torch.where((index > 0) & (index < len(knots)), r, torch.zeros_like(r))
    return c[..., 0] + r * (c[..., 1] + r * (c[..., 2] + r * c[..., 3]))


def accurate_sigmoid(z: Any) -> Any:
    """1/(1 + e^-z) within 4e-5 on a CrypTen tensor: a cubic spline, 10 rounds."""
    return _cubic_spline(z, "sigmoid", -SPLINE_RANGE, SPLINE_RANGE)


def accurate_sigmoid_plain(z: torch.Tensor) -> torch.Tensor:
    """The same spline in float64."""
    return _cubic_spline_plain(z, "sigmoid", -SPLINE_RANGE, SPLINE_RANGE)


def sigmoid(z: Any, method: str) -> Any:
    """`method` 'piecewise' (SecureML's) or 'exact' (the accurate spline) on a CrypTen tensor;
    'crypten' is CrypTen's own (exp and reciprocal: 34 rounds), for comparisons."""
    if method == "piecewise":
        return piecewise_sigmoid(z)
    if method == "exact":
        return accurate_sigmoid(z)
    if method == "crypten":
        return z.sigmoid()
    raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {method!r}")


def sigmoid_plain(z: torch.Tensor, method: str) -> torch.Tensor:
    """The plaintext twin of `sigmoid` ('exact' is the true sigmoid: the spline is within 4e-5)."""
    return piecewise_sigmoid_plain(z) if method == "piecewise" else torch.sigmoid(z)


# ---------------------------------------------------------------- maximum, exp, softmax

def exp_nonpositive(x: Any, iterations: int) -> Any:
    """e^x for x <= 0 (x >= -2^(iterations+1)): (1 + x/2^k)^(2^k), k squarings [KVK+21]."""
    y = x.div(2**iterations) + 1
    for _ in range(iterations):
        y = y.square()
    return y


def exp_nonpositive_plain(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """The same limit in float64."""
    return (1 + x / 2**iterations) ** (2**iterations)


@functools.cache
def reciprocal_guess(classes: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Thresholds t_1 < ... < t_T covering [1, K] in steps of RECIPROCAL_RATIO, and the steps
    of the first guess of 1/(B S): on [t_j, t_j+1) it is 2 / (B (t_j + t_j+1)), which is
    within (ratio - 1)/(ratio + 1) of 1/(B S) there; also the guess below t_1."""
    count = max(1, math.ceil(math.log(max(classes, 2)) / math.log(RECIPROCAL_RATIO)))
    edges = torch.tensor([RECIPROCAL_RATIO ** i for i in range(count + 1)], dtype=torch.float64)
    guesses = 2 / (batch * (edges[:-1] + edges[1:]))  # one per interval
    guesses = torch.cat([guesses, 1 / (batch * edges[-1:])])  # above the last threshold
    return edges[1:], guesses[1:] - guesses[:-1], float(guesses[0])


def softmax_gradient(z: Any, batch: int, iterations: int) -> tuple[Any, Any, Any]:
    """(p/B, x = z - max, S) for logits z (n, K): softmax over each row divided by `batch`.

    x <= 0, e = e^x in [0, 1] with e = 1 at the maximum, so S = sum e lies in
    [1, K]. The first guess y0 of 1/(B S) is piecewise constant in S, picked
    by one comparison; one Newton-Raphson step y0 (2 - B S y0) [CS10] squares
    its relative error (9.1% -> 0.83%). p/B = (e y0)(2 - B S y0): the products
    e y0 and S y0 share one round. The row maximum is CrypTen's max (with the
    dealer: one batch of pairwise comparisons and an AND tree, see
    parties/engine/hooks.py). Rounds: 10 (max) + 2k + 1 (exp) + 5 + 4.
    """
    import crypten

    top, _ = z.max(dim=1, keepdim=True)
    x = z - top
    e = exp_nonpositive(x, iterations)
    s = e.sum(1, keepdim=True)
    thresholds, steps, base = reciprocal_guess(z.size(1), batch)
    y0 = select(_at_least(s, thresholds.float()), steps, base)  # (n, 1) ~ 1/(B S)
    both = crypten.cat([e, s], dim=1) * y0  # e y0 and S y0: one product
    correction = 2 - both[:, -1:] * batch  # 2 - B S y0 (B public: an integer product)
    return both[:, :-1] * correction, x, s


def softmax_gradient_plain(z: torch.Tensor, batch: int, iterations: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same approximation in float64: (p/B, x, S)."""
    x = z - z.max(1, keepdim=True).values
    e = exp_nonpositive_plain(x, iterations)
    s = e.sum(1, keepdim=True)
    thresholds, steps, base = reciprocal_guess(z.shape[1], batch)
    y0 = base + (s >= thresholds).double() @ steps
    y0 = y0.unsqueeze(1) if y0.dim() == 1 else y0
    return e * y0 * (2 - batch * s * y0), x, s
