"""A PyTorch network trained with differential privacy: DP-SGD on shares [Abadi et al. 2016].

The consortium names the model as for neural-network (protocols/neural/model.py;
its source is in the code hash) and gives the output 'model' a budget (epsilon,
delta) on its [[reveal]] entry (optionally 'metrics' one); every party's policy
may cap it. What Opacus users set is here: `max_grad_norm` C, the expected
`batch_size`, `epochs`; the noise multiplier is computed from the budget, as
Opacus' make_private_with_epsilon does.

1. The row counts are exchanged (public). delta must be below 1/rows; the noise
   multiplier sigma is calibrated with dp-accounting's PLD accountant for
   `steps` = epochs x ceil(rows / batch_size) Poisson-sampled Gaussian steps at
   rate q = batch_size / rows (protocols/blocks/accounting.py), before any row is
   shared. Every party builds the model with the same initial weights from the
   joint seed; the secure graph's weights are shares.
2. Each step, every party samples its own rows, each with probability q, with its
   own secret randomness (Poisson sampling: no other party learns which rows were
   used, which the accountant's amplification by sampling assumes), and shares
   them with their one-hot labels; the batch sizes are public.
3. Forward pass; each example's gradient of its cross-entropy at the scores,
   p_i - y_i; the backward pass gives each Linear layer's per-example output
   gradient; each example's gradient norm, its factor c_i = min(1, C/||g_i||) and
   the clipped gradient sum are computed on shares (protocols/neural/per_example.py,
   which proves ||c_i g_i|| <= C).
4. Gaussian noise N(0, (sigma C)^2) on every coordinate of the sum, drawn from every
   party's secret contribution (protocols/blocks/dp.py); SGD (with momentum and
   weight decay, post-processing of the noisy sums) moves by learning_rate / (q rows)
   times it [Opacus' expected batch size].
5. Evaluation as in neural-network on the parties' test rows (or each party's last
   test_fraction of its rows); with a budget on 'metrics', only the K x K confusion
   counts are released, with Laplace (or Gaussian) noise, and the metrics are
   computed from them. Each revealed output carries the epsilon actually spent.

Only Linear layers (with bias), ReLU, Dropout, Flatten and a final softmax are
accepted: BatchNorm mixes the examples of a batch (Opacus refuses it too) and
Conv2d's per-example clipping on shares is not implemented.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
    ProtocolError,
    Session,
    public_generator,
)
from protocols.blocks import accounting, approximations, dp, dp_sgd, metrics, optimizers
from protocols.federated.local_models import one_thread
from protocols.neural import model as models
from protocols.neural import network, per_example

MECHANISM = "gaussian (DP-SGD: Poisson-sampled, per-example clipped gradient sums)"
DP_LAYERS = (nn.Linear, nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity, nn.Softmax,
             nn.LogSoftmax)


def run(session: Session) -> dict[str, Any]:
    """Calibrate, train with DP-SGD on secret Poisson samples, evaluate, reveal as declared."""
    import crypten

    p = session.params
    n_parties = session.world_size
    # 1. row counts, budget checks, sigma for (epsilon, delta), q and the steps [PLD]
    plan = dp_sgd.plan(session, "model")
    mine, rows, q, steps, per_epoch, sigma = (plan.mine, plan.rows, plan.q, plan.steps,
                                              plan.per_epoch, plan.sigma)
    classes = len(session.table("train").classes)
    width = mine[0].shape[1]
    torch_model = network._checked_model(
        models.spec(p), models.joint_seed(session.generator(models.INIT_PURPOSE)), width,
        classes)
    secure = crypten.nn.from_pytorch(torch_model, torch.empty(2, width)).encrypt(src=0)
    try:
        layers = per_example.instrument(secure)
    except per_example.LayerError as exc:
        raise ProtocolError(str(exc)) from None
    names = [n for n, _ in secure.named_parameters()]
    params = [t for _, t in secure.named_parameters()]
    # SGD on the noisy sum s with step 1/(q rows): velocity kept as v / step, so the
    # update is optimizers.sgd_step(g = s, lr = lr step, wd / step): no extra truncation
    step = 1.0 / (q * rows)
    velocity = [crypten.cryptensor(torch.zeros(t.size()), src=0) for t in params]

    # 2.-4. DP-SGD: the owner samples its rows; clipping and noise on shares
    sampled, sizes = dp_sgd.poisson_sample(mine[0].shape[0], steps, q)
    onehot = torch.nn.functional.one_hot(mine[1].reshape(-1).long(), classes).float()
    total = sum(t.numel() for t in params)
    start = 0
    restored = session.restore()
    if restored is not None:
        start, state = restored
        velocity = network._restore(secure, state)
        session.progress("resumed", epoch=start, of=p.epochs)
    for epoch in range(start, p.epochs):
        lr = optimizers.learning_rate(p.learning_rate, p.lr_schedule, epoch, p.epochs,
                                      p.lr_step, p.lr_gamma)
        for s in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            chosen = sampled[s]
            sums = _clipped_sum(secure, layers, session.rank, sizes[:, s].tolist(),
                                mine[0][chosen], onehot[chosen], p)
            noise = dp.joint_noise(dp.gaussian_contribution(
                (total,), sigma * p.max_grad_norm, n_parties, p.noise_coalition))
            noisy = _plus_noise(sums, names, params, noise)
            with crypten.no_grad():
                weights, velocity = optimizers.sgd_step(params, noisy, velocity, lr * step,
                                                        p.momentum, p.weight_decay / step)
                for t, w in zip(params, weights, strict=True):
                    t.copy_(w)
        session.checkpoint(epoch + 1, network._state(secure, velocity))
        session.progress("epoch", epoch=epoch + 1, of=p.epochs)

    # 5. evaluate on the test rows; reveal the model and the (noisy) metrics in one round
    xt, yt = dp_sgd.shared(session.rank, plan.test_counts, *plan.test_own)
    secure.eval()
    with crypten.no_grad():
        scores = secure(xt)
    privacy = accounting.report(
        accounting.dp_sgd_event(sigma, q, steps), plan.budget.delta, MECHANISM,
        accounting.ADD_OR_REMOVE, noise_multiplier=sigma, sampling_probability=q, steps=steps,
        max_grad_norm=p.max_grad_norm, noise_coalition=p.noise_coalition)
    outputs: dict[str, Any] = {"model": network._named_state(secure)}
    metrics_privacy = None
    if plan.metrics_budget is None:
        outputs["metrics"] = metrics.multiclass_metrics(scores, yt, classes)
    else:
        outputs["metrics"], metrics_privacy = dp.release_counts(
            metrics.multiclass_confusion(scores, yt, classes), plan.metrics_budget,
            p.metrics_mechanism, n_parties, p.noise_coalition)
    opened = session.reveal(outputs)
    measured = opened["metrics"]
    if measured is not None:
        measured = metrics.as_plain(measured) if metrics_privacy is None else {
            **metrics.from_multiclass_confusion(measured.tolist()), "privacy": metrics_privacy}
    model = None if opened["model"] is None else {
        "state_dict": {k: v.tolist() for k, v in opened["model"].items()}, "privacy": privacy}
    return {"metrics": measured, "model": model}


def _clipped_sum(secure: Any, layers: list[per_example.LinearLayer], rank: int,
                 sizes: list[int], x: torch.Tensor, onehot: torch.Tensor, p: Params
                 ) -> dict[str, Any] | None:
    """sum_i min(1, C/||g_i||) g_i over this step's sampled rows of every party, on shares,
    by parameter name; None when no party sampled a row."""
    import crypten

    if sum(sizes) == 0:
        return None
    xs, ys = dp_sgd.shared(rank, sizes, x, onehot)
    secure.train()
    for t in secure.parameters():
        t.requires_grad = False  # the backward pass computes the layers' deltas only
    scores = secure(xs)
    with crypten.no_grad():
        probabilities, _, _ = approximations.softmax_gradient(scores, 1, p.exp_iterations)
        signal = probabilities - ys  # each example's gradient at its scores
    scores.backward(signal)
    with crypten.no_grad():
        factors = per_example.clip_factors(per_example.norms_squared(layers), p.max_grad_norm)
        return per_example.clipped_gradient_sum(layers, factors)


def _plus_noise(sums: dict[str, Any] | None, names: list[str], params: list[Any],
                noise: Any) -> list[Any]:
    """Each parameter's clipped sum plus its slice of the joint noise."""
    out, at = [], 0
    for name, t in zip(names, params, strict=True):
        n = int(torch.Size(t.size()).numel())
        part = noise[at:at + n].reshape(t.size())
        at += n
        out.append(part if sums is None else sums[name] + part)
    return out


# ---------------------------------------------------------------- plaintext twin

def plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
              alone: int | None) -> dict[str, Any]:
    """The same DP-SGD in float64 without noise (what DP costs is the difference): Poisson
    samples from the joint seed instead of each party's secret randomness, Opacus' clipping,
    the same softmax approximation."""
    with one_thread():
        return _plaintext(inputs, params, seed, alone)


def simulate(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
             budget: Budget) -> dict[str, Any]:
    """The plaintext twin WITH the secure run's noise, for planning (`smpc tradeoff`): sigma
    calibrated as `run` does for the budget and the pooled training rows, Gaussian noise of
    std sigma C sqrt(n / (n - noise_coalition)) (every party's contribution) on each step's
    clipped sum, drawn from a torch generator of `seed` -- not secret: a simulation, never a
    release."""
    trains = inputs["train"]
    tests = inputs.get("test") or [None] * len(trains)
    hold_out = sum(t.rows for t in tests if t is not None) == 0
    rows = sum(dp_sgd.split(t, u, hold_out, params.test_fraction)[0][0].shape[0]
               for t, u in zip(trains, tests, strict=True))
    q = min(1.0, params.batch_size / rows)
    steps = params.epochs * math.ceil(rows / params.batch_size)
    sigma = accounting.calibrate(lambda s: accounting.dp_sgd_event(s, q, steps),
                                 budget.epsilon, budget.delta)
    spread = math.sqrt(len(trains) / (len(trains) - params.noise_coalition))
    with one_thread():
        out = _plaintext(inputs, params, seed, None, (
            sigma * params.max_grad_norm * spread,
            public_generator(seed, "dp-sgd:simulated-noise")))
    out["model"]["privacy"] = accounting.report(
        accounting.dp_sgd_event(sigma, q, steps), budget.delta, MECHANISM + ", simulated",
        accounting.ADD_OR_REMOVE, noise_multiplier=sigma, sampling_probability=q, steps=steps)
    return out


def _plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
               alone: int | None,
               noise: tuple[float, torch.Generator] | None = None) -> dict[str, Any]:
    trains = inputs["train"]
    classes = len(trains[0].classes)
    tests = inputs.get("test") or [None] * len(trains)
    hold_out = sum(t.rows for t in tests if t is not None) == 0
    split = [dp_sgd.split(t, u, hold_out, params.test_fraction)
             for t, u in zip(trains, tests, strict=True)]
    ranks = range(len(split)) if alone is None else [alone]
    x = torch.cat([split[r][0][0] for r in ranks]).double()
    y = torch.cat([split[r][0][1] for r in ranks]).reshape(-1).long()
    xt = torch.cat([s[1][0] for s in split]).double()
    yt = torch.cat([s[1][1] for s in split]).double()
    rows = x.shape[0]
    q = min(1.0, params.batch_size / rows)
    init = models.joint_seed(public_generator(seed, models.INIT_PURPOSE))
    model = models.without_final_softmax(models.build(models.spec(params), init),
                                         x.shape[1]).double().train()
    onehot = torch.nn.functional.one_hot(y, classes).double()
    generator = public_generator(seed, "dp-sgd:plaintext-sampling")
    weights = list(model.parameters())
    velocity = [torch.zeros_like(w) for w in weights]
    step = 1.0 / (q * rows)
    per_epoch = math.ceil(rows / params.batch_size)
    for epoch in range(params.epochs):
        lr = optimizers.learning_rate(params.learning_rate, params.lr_schedule, epoch,
                                      params.epochs, params.lr_step, params.lr_gamma)
        for _ in range(per_epoch):
            chosen = torch.rand(rows, generator=generator, dtype=torch.float64) < q
            if not chosen.any() and noise is None:
                continue
            if chosen.any():
                with torch.no_grad():
                    scores = model(x[chosen])
                p_, _, _ = approximations.softmax_gradient_plain(scores, 1,
                                                                 params.exp_iterations)
                grads = per_example.per_example_gradients(model, x[chosen],
                                                          p_ - onehot[chosen])
                sums, _ = per_example.clipped_sum_plain(grads, params.max_grad_norm)
            else:  # an empty sample: the run adds the noise alone
                sums = {k: torch.zeros_like(w) for k, w in model.named_parameters()}
            if noise is not None:
                sums = {k: v + torch.randn(v.shape, generator=noise[1], dtype=v.dtype) * noise[0]
                        for k, v in sums.items()}
            with torch.no_grad():
                new, velocity = optimizers.sgd_step_plain(
                    [w.detach() for w in weights], [sums[k] for k, _ in
                                                    model.named_parameters()],
                    velocity, lr * step, params.momentum, params.weight_decay / step)
                for w, v in zip(weights, new, strict=True):
                    w.copy_(v)
    model.eval()
    with torch.no_grad():
        scores = model(xt)
    return {"metrics": metrics.multiclass_metrics_plain(scores, yt, classes),
            "model": {"state_dict": {k: v.tolist() for k, v in model.state_dict().items()},
                      "privacy": None}}


def export_model(value: dict[str, Any], ctx: ExportContext) -> list[Path]:
    """model.pt and model.json as neural-network writes them, with the privacy spent."""
    files = network.export_model(value["state_dict"], ctx)
    meta_path = next(f for f in files if f.suffix == ".json")
    meta = json.loads(meta_path.read_text())
    meta["privacy"] = value.get("privacy")
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return files


def _validate(params: Params) -> str | None:
    """The model builds and holds only layers per-example clipping covers."""
    model = models.build(models.spec(params))
    models.check_layers(model)
    for name, layer in model.named_modules():
        leaf = not any(True for _ in layer.children())
        if leaf and type(layer).__module__.startswith("torch.nn") and \
                not isinstance(layer, DP_LAYERS):
            return (f"model {params.model}: layer '{name}' ({type(layer).__name__}) is not "
                    "supported with DP-SGD: per-example clipping on shares covers Linear, "
                    "ReLU, Dropout, Flatten and a final softmax (BatchNorm mixes a batch's "
                    "examples; Conv2d is not implemented)")
        if isinstance(layer, nn.Linear) and layer.bias is None:
            return (f"model {params.model}: layer '{name}' (Linear without bias) is not "
                    "supported with DP-SGD")
    if params.lr_schedule == "step" and params.lr_step < 1:
        return "lr_step must be at least 1 with lr_schedule = \"step\""
    return None


PROTOCOL = Protocol(
    name="dp-neural-network",
    version="1",
    summary="a PyTorch model trained by DP-SGD on the parties' pooled rows (per-example "
            "clipping and noise inside MPC), evaluated on shares",
    run=run,
    params=(
        Param("model", str, help="the model class: 'file.py:Class' (beside the consortium "
              "file) or 'package.module:Class' (Linear, ReLU, Dropout, Flatten layers)"),
        Param("model_args", dict, {}, "the class's keyword arguments"),
        Param("max_grad_norm", float, 1.0, "C: each example's gradient is clipped to this L2 "
              "norm on shares (Opacus' max_grad_norm)", above=0),
        Param("epochs", int, 5, "passes over the training rows (each of ceil(rows / "
              "batch_size) Poisson-sampled steps)", minimum=1),
        Param("batch_size", int, 64, "expected rows per step: the sampling rate is "
              "batch_size / rows", minimum=1),
        Param("learning_rate", float, 0.1, "SGD step size", above=0),
        Param("momentum", float, 0.0, "SGD momentum", minimum=0, maximum=0.999),
        Param("weight_decay", float, 0.0, "L2 penalty added to the gradient", minimum=0),
        Param("lr_schedule", str, "constant", "the learning rate per epoch: constant, x "
              "lr_gamma every lr_step epochs, or cosine annealing to 0",
              choices=optimizers.SCHEDULES),
        Param("lr_step", int, 1, "epochs between steps of the 'step' schedule", minimum=1),
        Param("lr_gamma", float, 0.1, "factor of the 'step' schedule", above=0),
        Param("exp_iterations", int, 8, "squarings of the softmax's exp (as neural-network)",
              minimum=6, maximum=12),
        Param("noise_coalition", int, 1, "the largest coalition of parties the noise still "
              "protects against: each party adds 1/(parties - noise_coalition) of the noise "
              "variance", minimum=0),
        Param("metrics_mechanism", str, "laplace", "the noise on the confusion counts when "
              "'metrics' has a budget", choices=("laplace", "gaussian")),
        Param("test_fraction", float, 0.2, "share of each party's training rows (its last "
              "ones) held out for evaluation when no party provides test rows", minimum=0,
              maximum=0.9),
    ),
    inputs=(
        Input("train", "labelled rows to train on"),
        Input("test", "labelled rows to evaluate on", required=False),
    ),
    outputs=(
        Output("metrics", "accuracy, per-class precision, recall and F1, macro-F1 and the "
               "confusion matrix on the test rows; with a budget, from noisy confusion counts",
               dp=DP_OPTIONAL),
        Output("model", "the weights trained with DP-SGD by state_dict key, and the privacy "
               "spent", export=export_model, dp=DP_REQUIRED),
    ),
    plaintext=plaintext,
    compare="metrics",
    validate=_validate,
    sources=models.sources,
)
