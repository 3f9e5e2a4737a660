"""The accountant wrapper: the same epsilons as dp-accounting used directly, calibration that
never exceeds the target, and the pure-DP epsilon of a Laplace release."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from protocols.blocks import accounting

CASES = [(1.1, 0.07, 150), (3.4, 32 / 456, 150), (0.9, 0.14, 40), (8.0, 1.0, 3)]


def _direct(sigma: float, q: float, steps: int, delta: float) -> tuple[float, float]:
    """dp-accounting by hand: Poisson-sampled Gaussian, self-composed `steps` times."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    with_pld = pld.PLDAccountant(value_discretization_interval=accounting.PLD_INTERVAL)
    return (with_pld.compose(event).get_epsilon(delta),
            rdp.RdpAccountant().compose(event).get_epsilon(delta))


@pytest.mark.parametrize(("sigma", "q", "steps"), CASES)
def test_dp_sgd_epsilon_equals_dp_accountings(sigma: float, q: float, steps: int) -> None:
    event = accounting.dp_sgd_event(sigma, q, steps)
    want_pld, want_rdp = _direct(sigma, q, steps, 1e-5)
    assert accounting.epsilon(event, 1e-5) == pytest.approx(want_pld, rel=1e-12)
    assert accounting.epsilon(event, 1e-5, "rdp") == pytest.approx(want_rdp, rel=1e-12)
    report = accounting.report(event, 1e-5, "gaussian", accounting.ADD_OR_REMOVE, steps=steps)
    assert report["epsilon"] == pytest.approx(want_pld, rel=1e-12)
    assert report["epsilon_rdp"] == pytest.approx(want_rdp, rel=1e-12)
    assert (report["delta"], report["steps"]) == (1e-5, steps)


def test_the_coarse_pld_is_an_upper_bound_close_to_the_fine_one() -> None:
    event = accounting.dp_sgd_event(3.4, 32 / 456, 150)
    fine = pld.PLDAccountant(value_discretization_interval=1e-4).compose(event).get_epsilon(1e-5)
    coarse = accounting.epsilon(event, 1e-5)
    assert fine <= coarse <= fine * 1.02


@pytest.mark.parametrize("target", [1.0, 8.0])
def test_calibration_reaches_the_target_and_never_exceeds_it(target: float) -> None:
    q, steps = 64 / 456, 40
    sigma = accounting.calibrate(lambda s: accounting.dp_sgd_event(s, q, steps), target, 1e-5)
    spent = accounting.epsilon(accounting.dp_sgd_event(sigma, q, steps), 1e-5)
    assert spent <= target
    assert spent >= target * 0.99  # not wastefully noisy
    # a little less noise would overspend
    assert accounting.epsilon(accounting.dp_sgd_event(sigma * 0.99, q, steps), 1e-5) > target


def test_laplace_is_pure_dp_and_gaussian_releases_stay_within_budget() -> None:
    assert accounting.epsilon(accounting.laplace_event(1 / 8), 0.0) == pytest.approx(8.0)
    assert accounting.epsilon(accounting.laplace_event(2.0), 0.0) == pytest.approx(0.5)
    sigma = accounting.gaussian_sigma(1.0, 1e-5)
    assert sigma == pytest.approx(dp_accounting.get_sigma_gaussian(1.0, 1e-5), rel=1e-2)
    assert accounting.epsilon(accounting.gaussian_event(sigma), 1e-5) <= 1.0


def test_an_unreachable_target_is_a_calibration_error() -> None:
    with pytest.raises(accounting.CalibrationError, match="epsilon 1e-09"):
        accounting.calibrate(lambda s: accounting.gaussian_event(s, 10), 1e-9, 1e-12)
