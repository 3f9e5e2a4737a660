"""Between XOR-shared bits and additive values: B2A of a bit, bit injection, carry-save A2B.

See parties/engine/primitives/__init__.py for the `source`, `rank` and
`open_batch` arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from parties.engine import correlated as cr
from parties.engine.compat import reduce_ops
from parties.engine.primitives import OpenBatch, Source


def bit_to_arithmetic(source: Source, rank: int, open_batch: OpenBatch, bit: torch.Tensor
                      ) -> torch.Tensor:
    """This party's additive share of a bit given as XOR shares (bit 0 of each word).

    With a random bit r the dealer shares both ways ([r]_B, [r]_A), z = b ^ r is
    opened and b = z + (1 - 2z) r, linear in [r]_A (the public z added by party 0):
    CrypTen's B2A_single_bit [KVK+21] with dealer material.
    """
    (r_bits,), r_arith = source.draw(cr.B2A, {"size0": bit.size()})
    (z,) = open_batch([bit ^ r_bits], reduce_ops()[1])
    out = r_arith() * (1 - 2 * z)
    if rank == 0:
        out += z
    return out


def bit_times(source: Source, rank: int, open_batch: OpenBatch, bit: torch.Tensor,
              x: torch.Tensor) -> torch.Tensor:
    """This party's additive share of b * x, b an XOR-shared bit, x additive: one round.

    Bit injection (ABY3 [MR18]) with dealer material: a random bit s
    (XOR shares), a mask a, and additive shares of s and s * a. e = b ^ s and
    d = x - a are opened together (one message holds the XOR and the sum); with
    b = e + (1 - 2e) s,  b x = e d + e [a] + (1 - 2e) (d [s] + [s a]).
    """
    (s_bits, a), pair = source.draw(cr.BIT_MUL, {"size0": x.size()})
    sum_op, xor_op = reduce_ops()
    e, d = open_batch([bit ^ s_bits, x - a], [xor_op, sum_op])
    s_arith, sa = pair()
    z = e * a
    z += (1 - 2 * e) * (d * s_arith + sa)
    if rank == 0:
        z += e * d
    return z


def carry_save_reduce(words: list[torch.Tensor],
                      and_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                      ) -> list[torch.Tensor]:
    """XOR shares of n addends reduced to two with the same sum mod 2^64 (n >= 1).

    A carry-save adder turns three addends into two in one AND round:
    sum = a ^ b ^ c, carry = ((a & b) ^ (c & (a ^ b))) << 1; every triple of a
    layer is stacked into one `and_batch` call, so n addends need about
    log_1.5(n / 2) AND rounds ([Wal64]'s carry-save tree). XOR and shift act on
    XOR shares locally; `and_batch(x, y)` returns this party's share of x & y.
    """
    words = list(words)
    while len(words) > 2:
        k = len(words) // 3
        a = torch.stack(words[0:3 * k:3])
        b = torch.stack(words[1:3 * k:3])
        c = torch.stack(words[2:3 * k:3])
        a_xor_b = a ^ b
        both = and_batch(torch.stack([a, c]), torch.stack([b, a_xor_b]))
        carry = (both[0] ^ both[1]) << 1
        total = a_xor_b ^ c
        words = [w for i in range(k) for w in (total[i], carry[i])] + words[3 * k:]
    return words
