"""Products of secret-shared values from the dealer's Beaver triples [Bea91].

Arithmetic shares live in Z_{2^64} (int64, wrapping); binary shares are XOR
shares of int64 words. See parties/engine/primitives/__init__.py for the
`source`, `rank` and `open_batch` arguments.
"""

from __future__ import annotations

from typing import Any

import torch

from parties.engine import correlated as cr
from parties.engine.compat import reduce_ops
from parties.engine.primitives import Gather, OpenBatch, Source


def product(source: Source, rank: int, open_batch: OpenBatch, op: str, x: torch.Tensor,
            y: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """This party's share of op(x, y) for a bilinear torch `op` (mul, matmul, conv...).

    1. Draw shares of a, b and c = op(a, b) (party 0's c is the dealer's correction).
    2. Open eps = x - a and delta = y - b in one round.
    3. z = c + op(eps, b) + op(a, delta) + op(eps, delta)              [Bea91]
       Party 0 folds its public term into op(eps, b + delta): one product less.
    """
    req = {"size0": x.size(), "size1": y.size(), "op": op, "kwargs": kwargs}
    (a, b), c = source.draw(cr.ADDITIVE, req)
    eps, delta = open_batch([x - a, y - b], reduce_ops()[0])
    f = getattr(torch, op)
    z = f(eps, b + delta if rank == 0 else b, **kwargs)
    z += f(a, delta, **kwargs)
    z += c()
    return z


def square(source: Source, rank: int, open_batch: OpenBatch, x: torch.Tensor) -> torch.Tensor:
    """This party's share of x^2 from a square pair (r, r^2).

    eps = x - r is opened; x^2 = r^2 + 2 eps r + eps^2 (eps^2 added by party 0)   [Bea91]
    """
    (r,), r2 = source.draw(cr.SQUARE, {"size0": x.size()})
    (eps,) = open_batch([x - r], reduce_ops()[0])
    z = r.mul_(2).mul_(eps)
    if rank == 0:
        z += eps * eps
    z += r2()
    return z


def wraps(source: Source, rank: int, gather: Gather, x: torch.Tensor) -> torch.Tensor:
    """This party's share of theta_x, how often the sum of x's shares wraps around Z_{2^64}.

    With a random [r] whose wrap count [theta_r] the dealer shares, z = x + r is
    gathered on party 0 (it reveals nothing: r is uniform), and
    theta_x = theta_z + beta_xr - theta_r, where beta_xr (the wraps of each
    party's x_i + r_i) is local; the rare wrap of x + r itself is ignored, as in
    CrypTen's truncation [KVK+21].
    """
    (r,), theta_r = source.draw(cr.WRAPS, {"size0": x.size()})
    beta = cr.count_wraps([x, r])
    gathered = gather(x + r)
    theta = beta - theta_r()
    if rank == 0:
        theta += cr.count_wraps(gathered)  # type: ignore[arg-type]
    return theta


def and_shares(source: Source, rank: int, open_batch: OpenBatch, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
    """This party's XOR share of x & y from a binary Beaver triple (a, b, c = a & b).

    eps = x ^ a and delta = y ^ b are opened in one round;
    x & y = c ^ (eps & b) ^ (a & delta) ^ (eps & delta) (the last term by party 0)   [Bea91]
    """
    (a, b), c = source.draw(cr.BINARY, {"size0": x.size(), "size1": y.size()})
    eps, delta = open_batch([x ^ a, y ^ b], reduce_ops()[1])
    z = (b & eps) ^ (a & delta)
    if rank == 0:
        z ^= eps & delta
    z ^= c()
    return z
