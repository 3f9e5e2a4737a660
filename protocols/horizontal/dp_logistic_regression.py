"""Logistic regression with differential privacy: DP-SGD on shares [Abadi et al. 2016].

The consortium gives the output 'weights' a budget (epsilon, delta) on its
[[reveal]] entry, and optionally 'metrics' one; every party's policy may cap it.

1. The row counts are exchanged (public, as in every run). delta must be below
   1/rows; the noise multiplier sigma is calibrated with dp-accounting's PLD
   accountant for `steps` Poisson-sampled Gaussian steps at rate q = batch_size/rows
   (protocols/blocks/accounting.py) -- all before any row is shared.
2. Each step, every party samples its own rows, each with probability q, with its
   own secret randomness (Poisson sampling [Abadi et al. 2016]; no other party
   learns which rows were used, which is what the accountant's amplification by
   sampling assumes), and secret-shares them; the batch sizes are public.
3. Each example's gradient is bounded without clipping on shares: for logistic
   regression g_i = (sigmoid(w.x_i) - y_i) x_i with |sigmoid - y| <= 1 (both
   sigmoids lie in [0, 1]), so ||g_i|| <= ||x_i||. The row's owner computes the
   factor c_i = min(1, C / ||x_i||) in plaintext and shares c_i x_i for the
   gradient, so ||c_i g_i|| <= C. By default C = sqrt(k + 1): every encoded column
   lies in [0, 1] (ranges scale to [0, 1], values outside are refused when loaded;
   one-hot and binary columns are 0/1) and the intercept column is 1, so c_i = 1 and
   nothing is clipped; a column without a declared range is clipped by c_i.
   `max_grad_norm` sets a smaller C (clipping, as Opacus does, but by the owner).
4. The step adds Gaussian noise N(0, (sigma C)^2) to the gradient sum on shares,
   drawn from every party's secret contribution (protocols/blocks/dp.py), and
   moves by learning_rate / (q rows) [Opacus' expected batch size].
5. Evaluation as in logistic-regression; with a budget on 'metrics', only the
   confusion counts are released, with Laplace (or Gaussian) noise, and the
   metrics are computed from them (no AUC). Each revealed output carries the
   epsilon actually spent ("privacy").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from protocols.api import (
    DP_OPTIONAL,
    DP_REQUIRED,
    Budget,
    ExportContext,
    Input,
    Output,
    Param,
    Params,
    PlainTable,
    Protocol,
    Session,
    public_generator,
)
from protocols.blocks import accounting, approximations, dp, dp_sgd, metrics
from protocols.federated.local_models import one_thread
from protocols.horizontal.logistic_regression import export_model as export_weights

MECHANISM = "gaussian (DP-SGD: Poisson-sampled gradient sums)"


def run(session: Session) -> dict[str, Any]:
    """Calibrate, train with DP-SGD on secret Poisson samples, evaluate, reveal as declared."""
    import crypten

    p = session.params
    n_parties = session.world_size
    # 1. row counts, budget checks, sigma for (epsilon, delta), q and the steps [PLD]
    plan = dp_sgd.plan(session, "weights")
    mine, rows, q, steps, per_epoch, sigma = (plan.mine, plan.rows, plan.q, plan.steps,
                                              plan.per_epoch, plan.sigma)
    width = mine[0].shape[1] + 1  # encoded columns and the intercept
    bound = p.max_grad_norm or math.sqrt(width)  # ||x_i|| <= sqrt(k + 1): see the docstring

    # 2.-4. DP-SGD: the owner samples, bounds and scales its rows; noise from every party
    step = p.learning_rate / (q * rows)
    forward, backward, labels = _prepared(mine[0], mine[1], bound, step, p.sigmoid)
    sampled, sizes = dp_sgd.poisson_sample(forward.shape[0], steps, q)
    noise_std = sigma * bound * step
    wb = crypten.cryptensor(torch.zeros(width, 1), src=0)
    start = 0
    restored = session.restore()
    if restored is not None:
        start, state = restored
        wb = state["weights"]
        session.progress("resumed", epoch=start, of=p.epochs)
    with crypten.no_grad():
        for epoch in range(start, p.epochs):
            for s in range(epoch * per_epoch, (epoch + 1) * per_epoch):
                chosen = sampled[s]
                gradient = _gradient_sum(session.rank, sizes[:, s].tolist(), forward[chosen],
                                         backward[chosen], labels[chosen], wb, p.sigmoid)
                noise = dp.joint_noise(dp.gaussian_contribution(
                    (width, 1), noise_std, n_parties, p.noise_coalition))
                wb = wb - noise if gradient is None else wb - gradient - noise
            session.checkpoint(epoch + 1, {"weights": wb})
            session.progress("epoch", epoch=epoch + 1, of=p.epochs)

    # 5. evaluate on the test rows; reveal the weights and the (noisy) metrics in one round
    xt, yt = dp_sgd.shared(session.rank, plan.test_counts, *plan.test_own)
    scores = xt.matmul(wb[:-1]) + wb[-1]
    privacy = accounting.report(
        accounting.dp_sgd_event(sigma, q, steps), plan.budget.delta, MECHANISM,
        accounting.ADD_OR_REMOVE, noise_multiplier=sigma, sampling_probability=q, steps=steps,
        max_grad_norm=bound, noise_coalition=p.noise_coalition)
    if plan.metrics_budget is None:
        opened = session.reveal({"metrics": metrics.binary_metrics(scores, yt),
                                 "weights": wb.reshape(-1)})
        measured = None if opened["metrics"] is None else metrics.as_plain(opened["metrics"])
    else:
        noisy, metrics_privacy = dp.release_counts(
            metrics.confusion(scores, yt), plan.metrics_budget, p.metrics_mechanism, n_parties,
            p.noise_coalition)
        opened = session.reveal({"metrics": noisy, "weights": wb.reshape(-1)})
        measured = None if opened["metrics"] is None else {
            **metrics.from_confusion(opened["metrics"].tolist()), "auc": None,
            "privacy": metrics_privacy}
    weights = None if opened["weights"] is None else {
        "weights": opened["weights"].tolist(), "privacy": privacy}
    return {"metrics": measured, "weights": weights}




def _prepared(x: torch.Tensor, y: torch.Tensor, bound: float, step: float, sigmoid: str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The owner's rows for the forward pass (x/4 for the piecewise sigmoid, which then takes
    z/4 directly), for the gradient (c_i x_i scaled by the step) and the labels."""
    design = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    norms = design.norm(dim=1, keepdim=True)
    factor = torch.clamp(bound / norms.clamp_min(1e-12), max=1.0)  # c_i = min(1, C/||x_i||)
    forward = design / 4 if sigmoid == "piecewise" else design
    return forward.float(), (design * factor * step).float(), y.float()



def _gradient_sum(rank: int, sizes: list[int], forward: torch.Tensor, backward: torch.Tensor,
                  labels: torch.Tensor, wb: Any, sigmoid: str) -> Any:
    """sum_i c_i x_i (sigmoid(w.x_i) - y_i) x step over this step's sampled rows, on shares;
    None when no party sampled a row."""
    if sum(sizes) == 0:
        return None
    xf, xb, y = dp_sgd.shared(rank, sizes, forward, backward, labels)
    z = xf.matmul(wb)
    if sigmoid == "piecewise":
        err = approximations.piecewise_sigmoid_of_quarter(z) - y
    else:
        err = approximations.sigmoid(z, sigmoid) - y
    return xb.t().matmul(err)


def plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
              alone: int | None) -> dict[str, Any]:
    """The same training in float64 without noise (what DP costs is the difference), with
    Poisson samples drawn from the joint seed instead of each party's secret randomness."""
    with one_thread():
        return _plaintext(inputs, params, seed, alone)


def simulate(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
             budget: Budget) -> dict[str, Any]:
    """The plaintext twin WITH the secure run's noise, for planning (`smpc tradeoff`): sigma
    calibrated as `run` does for the budget and the pooled row count, Gaussian noise of the
    std every party's contributions sum to (n / (n - noise_coalition) times the variance)
    drawn from a torch generator of `seed` -- not secret: a simulation, never a release."""
    trains = inputs["train"]
    tests = inputs.get("test") or [None] * len(trains)
    hold_out = sum(t.rows for t in tests if t is not None) == 0
    rows = sum(dp_sgd.split(t, u, hold_out, params.test_fraction)[0][0].shape[0]
               for t, u in zip(trains, tests, strict=True))
    q = min(1.0, params.batch_size / rows)
    steps = params.epochs * math.ceil(rows / params.batch_size)
    sigma = accounting.calibrate(lambda s: accounting.dp_sgd_event(s, q, steps),
                                 budget.epsilon, budget.delta)
    parties = len(trains)
    spread = math.sqrt(parties / (parties - params.noise_coalition))
    with one_thread():
        out = _plaintext(inputs, params, seed, None, (sigma * spread, public_generator(
            seed, "dp-sgd:simulated-noise")))
    out["weights"]["privacy"] = accounting.report(
        accounting.dp_sgd_event(sigma, q, steps), budget.delta, MECHANISM + ", simulated",
        accounting.ADD_OR_REMOVE, noise_multiplier=sigma, sampling_probability=q, steps=steps)
    return out


def _plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
               alone: int | None,
               noise: tuple[float, torch.Generator] | None = None) -> dict[str, Any]:
    trains = inputs["train"]
    tests = inputs.get("test") or [None] * len(trains)
    hold_out = sum(t.rows for t in tests if t is not None) == 0
    split = [dp_sgd.split(t, u, hold_out, params.test_fraction)
             for t, u in zip(trains, tests, strict=True)]
    ranks = range(len(split)) if alone is None else [alone]
    x = torch.cat([split[r][0][0] for r in ranks]).double()
    y = torch.cat([split[r][0][1] for r in ranks]).double()
    xt = torch.cat([s[1][0] for s in split]).double()
    yt = torch.cat([s[1][1] for s in split]).double()
    rows = x.shape[0]
    q = min(1.0, params.batch_size / rows)
    width = x.shape[1] + 1
    bound = params.max_grad_norm or math.sqrt(width)
    step = params.learning_rate / (q * rows)
    forward, backward, labels = (t.double() for t in _prepared(x, y, bound, step,
                                                                params.sigmoid))
    generator = public_generator(seed, "dp-sgd:plaintext-sampling")
    wb = torch.zeros(width, 1, dtype=torch.float64)
    for _ in range(params.epochs * math.ceil(rows / params.batch_size)):
        chosen = torch.rand(rows, generator=generator, dtype=torch.float64) < q
        z = forward[chosen] @ wb
        if params.sigmoid == "piecewise":
            err = (0.5 + z).clamp(0.0, 1.0) - labels[chosen]  # z is already z/4
        else:
            err = torch.sigmoid(z) - labels[chosen]
        wb = wb - backward[chosen].T @ err
        if noise is not None:  # N(0, (sigma C step)^2) per coordinate, as in `run`
            wb = wb - torch.randn(wb.shape, generator=noise[1], dtype=torch.float64) * (
                noise[0] * bound * step)
    scores = xt @ wb[:-1] + wb[-1]
    return {"metrics": metrics.binary_metrics_plain(scores, yt),
            "weights": {"weights": wb.reshape(-1).tolist(), "privacy": None}}


def export_model(value: dict[str, Any], ctx: ExportContext) -> list[Path]:
    """model.pt and model.json as logistic-regression writes them, with the privacy spent."""
    files = export_weights(value["weights"], ctx)
    meta_path = next(f for f in files if f.suffix == ".json")
    meta = json.loads(meta_path.read_text())
    meta["privacy"] = value.get("privacy")
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return files


PROTOCOL = Protocol(
    name="dp-logistic-regression",
    version="1",
    summary="logistic regression trained by DP-SGD on the parties' pooled rows (noise drawn "
            "inside MPC), evaluated on shares",
    run=run,
    params=(
        Param("epochs", int, 10, "passes over the training rows (each of ceil(rows / "
              "batch_size) Poisson-sampled steps)", minimum=1),
        Param("batch_size", int, 32, "expected rows per step: the sampling rate is "
              "batch_size / rows", minimum=1),
        Param("learning_rate", float, 1.0, "SGD step size", above=0),
        Param("sigmoid", str, "piecewise", "SecureML's piecewise-linear sigmoid, or CrypTen's "
              "exp + reciprocal", choices=approximations.SIGMOIDS),
        Param("max_grad_norm", float, 0.0, "the bound C on each example's gradient: 0 for the "
              "bound of the scaled features, sqrt(columns + 1); smaller values clip rows by "
              "their owner", minimum=0),
        Param("noise_coalition", int, 1, "the largest coalition of parties the noise still "
              "protects against: each party adds 1/(parties - noise_coalition) of the noise "
              "variance", minimum=0),
        Param("metrics_mechanism", str, "laplace", "the noise on the confusion counts when "
              "'metrics' has a budget", choices=("laplace", "gaussian")),
        Param("test_fraction", float, 0.2, "share of each party's training rows (its last "
              "ones) held out for evaluation when it provides no test rows", minimum=0,
              maximum=0.9),
    ),
    inputs=(
        Input("train", "labelled rows to train on", classes=2),
        Input("test", "labelled rows to evaluate on", required=False, classes=2),
    ),
    outputs=(
        Output("metrics", "accuracy, precision, recall, F1 (and ROC AUC without a budget) on "
               "the test rows; with a budget, from noisy confusion counts", dp=DP_OPTIONAL),
        Output("weights", "the model trained with DP-SGD (one weight per encoded column, then "
               "the intercept) and the privacy spent", export=export_model, dp=DP_REQUIRED),
    ),
    plaintext=plaintext,
    compare="metrics",
)
