"""The sign of a secret value from one masked opening and the dealer's truth tables.

[x < 0] for x in Z_{2^64}: c = x + r is opened for a random r the dealer made,
each party looks up its XOR shares of the digits' (lt, eq) bits in its share
of r's one-time truth tables at c's digits [IKMOP13], and a tree of AND rounds
combines the digits (parties/engine/correlated.py explains the tables). See
parties/engine/primitives/__init__.py for the `source`, `rank` and
`open_batch` arguments.
"""

from __future__ import annotations

import torch

from parties.engine import correlated as cr
from parties.engine.compat import reduce_ops
from parties.engine.primitives import OpenBatch, Source
from parties.engine.primitives.beaver import and_shares
from parties.engine.primitives.conversion import bit_times


def negative_bits(source: Source, rank: int, open_batch: OpenBatch, x: torch.Tensor
                  ) -> torch.Tensor:
    """This party's XOR shares of [x < 0], shaped like x (the bit in bit 0).

    One opening, then log2(digits) AND rounds: 1 + 3 rounds for up to 4096
    elements (8-bit digits), 1 + 4 beyond (4-bit digits, 8x less material).
    """
    flat = x.reshape(-1)
    width = cr.ltz_digit_bits(flat.numel())
    (r,), tables = source.draw(cr.LTZ, {"size0": flat.size(), "digit_bits": width})
    (c,) = open_batch([flat + r], reduce_ops()[0])  # uniform: reveals nothing about x
    lt, eq = cr.ltz_lookup(tables(), c, width)  # one-time truth tables [IKMOP13]
    stride, digits = 1, cr.ltz_digits(width)
    while stride < digits:
        # (lt, eq)_hi o (lt, eq)_lo = (lt_hi ^ eq_hi & lt_lo, eq_hi & eq_lo)
        hi = eq >> stride
        if stride * 2 >= digits:  # last level: only lt is needed
            lt = (lt >> stride) ^ and_shares(source, rank, open_batch, hi, lt)
        else:
            both = and_shares(source, rank, open_batch, torch.stack([hi, hi]),
                              torch.stack([lt, eq]))
            lt, eq = (lt >> stride) ^ both[0], both[1]
        stride *= 2
    bit = lt & 1  # [c mod 2^63 < r mod 2^63] ^ r_63 (folded into the top table)
    if rank == 0:
        bit ^= (c < 0).long()  # ^ c_63
    return bit.reshape(x.shape)


def first_argmax(source: Source, rank: int, open_batch: OpenBatch, x: torch.Tensor
                 ) -> torch.Tensor:
    """This party's XOR shares of the one-hot of the first maximum along x's last dimension.

    All K(K-1)/2 pairs are compared in one batch: class a wins pair (a, b), a < b,
    when x_a >= x_b, class b when x_b > x_a, so only the first maximum wins all
    its K-1 pairs; an AND tree of each class's wins (log2(K-1) rounds) marks it.
    """
    k = x.shape[-1]
    first, second = torch.triu_indices(k, k, 1)
    lt = negative_bits(source, rank, open_batch, x[..., first] - x[..., second])  # x_a < x_b
    ge = lt ^ 1 if rank == 0 else lt  # NOT of an XOR-shared bit: party 0 flips it
    both = torch.cat([ge, lt], -1)  # wins of the first of each pair, then of the second
    pairs = first.numel()
    table = torch.empty(k, k - 1, dtype=torch.long)
    filled = [0] * k
    for p, (a, b) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        table[a, filled[a]], table[b, filled[b]] = p, pairs + p
        filled[a] += 1
        filled[b] += 1
    wins = both[..., table.reshape(-1)].reshape(*x.shape, k - 1)
    while wins.shape[-1] > 1:
        half = wins.shape[-1] // 2
        paired = and_shares(source, rank, open_batch, wins[..., :half],
                            wins[..., half:2 * half])
        wins = torch.cat([paired, wins[..., 2 * half:]], -1)
    return wins[..., 0]


def relu(source: Source, rank: int, open_batch: OpenBatch, x: torch.Tensor) -> torch.Tensor:
    """This party's share of max(x, 0) = x - x [x < 0]: the comparison, then one bit injection."""
    bit = negative_bits(source, rank, open_batch, x)
    return x - bit_times(source, rank, open_batch, bit, x)
