"""What every DP-SGD protocol does around its model [Abadi et al. 2016]: the rows each party
trains and tests on, the public row counts, the budget's checks, the noise multiplier
calibrated before any row is shared, secret Poisson sampling, and pooling rows as shares.

Used by protocols/horizontal/dp_logistic_regression.py and protocols/neural/dp_network.py;
each protocol then runs its own step (gradient bound, noise, update) on the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from protocols.api import Budget, PlainTable, ProtocolError, Session
from protocols.blocks import accounting, dp

Rows = tuple[torch.Tensor, torch.Tensor]  # (features, labels) of this party


@dataclass(frozen=True)
class Plan:
    """This party's rows and the run's public numbers, fixed before anything is shared."""

    mine: Rows  # this party's rows to train on
    test_own: Rows  # and to evaluate on
    test_counts: list[int]  # every party's test rows, rank order (public)
    rows: int  # training rows of all parties
    budget: Budget  # of the trained model's output
    metrics_budget: Budget | None
    q: float  # Poisson sampling rate, batch_size / rows
    per_epoch: int  # steps per epoch
    steps: int
    sigma: float  # the noise multiplier calibrated for `budget`


def plan(session: Session, output: str) -> Plan:
    """Split this party's rows, exchange the row counts, check the budgets of `output` and
    'metrics' against them, and calibrate sigma for (epsilon, delta), q and the number of
    steps with dp-accounting's PLD accountant -- every check fails alike on every party."""
    import crypten

    p = session.params
    if p.noise_coalition >= session.world_size:
        raise ProtocolError(f"noise_coalition {p.noise_coalition} must be below the number of "
                            f"parties ({session.world_size})")
    train, test = session.table("train"), session.table("test")
    if train is None or train.labels is None:
        raise ProtocolError("the protocol needs a labelled 'train' input")
    comm = crypten.communicator.get()
    provided = sum(int(t.item()) for t in comm.all_gather(
        torch.tensor([test.rows if test is not None else 0])))
    mine, test_own = split(train, test, provided == 0, p.test_fraction)
    gathered = [t.tolist() for t in comm.all_gather(
        torch.tensor([mine[0].shape[0], test_own[0].shape[0]]))]
    rows, test_counts = sum(g[0] for g in gathered), [g[1] for g in gathered]
    if rows == 0:
        raise ProtocolError("no party provided training rows")
    if sum(test_counts) == 0:
        raise ProtocolError("there are no test rows and test_fraction is 0: nothing to "
                            "evaluate on")
    budget = session.budget(output)
    if budget is None:
        raise ProtocolError(f"'{output}' has no privacy budget in the manifest")
    check_delta(budget, rows, output, "training rows", gaussian=True)
    metrics_budget = session.budget("metrics")
    if metrics_budget is not None:
        check_delta(metrics_budget, sum(test_counts), "metrics", "test rows",
                    gaussian=p.metrics_mechanism == "gaussian")

    q = min(1.0, p.batch_size / rows)
    per_epoch = math.ceil(rows / p.batch_size)
    steps = p.epochs * per_epoch
    try:
        sigma = accounting.calibrate(lambda s: accounting.dp_sgd_event(s, q, steps),
                                     budget.epsilon, budget.delta)
    except accounting.CalibrationError as exc:
        raise ProtocolError(f"'{output}': {exc}") from None
    session.progress("calibrated", noise_multiplier=round(sigma, 4), steps=steps)
    return Plan(mine, test_own, test_counts, rows, budget, metrics_budget, q, per_epoch,
                steps, sigma)


def poisson_sample(rows: int, steps: int, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each of this party's rows in each step with probability q, from its own secret
    randomness (steps x rows booleans), and every party's sample sizes (parties x steps,
    public, as every run's shapes are)."""
    import crypten

    sampled = torch.from_numpy(dp.secret_uniform(steps * rows)).reshape(steps, rows) < q
    return sampled, torch.stack(crypten.communicator.get().all_gather(sampled.sum(1)))


def check_delta(budget: Budget, rows: int, output: str, what: str, gaussian: bool) -> None:
    """delta must be > 0 for a Gaussian mechanism and < 1/rows for any (public counts)."""
    if gaussian and budget.delta <= 0:
        raise ProtocolError(f"'{output}': the Gaussian mechanism needs delta > 0, got "
                            f"{budget.delta:g}")
    if budget.delta >= 1 / rows:
        raise ProtocolError(f"'{output}': delta {budget.delta:g} is not below 1/rows = 1/{rows} "
                            f"= {1 / rows:.3g} ({rows} {what}); a delta that large allows "
                            "releasing a row outright")


def split(train: PlainTable, test: PlainTable | None, hold_out: bool, fraction: float
          ) -> tuple[Rows, Rows]:
    """This party's (features, labels) to train on and to test on: its test rows, or, when
    no party provides any (`hold_out`), its last ceil(rows x test_fraction) training rows
    (in file order, as the plaintext twins do)."""
    assert train.labels is not None
    if not hold_out:
        if test is None or test.labels is None:
            return (train.features, train.labels), (train.features[:0], train.labels[:0])
        return (train.features, train.labels), (test.features, test.labels)
    keep = train.rows - math.ceil(train.rows * fraction)
    return ((train.features[:keep], train.labels[:keep]),
            (train.features[keep:], train.labels[keep:]))


def shared(rank: int, counts: list[int], *tables: torch.Tensor) -> list[Any]:
    """Each of this party's tables pooled with the other parties' (same columns, `counts`
    rows each, public) as one secret table, in rank order. Sharing sends no messages."""
    import crypten

    out = []
    for x in tables:
        parts = [crypten.cryptensor(x if src == rank else torch.empty(count, x.shape[1]),
                                    src=src) for src, count in enumerate(counts) if count]
        out.append(crypten.cat(parts) if len(parts) > 1 else parts[0])
    return out
