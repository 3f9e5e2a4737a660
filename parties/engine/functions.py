"""CrypTen's approximations that smpc evaluates differently with the dealer: inv_sqrt.

BatchNorm multiplies by 1/sqrt(var + eps) in every training step. CrypTen's
inv_sqrt starts Newton-Raphson at 2.2 exp(-(x/2 + 0.2)) + 0.2 - x/1024 (an exp:
eight squarings) and iterates three times: about 40 rounds, and its start is
off by 8% to 80% below x = 0.05 and overflows above x = 400. Here one batched
comparison of x against thresholds 2^(1/2) apart over [2^-16, 2^16] picks a
piecewise-constant first guess within 8.6% (a normalized start, as in
[CS10]), and two iterations y (3/2 - (x/2 y) y) bring it mostly within 2e-4
(0.25% at worst for x from 1e-2 to 1e3, 2% down to 1e-3 and up to 1e4, where
fixed point keeps few significant bits): 19 rounds. With another provider
CrypTen's own runs.

[CS10] Catrina, Saxena. Secure Computation With Fixed-Point Numbers. FC 2010.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from parties.engine.compat import load_crypten
from parties.engine.hooks import _dealer

crypten = load_crypten()

from crypten.common.functions import approximations  # noqa: E402
from crypten.encoder import FixedPointEncoder  # noqa: E402

ORIGINAL_INV_SQRT = approximations.inv_sqrt
NEWTON_STEPS = 2


@functools.cache
def _guess(scale_bits: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Thresholds 2^(j/2), j = -32..32, the integer steps of the fixed-point guess between
    them (its levels rounded, so the sum over bits telescopes exactly), and the first level."""
    edges = torch.tensor([2.0 ** (j / 2) for j in range(-32, 33)], dtype=torch.float64)
    inside = 2 / (edges[:-1].sqrt() + edges[1:].sqrt())  # minimax constant on [t_j, t_j+1)
    levels = torch.cat([inside[:1], inside, inside[-1:] * (edges[-2] / edges[-1]).sqrt()])
    scaled = torch.round(levels * 2.0**scale_bits).long()
    return edges.float(), scaled[1:] - scaled[:-1], float(scaled[0]) / 2.0**scale_bits


def inv_sqrt(self: Any) -> Any:
    """1/sqrt(x) for x > 0 (CrypTen's MPCTensor.inv_sqrt; its own without the dealer)."""
    if _dealer() is None or self.encoder.scale == 1:
        return ORIGINAL_INV_SQRT(self)
    thresholds, steps, first = _guess(self.encoder._precision_bits)
    bits = self.unsqueeze(-1) >= thresholds  # one batched comparison, bits of scale 1
    y = bits.matmul(steps)  # integer levels: local
    y.encoder = FixedPointEncoder(precision_bits=self.encoder._precision_bits)
    y = y + first
    half = self * 0.5
    for _ in range(NEWTON_STEPS):  # (x/2 y) y, not x/2 y^2: y^2 underflows for large x
        y = y * (1.5 - (half * y) * y)
    return y
