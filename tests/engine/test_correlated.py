"""The dealer's material, reconstructed in one process: the comparison tables, bit injection."""

from __future__ import annotations

import pytest
import torch

from parties.engine import correlated as cr


def _streams(seed: int, parties: int) -> list[cr.Stream]:
    """Each party's stream for one draw (the dealer replays the same ones)."""
    return [cr.keyed_stream(bytes([seed + i]) * cr.SEED_BYTES, 0, "test") for i in range(parties)]


def _simulated_ltz(x: torch.Tensor, digit_bits: int, parties: int) -> torch.Tensor:
    """The comparison protocol with every party's share in hand (ANDs on reconstructed bits)."""
    req = {"size0": x.size(), "digit_bits": digit_bits}
    gens = _streams(100, parties)
    shares = [cr.party_shares(cr.LTZ, g, i, req) for i, g in enumerate(_streams(100, parties))]
    tables = [cr.correction(cr.LTZ, gens, req)] + [s[1] for s in shares[1:]]
    c = cr.sum_shares([s[0] for s in shares]) + x  # the opened x + r
    looked = [cr.ltz_lookup(t, c, digit_bits) for t in tables]
    lt = cr.xor_shares([p[0] for p in looked])
    eq = cr.xor_shares([p[1] for p in looked])
    stride = 1
    while stride < cr.ltz_digits(digit_bits):
        hi = eq >> stride
        lt, eq = (lt >> stride) ^ (hi & lt), hi & eq
        stride *= 2
    return (lt & 1) ^ (c < 0).long()


@pytest.mark.parametrize("digit_bits", cr.LTZ_DIGIT_BITS)
@pytest.mark.parametrize("parties", [2, 3, 4])
def test_comparison_tables_give_the_sign(digit_bits: int, parties: int) -> None:
    edges = torch.tensor([0, -1, 1, -(2**63), 2**63 - 1, 2**62, -(2**62), 2**16, -(2**16)])
    x = torch.cat([edges, torch.randint(-(2**63), 2**63 - 1, (3000,)),
                   torch.randint(-500, 500, (1000,))])
    assert torch.equal(_simulated_ltz(x, digit_bits, parties), (x < 0).long())


@pytest.mark.parametrize("digit_bits", cr.LTZ_DIGIT_BITS)
def test_tables_are_the_truth_tables_of_r(digit_bits: int) -> None:
    r = torch.randint(-(2**63), 2**63 - 1, (50,))
    tables = cr.ltz_tables(r, digit_bits)
    assert tables.shape == (50, cr.ltz_table_words(digit_bits))
    size = 1 << digit_bits
    for v in (0, 1, size // 2, size - 1):
        c = torch.full((50,), v, dtype=torch.long)  # every digit of c (below bit 63) = v
        mask = sum(v << (digit_bits * j) for j in range(cr.ltz_digits(digit_bits)))
        c = c * 0 + (mask & cr.LOW_BITS)
        lt, eq = cr.ltz_lookup(tables, c, digit_bits)
        digits = (r & cr.LOW_BITS).unsqueeze(1) >> torch.arange(0, 63, digit_bits)
        digits &= size - 1
        top = cr.ltz_digits(digit_bits) - 1
        want_lt = (digits > (c.unsqueeze(1) >> torch.arange(0, 63, digit_bits)) % size).long()
        want_lt[:, top] ^= (r < 0).long()
        want_eq = (digits == (c.unsqueeze(1) >> torch.arange(0, 63, digit_bits)) % size).long()
        bits = torch.arange(cr.ltz_digits(digit_bits))
        assert torch.equal((lt.unsqueeze(1) >> bits) & 1, want_lt)
        assert torch.equal((eq.unsqueeze(1) >> bits) & 1, want_eq)


@pytest.mark.parametrize("parties", [2, 3])
def test_bit_times_value_in_one_opening(parties: int) -> None:
    size = torch.Size([500])
    req = {"size0": size}
    gens = _streams(7, parties)
    shares = [cr.party_shares(cr.BIT_MUL, g, i, req) for i, g in enumerate(_streams(7, parties))]
    pairs = [cr.correction(cr.BIT_MUL, gens, req)] + [s[2] for s in shares[1:]]
    b = torch.randint(0, 2, size)
    x = torch.randint(-(2**40), 2**40, size)
    # the opened values: e = b ^ s, d = x - a
    e = b ^ cr.xor_shares([s[0] for s in shares])
    d = x - cr.sum_shares([s[1] for s in shares])
    z = [e * s[1] + (1 - 2 * e) * (d * pair[0] + pair[1]) for s, pair in zip(shares, pairs,
                                                                            strict=True)]
    z[0] += e * d
    assert torch.equal(cr.sum_shares(z), b * x)
