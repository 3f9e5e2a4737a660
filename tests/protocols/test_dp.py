"""Distributed noise: each party's contribution, their sum inside MPC, and the released counts.

The statistical checks use fixed seeds, so they pass or fail the same way every
run; each acceptance interval is set so that, for a fresh random seed, a correct
sampler would fall outside it with probability at most 1e-6 (the false-alarm
rate stated on each test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from protocols.api import Budget
from protocols.blocks import accounting, dp
from tests.engine.harness import run_parties

FALSE_ALARM = 1e-6
Z = stats.norm.isf(FALSE_ALARM / 2)  # two-sided normal quantile, about 4.89


def seeded(seed: int) -> dp.Source:
    """A deterministic byte source for tests (the protocols use os.urandom)."""
    rng = np.random.default_rng(seed)
    return lambda n: rng.bytes(n)


def variance_interval(sigma2: float, m: int) -> tuple[float, float]:
    """Where the sample variance of m N(0, sigma2) draws lies with prob. 1 - FALSE_ALARM."""
    low, high = stats.chi2.ppf([FALSE_ALARM / 2, 1 - FALSE_ALARM / 2], m - 1)
    return sigma2 * low / (m - 1), sigma2 * high / (m - 1)


def test_uniforms_are_strictly_inside_the_unit_interval() -> None:
    u = dp.secret_uniform(100_000, seeded(1))
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > FALSE_ALARM
    assert not np.array_equal(dp.secret_uniform(8), dp.secret_uniform(8))  # os.urandom


@pytest.mark.parametrize(("parties", "coalition"), [(3, 1), (3, 2), (2, 0), (5, 2)])
def test_gaussian_contributions_sum_to_sigma_outside_any_coalition(parties: int,
                                                                   coalition: int) -> None:
    """False-alarm rate 1e-6 per check (chi-square interval for the sample variance)."""
    sigma, m = 2.5, 20_000
    parts = [dp.gaussian_contribution((m,), sigma, parties, coalition, seeded(10 + i)).numpy()
             for i in range(parties)]
    honest = sum(parts[coalition:])  # the parties outside a coalition of the first `coalition`
    low, high = variance_interval(sigma**2, m)
    assert low <= honest.var(ddof=1) <= high
    total = sum(parts)
    low, high = variance_interval(sigma**2 * parties / (parties - coalition), m)
    assert low <= total.var(ddof=1) <= high


def test_laplace_contributions_sum_to_laplace_outside_a_coalition() -> None:
    """False-alarm rate 1e-6 for each of the KS test and the variance check (normal
    approximation of the mean of X^2, whose variance for Laplace(b) is 20 b^4)."""
    b, m, parties, coalition = 0.7, 20_000, 3, 1
    parts = [dp.laplace_contribution((m,), b, parties, coalition, seeded(20 + i)).numpy()
             for i in range(parties)]
    honest = parts[1] + parts[2]
    assert stats.kstest(honest, stats.laplace(scale=b).cdf).pvalue > FALSE_ALARM
    mean_square = float((honest**2).mean())
    assert abs(mean_square - 2 * b**2) <= Z * math.sqrt(20 * b**4 / m)
    # the contributions alone are not Laplace: the test can tell
    assert stats.kstest(parts[0], stats.laplace(scale=b).cdf).pvalue < FALSE_ALARM


def test_a_coalition_as_large_as_the_parties_is_refused() -> None:
    with pytest.raises(ValueError, match="noise_coalition must be 0 to 2"):
        dp.gaussian_contribution((3,), 1.0, 3, 3)


def test_noise_generated_inside_mpc_has_the_calibrated_variance() -> None:
    """Three parties and the dealer (threads, real meshes): each shares its own contribution
    for the sigma calibrated for (epsilon 1, delta 1e-5), the sum is opened; its variance
    matches that sigma (for noise_coalition 1: 3/2 sigma^2) and it equals the sum of the
    contributions within fixed point. False-alarm rate 1e-6 (chi-square interval)."""
    sigma, m = accounting.gaussian_sigma(1.0, 1e-5), 20_000

    def party(comm: object) -> tuple[np.ndarray, np.ndarray]:
        rank = comm.get_rank()  # type: ignore[attr-defined]
        mine = dp.gaussian_contribution((m,), sigma, 3, 1, seeded(30 + rank))
        return mine.numpy(), dp.joint_noise(mine).get_plain_text().double().numpy()

    results = run_parties(3, party, refuse_openings=False, timeout=120)
    opened = results[0][1]
    assert all(np.array_equal(opened, r[1]) for r in results)
    assert np.abs(opened - sum(r[0] for r in results)).max() < 3 * 2**-16 * 2
    low, high = variance_interval(sigma**2 * 3 / 2, m)
    assert low <= opened.var(ddof=1) <= high


def test_released_counts_carry_the_budget_and_their_noise() -> None:
    """Laplace noise of scale 1/epsilon on four counts, inside MPC (3 parties)."""

    def party(comm: object) -> tuple[list[list[float]], dict[str, object]]:
        import crypten

        rank = comm.get_rank()  # type: ignore[attr-defined]
        counts = crypten.cryptensor(torch.tensor([[50.0, 3.0], [4.0, 56.0]]), src=0)
        noisy, report = dp.release_counts(counts, Budget(0.5, 0.0), "laplace", 3, 1,
                                          seeded(40 + rank))
        return noisy.get_plain_text().tolist(), report

    (opened, report), *_ = run_parties(3, party, refuse_openings=False, timeout=120)
    assert report["epsilon"] == pytest.approx(0.5) and report["delta"] == 0.0
    assert report["scale"] == pytest.approx(2.0) and report["mechanism"] == "laplace"
    assert opened != [[50.0, 3.0], [4.0, 56.0]]
    assert all(abs(a - b) < 60 for a, b in zip(opened[0] + opened[1], [50, 3, 4, 56], strict=True))
