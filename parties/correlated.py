"""Correlated randomness from seeds: what the dealer and each party derive.

The dealer gives each party i a secret seed s_i (over that party's link). Both
sides then expand s_i with the same generator, in the same order, so every
party's share of a, b (and, for i > 0, of c) costs no communication at all;
only party 0's share of c, the *correction*, must come from the dealer:

    c_0 = f(sum_i a_i, sum_i b_i) - sum_{i>0} c_i          (a la [Bea91], [DPSZ12])

The same pattern gives square pairs (r, r^2), binary AND triples (XOR shares),
wrap counts of random sharings (for truncation, as in CrypTen's [KVK+21]) and
random bits in both arithmetic and binary form (B2A). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

RING_LOW, RING_HIGH = -(2**63), 2**63 - 1

# dealer request kinds
ADDITIVE, SQUARE, BINARY, WRAPS, B2A = "additive", "square", "binary", "wraps", "B2A"
BILINEAR_OPS = frozenset(
    {"mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"}
)


def ring(g: torch.Generator, size: Sequence[int]) -> torch.Tensor:
    """Uniform elements of Z_{2^64} as int64."""
    return torch.randint(RING_LOW, RING_HIGH, tuple(size), generator=g, dtype=torch.long)


def bits(g: torch.Generator, size: Sequence[int]) -> torch.Tensor:
    """Uniform bits as int64 0/1."""
    return torch.randint(0, 2, tuple(size), generator=g, dtype=torch.long)


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


def party_shares(kind: str, g: torch.Generator, rank: int, req: dict[str, Any]
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
    raise ValueError(f"unknown request kind {kind!r}")


def correction(kind: str, gens: Sequence[torch.Generator], req: dict[str, Any]) -> torch.Tensor:
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
    raise ValueError(f"unknown request kind {kind!r}")


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


def generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g
