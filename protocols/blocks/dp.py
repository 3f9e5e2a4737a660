"""Differential privacy mechanisms on shares: noise that no party and not the dealer knows.

Distributed noise. Every party draws its own *contribution* with cryptographic
randomness and secret-shares it; the noise is the sum of all contributions, added
on shares, so it exists only as shares until the noisy result is revealed. The
contributions are sized so that the parties outside any coalition of up to `t`
parties (the protocol's `noise_coalition`, 1 by default: no two parties collude)
still add the full noise:

* Gaussian N(0, s^2): each of the n parties adds N(0, s^2 / (n - t)); any n - t of
  them sum to N(0, s^2), the total is N(0, n s^2 / (n - t)).
* Laplace(b): Laplace is infinitely divisible [Kotz et al. 2001]: each party adds
  G1 - G2 with G1, G2 ~ Gamma(1/(n - t), b); any n - t of them sum to
  Gamma(1, b) - Gamma(1, b) = Laplace(b).

Noise beyond the required amount is independent of the data, so the release is
at least as private as the mechanism with s (or b) alone (post-processing).

Draws are inverse CDFs of uniforms from `os.urandom` (53 bits each); the noise
is then encoded in CrypTen's fixed point (2^-16). Tests pass a seeded `source`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import special

from protocols.api import Budget
from protocols.blocks import accounting, aggregation

Source = Callable[[int], bytes]  # n -> n random bytes


def secret_uniform(size: int, source: Source | None = None) -> np.ndarray:
    """`size` uniforms in (0, 1) from 53 random bits each (float64), never 0 or 1."""
    raw = np.frombuffer((source or os.urandom)(8 * size), dtype=np.uint64) >> np.uint64(11)
    return (raw.astype(np.float64) + 0.5) * 2.0**-53


def contribution_share(parties: int, coalition: int) -> float:
    """The fraction of the noise variance (Gaussian) or Gamma shape (Laplace) one party adds."""
    if not 0 <= coalition < parties:
        raise ValueError(f"noise_coalition must be 0 to {parties - 1} with {parties} parties, "
                         f"got {coalition}")
    return 1.0 / (parties - coalition)


def gaussian_contribution(shape: tuple[int, ...], std: float, parties: int, coalition: int,
                          source: Source | None = None) -> torch.Tensor:
    """This party's part of N(0, std^2) noise: N(0, std^2 / (n - t)) per element."""
    u = secret_uniform(math.prod(shape), source)
    scale = std * math.sqrt(contribution_share(parties, coalition))
    return torch.from_numpy(special.ndtri(u) * scale).reshape(shape)


def laplace_contribution(shape: tuple[int, ...], scale: float, parties: int, coalition: int,
                         source: Source | None = None) -> torch.Tensor:
    """This party's part of Laplace(scale) noise: Gamma(1/(n-t), scale) - Gamma(1/(n-t), scale)."""
    n = math.prod(shape)
    a = contribution_share(parties, coalition)
    g = special.gammaincinv(a, secret_uniform(2 * n, source)) * scale
    return torch.from_numpy(g[:n] - g[n:]).reshape(shape)


def joint_noise(contribution: torch.Tensor) -> Any:
    """Every party's contribution, secret-shared and summed: the noise, as shares only
    (no messages: see protocols/blocks/aggregation.py)."""
    return aggregation.secure_sum(contribution)


def release_counts(counts: Any, budget: Budget, mechanism: str, parties: int, coalition: int,
                   source: Source | None = None) -> tuple[Any, dict[str, Any]]:
    """Counts (shares) with Laplace or Gaussian noise for `budget`, and the privacy report.

    Adding or removing one row changes one count by 1: L1 and L2 sensitivity 1.
    Laplace: scale 1/epsilon, pure epsilon-DP (delta unused). Gaussian: the
    analytic Gaussian mechanism's sigma for (epsilon, delta) [Balle & Wang 2018].
    """
    shape = tuple(counts.size())
    if mechanism == "laplace":
        scale = 1.0 / budget.epsilon
        noise = laplace_contribution(shape, scale, parties, coalition, source)
        event, delta, size = accounting.laplace_event(scale), 0.0, {"scale": scale}
    elif mechanism == "gaussian":
        if budget.delta <= 0:
            raise ValueError("the Gaussian mechanism needs delta > 0")
        sigma = accounting.gaussian_sigma(budget.epsilon, budget.delta)
        noise = gaussian_contribution(shape, sigma, parties, coalition, source)
        event, delta, size = accounting.gaussian_event(sigma), budget.delta, {"sigma": sigma}
    else:
        raise ValueError(f"mechanism must be 'laplace' or 'gaussian', got {mechanism!r}")
    noisy = counts + joint_noise(noise)
    return noisy, accounting.report(event, delta, mechanism, accounting.ADD_OR_REMOVE,
                                    sensitivity=1.0, noise_coalition=coalition, **size)
