"""Correlated randomness: the material formats the dealer and every party compute.

The dealer gives each party i a secret 256-bit seed s_i (over that party's
link). Each draw of material is then expanded from a ChaCha20 stream keyed by
s_i, the draw's counter and its descriptor (:func:`keyed_stream`), on the
party and, in replay, on the dealer, so every party's share of a, b (and, for
i > 0, of c) costs no communication at all; only party 0's share of c, the
*correction*, must come from the dealer:

    c_0 = f(sum_i a_i, sum_i b_i) - sum_{i>0} c_i          (a la [Bea91], [DPSZ12])

The same pattern gives square pairs (r, r^2), binary AND triples (XOR shares),
wrap counts of random sharings (for truncation, as in CrypTen's [KVK+21]) and
random bits in both arithmetic and binary form (B2A), a bit times a masked
value (BIT_MUL: [b]_B * [x]_A in one round, ABY3's bit injection), and the material of a
one-round-opening comparison (LTZ): a random [r] with XOR-shared one-time truth
tables of its digits [IKMOP13], see :func:`ltz_tables`.

The engine's primitives (parties/engine/primitives) consume this material and
the dealer (parties/dealer) produces it. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from typing import Any

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

RING_LOW, RING_HIGH = -(2**63), 2**63 - 1
SEED_BYTES = 32  # a dealer seed or a stream key: 256 bits

# dealer request kinds
ADDITIVE, SQUARE, BINARY, WRAPS, B2A, LTZ, BIT_MUL = (
    "additive", "square", "binary", "wraps", "B2A", "ltz", "bitmul")
KINDS = frozenset({ADDITIVE, SQUARE, BINARY, WRAPS, B2A, LTZ, BIT_MUL})
LTZ_DIGIT_BITS = (4, 8)  # comparison tables per 4-bit digit (16 digits) or 8-bit (8 digits)
LOW_BITS = 2**63 - 1
BILINEAR_OPS = frozenset(
    {"mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"}
)


_ZEROS = memoryview(bytes(1 << 18))  # plaintext of the keystream, read in 256 KiB pieces


class Stream:
    """A ChaCha20 keystream [Ber08] read as uniform int64 words or bits: the PRG of every share.

    A cryptographic PRG: nothing a party sees of its own expansion helps
    predict another stream or the rest of this one (torch's Mersenne Twister,
    which CrypTen uses, is predictable from 624 outputs).
    """

    def __init__(self, key: bytes) -> None:
        self._cipher = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def fill(self, out: torch.Tensor) -> torch.Tensor:
        """Overwrite contiguous `out` with the next bytes of the stream (little-endian)."""
        if out.numel() == 0:
            return out
        view = memoryview(out.numpy().reshape(-1).view("u1"))
        for at in range(0, len(view), len(_ZEROS)):  # keystream = ChaCha20 of zeros
            part = view[at:at + len(_ZEROS)]
            self._cipher.update_into(_ZEROS[:len(part)], part)
        if sys.byteorder == "big" and out.element_size() > 1:
            out.numpy().byteswap(inplace=True)
        return out


def ring(g: Stream, size: Sequence[int]) -> torch.Tensor:
    """Uniform elements of Z_{2^64} as int64."""
    return g.fill(torch.empty(tuple(size), dtype=torch.long))


def bits(g: Stream, size: Sequence[int]) -> torch.Tensor:
    """Uniform bits as int64 0/1."""
    return (g.fill(torch.empty(tuple(size), dtype=torch.uint8)) & 1).long()


def broadcast_shapes(s0: Sequence[int], s1: Sequence[int]) -> torch.Size:
    """torch.broadcast_shapes for two shapes (torch 2.13's takes ~1 ms a call)."""
    n = max(len(s0), len(s1))
    a, b = [1] * (n - len(s0)) + list(s0), [1] * (n - len(s1)) + list(s1)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"shapes {list(s0)} and {list(s1)} do not broadcast")
        out.append(y if x == 1 else x)
    return torch.Size(out)


def result_size(op: str, size0: Sequence[int], size1: Sequence[int], kwargs: dict[str, Any]
                ) -> torch.Size:
    """Shape of op(a, b) without computing it (shape rules; meta tensors for convolutions)."""
    if op not in BILINEAR_OPS:
        raise ValueError(f"unsupported bilinear op {op!r}")
    if op == "mul":
        return broadcast_shapes(tuple(size0), tuple(size1))
    if op == "matmul":
        return _matmul_size(list(size0), list(size1))
    a = torch.empty(tuple(size0), device="meta")
    b = torch.empty(tuple(size1), device="meta")
    return getattr(torch, op)(a, b, **kwargs).size()


def _matmul_size(s0: list[int], s1: list[int]) -> torch.Size:
    """torch.matmul's shape rule: vectors promoted, batch dimensions broadcast."""
    if not s0 or not s1:
        raise ValueError("matmul needs at least one dimension on each side")
    v0, v1 = len(s0) == 1, len(s1) == 1
    a = [1, *s0] if v0 else s0
    b = [*s1, 1] if v1 else s1
    if a[-1] != b[-2]:
        raise ValueError(f"matmul of shapes {s0} and {s1}")
    batch = broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    out = [*batch, a[-2], b[-1]]
    if v1:
        out.pop(-1)
    if v0:
        out.pop(-2 if not v1 else -1)
    return torch.Size(out)


def count_wraps(shares: Sequence[torch.Tensor]) -> torch.Tensor:
    """How often sum(shares) wraps around Z_{2^64}, counted left to right (+1 up, -1 down)."""
    total = torch.zeros_like(shares[0])
    acc = shares[0]
    for s in shares[1:]:
        nxt = acc + s
        total -= ((acc < 0) & (s < 0) & (nxt > 0)).long()
        total += ((acc > 0) & (s > 0) & (nxt < 0)).long()
        acc = nxt
    return total


def request_elements(kind: str, req: dict[str, Any]) -> int:
    """How many elements a request's inputs have (what its material costs, roughly)."""
    n = sum(torch.Size(req[k]).numel() for k in ("size0", "size1") if k in req)
    return n * ltz_table_words(req["digit_bits"]) if kind == LTZ else n


def party_shares(kind: str, g: Stream, rank: int, req: dict[str, Any]
                 ) -> list[torch.Tensor]:
    """This party's shares for one request, in the order the dealer draws them.

    Party 0 gets every share but the last one (its correction comes from the dealer).
    """
    size0 = req["size0"]
    if kind == ADDITIVE:
        out = [ring(g, size0), ring(g, req["size1"])]
        if rank > 0:
            out.append(ring(g, result_size(req["op"], size0, req["size1"], req["kwargs"])))
        return out
    if kind in (SQUARE, WRAPS):
        return [ring(g, size0)] + ([ring(g, size0)] if rank > 0 else [])
    if kind == BINARY:
        out = [ring(g, size0), ring(g, req["size1"])]
        if rank > 0:
            out.append(ring(g, broadcast_shapes(tuple(size0), tuple(req["size1"]))))
        return out
    if kind == B2A:
        return [bits(g, size0)] + ([ring(g, size0)] if rank > 0 else [])
    if kind == BIT_MUL:  # bit s (XOR-shared), mask a; last: (s, s*a) as additive shares
        return [bits(g, size0), ring(g, size0)] + ([ring(g, (2, *size0))] if rank > 0 else [])
    if kind == LTZ:
        n = torch.Size(size0).numel()
        words = ltz_table_words(req["digit_bits"])
        return [ring(g, size0)] + ([ring(g, (n, words))] if rank > 0 else [])
    raise ValueError(f"unknown request kind {kind!r}")


def correction(kind: str, gens: Sequence[Stream], req: dict[str, Any]) -> torch.Tensor:
    """The dealer's side: replay every party's draws and return party 0's missing share."""
    shares = [party_shares(kind, g, rank, req) for rank, g in enumerate(gens)]
    rest = shares[1:]
    if kind == ADDITIVE:
        a = sum_shares([s[0] for s in shares])
        b = sum_shares([s[1] for s in shares])
        c = getattr(torch, req["op"])(a, b, **req["kwargs"])
        return c - sum_shares([s[2] for s in rest], like=c)
    if kind == SQUARE:
        r = sum_shares([s[0] for s in shares])
        return r * r - sum_shares([s[1] for s in rest], like=r)
    if kind == BINARY:
        c = xor_shares([s[0] for s in shares]) & xor_shares([s[1] for s in shares])
        return c ^ xor_shares([s[2] for s in rest], like=c)
    if kind == WRAPS:
        theta = count_wraps([s[0] for s in shares])
        return theta - sum_shares([s[1] for s in rest], like=theta)
    if kind == B2A:
        r = xor_shares([s[0] for s in shares])
        return r - sum_shares([s[1] for s in rest], like=r)
    if kind == BIT_MUL:
        bit = xor_shares([s[0] for s in shares])
        pair = torch.stack([bit, bit * sum_shares([s[1] for s in shares])])
        return pair - sum_shares([s[2] for s in rest], like=pair)
    if kind == LTZ:
        r = sum_shares([s[0] for s in shares]).reshape(-1)
        tables = ltz_tables(r, req["digit_bits"])
        return tables ^ xor_shares([s[1] for s in rest], like=tables)
    raise ValueError(f"unknown request kind {kind!r}")


# ---------------------------------------------------------------- comparison tables
#
# [x < 0] for x in Z_{2^64}: open c = x + r for a random r the dealer made;
# then x = c - r and its sign bit is c_63 ^ r_63 ^ [c mod 2^63 < r mod 2^63].
# The comparison of the public low bits of c with the secret ones of r splits
# into digits: c < r iff some digit has c_j < r_j and every higher digit is
# equal. For each digit the dealer XOR-shares the truth tables
# lt_j[v] = [v < r_j] and eq_j[v] = [v == r_j] over all 2^w values v; with c
# public each party looks up entry c_j in its share of the table, locally (a
# one-time truth table [IKMOP13]). The digits' (lt, eq) bits then combine in
# log2(digits) AND rounds. r_63 is folded into the top digit's lt table (that
# bit only ever enters the result by XOR).


def ltz_digits(digit_bits: int) -> int:
    """How many digits of `digit_bits` bits cover the low 63 bits (a power of two)."""
    if digit_bits not in LTZ_DIGIT_BITS:
        raise ValueError(f"comparison digits have {LTZ_DIGIT_BITS} bits, not {digit_bits!r}")
    return -(-63 // digit_bits)


def ltz_table_words(digit_bits: int) -> int:
    """int64 words per element holding the lt and eq tables of every digit."""
    return 2 * ltz_digits(digit_bits) * (1 << digit_bits) // 64


def ltz_digit_bits(numel: int) -> int:
    """8-bit digits (3 AND rounds) for small tensors, 4-bit (4 rounds, 8x less material)."""
    return 8 if numel <= 4096 else 4


def _digits(x: torch.Tensor, digit_bits: int) -> torch.Tensor:
    """(n, D) digits of the low 63 bits of int64 `x` (n,), least significant first."""
    shifts = torch.arange(0, 63, digit_bits, dtype=torch.long)
    return ((x & LOW_BITS).unsqueeze(1) >> shifts) & ((1 << digit_bits) - 1)


def ltz_tables(r: torch.Tensor, digit_bits: int) -> torch.Tensor:
    """The dealer's (n, words) packed tables for random r (n,): lt of every digit, then eq.

    Table j occupies bits [j 2^w, (j+1) 2^w) of the flat bit string; lt_j has
    its low r_j bits set, eq_j bit r_j alone.
    """
    d = _digits(r, digit_bits)  # (n, D)
    n = d.shape[0]
    top = (r < 0).long().neg()  # all ones where r_63 = 1
    one = torch.ones((), dtype=torch.long)
    if digit_bits == 4:  # four 16-bit tables per word
        lt, eq = (one << d) - 1, one << d
        lt[:, -1] ^= top & 0xFFFF
        offsets = torch.arange(0, 64, 16, dtype=torch.long)
        return torch.cat([(t.reshape(n, -1, 4) << offsets).sum(-1) for t in (lt, eq)], 1)
    # 8-bit digits: four words per table; `low` = entries of each word below r_j
    low = d.unsqueeze(-1) - torch.arange(0, 256, 64, dtype=torch.long)  # (n, D, 4)
    inside = (low >= 0) & (low < 64)
    shifted = one << low.clamp(0, 63)
    lt = torch.where(low >= 64, -one, torch.where(inside, shifted - 1, 0))
    eq = torch.where(inside, shifted, 0)
    lt[:, -1] ^= top.unsqueeze(-1)
    return torch.cat([lt.reshape(n, -1), eq.reshape(n, -1)], 1)


def ltz_lookup(tables: torch.Tensor, c: torch.Tensor, digit_bits: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """A party's share of the (lt, eq) words for public c (n,): bit j = digit j's entry.

    Local: the table entry at c's digit is read from this party's XOR share.
    """
    digits = ltz_digits(digit_bits)
    positions = torch.arange(digits, dtype=torch.long)
    index = _digits(c, digit_bits) + positions * (1 << digit_bits)
    half = digits * (1 << digit_bits)
    out = []
    for base in (0, half):
        flat = index + base
        words = torch.gather(tables, 1, flat >> 6)
        bit = (words >> (flat & 63)) & 1
        out.append((bit << positions).sum(1))
    return out[0], out[1]


def sum_shares(ts: Sequence[torch.Tensor], like: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of additive shares (zeros shaped like `like` when there are none)."""
    return _combine(ts, like, torch.Tensor.add_)


def xor_shares(ts: Sequence[torch.Tensor], like: torch.Tensor | None = None) -> torch.Tensor:
    """XOR of binary shares (zeros shaped like `like` when there are none)."""
    return _combine(ts, like, torch.Tensor.bitwise_xor_)


def _combine(ts: Sequence[torch.Tensor], like: torch.Tensor | None, op: Any) -> torch.Tensor:
    if not ts:
        assert like is not None
        return torch.zeros_like(like)
    out = ts[0].clone()
    for t in ts[1:]:
        op(out, t)
    return out


def describe(kind: str, req: dict[str, Any]) -> str:
    """A canonical string naming a request (kind, shapes, op, arguments)."""
    return kind + "".join(f"|{k}={_canon(req[k])}" for k in sorted(req))


def _canon(v: Any) -> str:
    if isinstance(v, torch.Size | tuple | list):
        return "(" + ",".join(_canon(x) for x in v) + ")"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_canon(v[k])}" for k in sorted(v)) + "}"
    return repr(v)


def keyed_stream(seed: bytes, counter: int, descriptor: str) -> Stream:
    """The stream of draw number `counter` with `descriptor`, keyed by a party's 256-bit seed.

    Distinct (counter, descriptor) pairs give independent streams, so material
    the dealer made for a request that never came cannot reveal anything about
    the material of the request that did.
    """
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ValueError(f"a dealer seed is {SEED_BYTES} bytes")
    return Stream(hashlib.blake2b(f"{counter}|{descriptor}".encode(), digest_size=32,
                                  key=seed).digest())
