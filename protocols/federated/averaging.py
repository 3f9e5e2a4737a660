"""Federated averaging with secure aggregation [McMahan et al. 2017; Bonawitz et al. 2017].

The model is logistic regression (`model = "logistic-regression"`) or a network
named as in neural-network (`model = "models.py:MLP"`, `model_args`; its source
is in the manifest's code hash; protocols/federated/local_network.py).

1. The row counts are exchanged (public: they weight the average); every party
   needs at least one batch. The global model starts at zero (logistic
   regression) or at the class's initial weights under the joint seed (a network).
2. Each round, every party trains the global model on its own rows in plaintext
   PyTorch for `local_epochs` passes (protocols/federated/local_models.py) and
   secret-shares its weighted update (n_i / N) (w_i - w) (a network's: every
   floating-point state_dict entry, BatchNorm's statistics included); the shares
   are summed, so no party's update exists anywhere but in its owner's memory.
3. With a budget on 'weights' (distributed DP), Gaussian noise drawn from every
   party's secret contribution (protocols/blocks/dp.py) is added to the sum on
   shares. Its scale is the sensitivity of the average to replacing one row:
   (max_i n_i / N) x 2 E eta C / b for logistic regression, whose per-row weighted
   loss is convex, C-Lipschitz and beta-smooth [Wu et al. 2017]; for a network,
   whose loss is not convex, each party clips its update to `clipping_norm` S
   first and the sensitivity is (max_i n_i / N) x 2 S [McMahan et al. 2018]. The
   noise multiplier for R rounds is calibrated with dp-accounting's PLD accountant.
4. Only the (noisy) average is revealed, to every party: the next round starts
   from it. The model after the last round is the trained model.
5. Evaluation: every party computes the final model's logits (a network's class
   scores) on its own test rows and secret-shares them with its labels; the
   metrics are computed on shares as in logistic-regression (binary) or
   neural-network (multi-class); with a budget on 'metrics', only noisy
   confusion counts are released.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from protocols.api import (
    DP_OPTIONAL,
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
from protocols.blocks import accounting, aggregation, dp, metrics
from protocols.federated.local_models import MODELS, LocalModel, RowBound, row_bound
from protocols.federated.local_network import LocalNetwork, clipped, network
from protocols.neural import model as models

MECHANISM = "gaussian (distributed DP on the secure sum of updates)"
LOGISTIC = "logistic-regression"


def local_model(params: Params) -> LocalModel | LocalNetwork:
    """Logistic regression, or the consortium's network class."""
    return MODELS[params.model] if params.model in MODELS else network(params)


def run(session: Session) -> dict[str, Any]:
    """Rounds of local training and secure averaging, then secure evaluation."""
    import crypten

    p = session.params
    model = local_model(p)
    n_parties = session.world_size
    missing = [r for r in session.parties if r not in session.recipients("weights")]
    if missing:
        raise ProtocolError(f"'weights' must be revealed to every party: each trains the next "
                            f"round from them ([[reveal]] 'weights' leaves out {missing})")
    if p.noise_coalition >= n_parties:
        raise ProtocolError(f"noise_coalition {p.noise_coalition} must be below the number of "
                            f"parties ({n_parties})")
    train, test = session.table("train"), session.table("test")
    if train is None or train.labels is None:
        raise ProtocolError("the protocol needs a labelled 'train' input")
    classes = len(train.classes)
    if isinstance(model, LocalModel) and classes != 2:
        raise ProtocolError(f"model '{LOGISTIC}' needs 2 label classes, the table has "
                            f"{classes}: name a network class for more")
    comm = crypten.communicator.get()
    gathered = [t.tolist() for t in comm.all_gather(torch.tensor(
        [train.rows, test.rows if test is not None else 0]))]
    counts, test_counts = [g[0] for g in gathered], [g[1] for g in gathered]
    small = [(session.parties[r], c) for r, c in enumerate(counts) if c < p.batch_size]
    if small:
        raise ProtocolError(f"party '{small[0][0]}' has {small[0][1]} training rows, fewer "
                            f"than one batch (batch_size {p.batch_size})")
    rows, columns = sum(counts), train.features.shape[1]
    if sum(test_counts) == 0:
        raise ProtocolError("no party provided test rows: nothing to evaluate on")

    # 3. (before any update is shared) the noise for a DP budget on 'weights'
    budget = session.budget("weights")
    bound, clip, noise_std, privacy = None, None, 0.0, None
    if budget is not None:
        if isinstance(model, LocalNetwork):
            clip = p.clipping_norm
        else:
            bound = row_bound(columns, p.max_grad_norm)
        noise_std, privacy = _calibrated(model, bound, budget, p, max(counts) / rows, rows)

    # 1.-4. rounds: local training, weighted updates summed on shares, the average revealed
    flat = model.initial(columns, models.joint_seed(session.generator(models.INIT_PURPOSE)))
    start = 0
    restored = session.restore()
    if restored is not None:
        start, state = restored
        flat = torch.tensor(state["model"], dtype=model.dtype)
        session.progress("resumed", epoch=start, of=p.rounds)
    for r in range(start, p.rounds):
        local = model.train(flat, train.features, train.labels, p.local_epochs, p.batch_size,
                            p.learning_rate, _local_order(session.seed, session.rank, r), bound)
        change = local - flat if clip is None else clipped(local - flat, clip)
        update = change * (train.rows / rows)  # weighted by the public row counts
        total = aggregation.secure_sum(update)  # every party's update, shared and summed
        if budget is not None:
            total = total + dp.joint_noise(dp.gaussian_contribution(
                tuple(update.shape), noise_std, n_parties, p.noise_coalition))
        average = session.reveal("weights", total)["weights"]
        flat = flat + average.to(model.dtype)
        session.checkpoint(r + 1, {"model": flat.tolist()})
        stats = session.communication_stats()
        session.progress("round", epoch=r + 1, of=p.rounds, rounds=stats.get("rounds"),
                         bytes_sent=stats.get("bytes_sent"))

    # 5. evaluation on every party's test rows, on shares
    mine = test if test is not None and test.labels is not None else None
    width = 1 if isinstance(model, LocalModel) else classes
    logits = model.logits(flat, mine.features).float() if mine is not None \
        else torch.empty(0, width)
    labels = mine.labels.float() if mine is not None else torch.empty(0, 1)
    scores, truth = (_pooled(session.rank, test_counts, t) for t in (logits, labels))
    metrics_budget = session.budget("metrics")
    if metrics_budget is None:
        secure = metrics.binary_metrics(scores, truth) if width == 1 else \
            metrics.multiclass_metrics(scores, truth, classes)
        opened = session.reveal("metrics", secure)["metrics"]
        measured = None if opened is None else metrics.as_plain(opened)
    else:
        _check_delta(metrics_budget, sum(test_counts), "metrics", p.metrics_mechanism)
        counts_ = metrics.confusion(scores, truth) if width == 1 else \
            metrics.multiclass_confusion(scores, truth, classes)
        noisy, metrics_privacy = dp.release_counts(
            counts_, metrics_budget, p.metrics_mechanism, n_parties, p.noise_coalition)
        opened = session.reveal("metrics", noisy)["metrics"]
        if opened is None:
            measured = None
        elif width == 1:
            measured = {**metrics.from_confusion(opened.tolist()), "auc": None,
                        "privacy": metrics_privacy}
        else:
            measured = {**metrics.from_multiclass_confusion(opened.tolist()),
                        "privacy": metrics_privacy}
    return {"metrics": measured,
            "weights": {"weights": flat.tolist(), "rounds": p.rounds, "privacy": privacy}}


def _calibrated(model: LocalModel | LocalNetwork, bound: RowBound | None, budget: Budget,
                p: Params, share: float, rows: int) -> tuple[float, dict[str, Any]]:
    """The noise std on the sum of updates for the budget over all rounds, and its report."""
    if isinstance(model, LocalNetwork):
        if p.clipping_norm <= 0:
            raise ProtocolError(f"model {model.name} has no bound on one row's influence: a DP "
                                "budget on 'weights' needs clipping_norm > 0 (each party's "
                                "update is clipped to it)")
        sensitivity, clip = 2 * p.clipping_norm, {"clipping_norm": p.clipping_norm}
    else:
        assert bound is not None
        sensitivity = model.sensitivity(bound, p.local_epochs, p.batch_size, p.learning_rate)
        if sensitivity is None:
            raise ProtocolError(f"model '{model.name}' has no bound on one row's influence "
                                "yet: a DP budget on 'weights' needs one")
        largest = model.largest_step(bound)
        if p.learning_rate > largest:
            raise ProtocolError(f"learning_rate {p.learning_rate:g} is above 2/beta = "
                                f"{largest:.3g} (max_grad_norm {bound.clip:g}, "
                                f"{bound.radius**2 - 1:g} columns): the DP sensitivity bound "
                                "[Wu et al. 2017] needs a smaller step")
        clip = {"max_grad_norm": bound.clip}
    _check_delta(budget, rows, "weights", "gaussian")
    sensitivity *= share  # the largest party's weight in the average
    try:
        z = accounting.calibrate(lambda s: accounting.gaussian_event(s, p.rounds),
                                 budget.epsilon, budget.delta)
    except accounting.CalibrationError as exc:
        raise ProtocolError(f"'weights': {exc}") from None
    return z * sensitivity, accounting.report(
        accounting.gaussian_event(z, p.rounds), budget.delta, MECHANISM, accounting.REPLACE_ONE,
        noise_multiplier=z, sensitivity=sensitivity, rounds=p.rounds, **clip,
        noise_coalition=p.noise_coalition)


def _check_delta(budget: Budget, rows: int, output: str, mechanism: str) -> None:
    if mechanism == "gaussian" and budget.delta <= 0:
        raise ProtocolError(f"'{output}': the Gaussian mechanism needs delta > 0, got "
                            f"{budget.delta:g}")
    if budget.delta >= 1 / rows:
        raise ProtocolError(f"'{output}': delta {budget.delta:g} is not below 1/rows = 1/{rows} "
                            f"= {1 / rows:.3g}")


def _local_order(seed: bytes, rank: int, round_index: int) -> torch.Generator:
    """The generator of a party's local shuffles in a round (from the joint seed, so the
    plaintext twin reproduces them; the order of a party's own rows reveals nothing)."""
    return public_generator(seed, f"federated:{rank}:{round_index}")


def _pooled(rank: int, counts: list[int], mine: torch.Tensor) -> Any:
    """Every party's rows of one column block, shared and concatenated in rank order."""
    import crypten

    parts = [crypten.cryptensor(mine if src == rank else torch.empty(count, mine.shape[1]),
                                src=src) for src, count in enumerate(counts) if count]
    return crypten.cat(parts) if len(parts) > 1 else parts[0]


def plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
              alone: int | None) -> dict[str, Any]:
    """Federated averaging in the clear without noise (alone: that party's rows only, i.e.
    local training for rounds x local_epochs passes), evaluated on every party's test rows."""
    return _plaintext(inputs, params, seed, alone)


def simulate(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
             budget: Budget) -> dict[str, Any]:
    """The plaintext twin WITH distributed DP's noise, for planning (`smpc tradeoff`): rows
    weighted by the same RowBound, noise std calibrated for the budget as `run` does (the
    R-fold Gaussian composition calibrated as one Gaussian of multiplier z / sqrt(R), the
    analytic Gaussian mechanism, instead of dp-accounting's slower search: the same z within
    0.1 %), times sqrt(n / (n - noise_coalition)) for every party's contribution, drawn from
    a torch generator of `seed` -- a simulation, never a release. A network's updates are
    clipped to `clipping_norm` S first and the sensitivity is 2 S (local_network.py)."""
    trains = inputs["train"]
    counts = [t.rows for t in trains]
    bound, clip = None, None
    if params.model in MODELS:
        model = MODELS[params.model]
        bound = row_bound(trains[0].features.shape[1], params.max_grad_norm)
        sensitivity = model.sensitivity(bound, params.local_epochs, params.batch_size,
                                        params.learning_rate)
        if sensitivity is None or params.learning_rate > model.largest_step(bound):
            raise ProtocolError(f"model '{model.name}' at learning_rate "
                                f"{params.learning_rate:g} has no DP sensitivity bound")
        clipping: dict[str, Any] = {"max_grad_norm": bound.clip}
    else:
        if params.clipping_norm <= 0:
            raise ProtocolError(f"model {params.model} has no bound on one row's influence: "
                                "simulated DP needs clipping_norm > 0")
        clip = params.clipping_norm
        sensitivity, clipping = 2 * clip, {"clipping_norm": clip}
    sensitivity *= max(counts) / sum(counts)
    z = accounting.gaussian_sigma(budget.epsilon, budget.delta) * params.rounds ** 0.5
    spread = (len(trains) / (len(trains) - params.noise_coalition)) ** 0.5
    out = _plaintext(inputs, params, seed, None, bound,
                     (z * sensitivity * spread, public_generator(seed, "federated:noise")), clip)
    out["weights"]["privacy"] = accounting.report(
        accounting.gaussian_event(z, params.rounds), budget.delta, MECHANISM + ", simulated",
        accounting.REPLACE_ONE, noise_multiplier=z, sensitivity=sensitivity,
        rounds=params.rounds, **clipping)
    return out


def _plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
               alone: int | None, bound: RowBound | None = None,
               noise: tuple[float, torch.Generator] | None = None,
               clip: float | None = None) -> dict[str, Any]:
    model = local_model(params)
    trains = inputs["train"]
    ranks = range(len(trains)) if alone is None else [alone]
    rows = sum(trains[r].rows for r in ranks)
    flat = model.initial(trains[0].features.shape[1],
                         models.joint_seed(public_generator(seed, models.INIT_PURPOSE)))
    for r in range(params.rounds):
        total = torch.zeros_like(flat)
        for i in ranks:
            t = trains[i]
            local = model.train(flat, t.features, t.labels, params.local_epochs,
                                params.batch_size, params.learning_rate,
                                _local_order(seed, i, r), bound)
            change = local - flat if clip is None else clipped(local - flat, clip)
            total += change * (t.rows / rows)
        if noise is not None:
            total += torch.randn(total.shape, generator=noise[1], dtype=total.dtype) * noise[0]
        flat = flat + total
    tests = [t for t in inputs.get("test") or [] if t.rows]
    x = torch.cat([t.features for t in tests])
    y = torch.cat([t.labels for t in tests]).double()
    scores = model.logits(flat, x).double()
    measured = metrics.binary_metrics_plain(scores, y) if isinstance(model, LocalModel) \
        else metrics.multiclass_metrics_plain(scores, y, len(trains[0].classes))
    return {"metrics": measured,
            "weights": {"weights": flat.tolist(), "rounds": params.rounds, "privacy": None}}


def export_model(value: dict[str, Any], ctx: ExportContext) -> list[Path]:
    """model.pt (the module's state_dict) and model.json (what it is, the privacy spent)."""
    model = local_model(ctx.params)
    table = ctx.tables.get("train")
    columns = len(table.encoded_columns) if table is not None else len(value["weights"]) - 1
    ctx.folder.mkdir(parents=True, exist_ok=True)
    model_pt, model_json = ctx.folder / "model.pt", ctx.folder / "model.json"
    torch.save(model.state_dict(value["weights"], columns), model_pt)
    if isinstance(model, LocalNetwork):
        spec = model.spec
        where = spec.file.name if spec.file is not None else spec.module
        what: dict[str, Any] = {
            "model": spec.reference, "class": spec.name, "source": where,
            "model_args": spec.args, "output": "one score per class (argmax = the class)",
            "load": f"model = {spec.name}(**model_args); "
                    "model.load_state_dict(torch.load('model.pt'))",
            "classes": list(table.classes) if table is not None else None}
    else:
        what = {"model": f"{model.name}: {model.module(columns)!r}; P(class 1) = "
                         "sigmoid(output)"}
    meta = {**what, "in_features": columns,
            "columns": list(table.encoded_columns) if table is not None else None,
            "rounds": value.get("rounds"), "privacy": value.get("privacy"),
            "protocol": ctx.protocol, "parameters": dict(ctx.params),
            "manifest_digest": ctx.manifest_digest, "metrics": ctx.revealed.get("metrics")}
    model_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return [model_pt, model_json]


def _validate(params: Params) -> str | None:
    if params.model not in MODELS:
        models.validate(params)  # the class exists, builds, holds only known layers
    elif params.model_args:
        return f"model_args are for a network class, not model '{params.model}'"
    return None


def _sources(params: Params) -> dict[str, Path]:
    return {} if params.model in MODELS else models.sources(params)


PROTOCOL = Protocol(
    name="federated-averaging",
    version="1",
    summary="federated averaging: local training in plaintext, updates summed on secret "
            "shares (secure aggregation), optionally with distributed DP noise",
    run=run,
    params=(
        Param("model", str, LOGISTIC, "the model every party trains locally: "
              "'logistic-regression', or a network class as in neural-network: 'file.py:Class' "
              "(beside the consortium file) or 'package.module:Class'"),
        Param("model_args", dict, {}, "the network class's keyword arguments"),
        Param("rounds", int, 10, "federated rounds (one secure average each)", minimum=1),
        Param("local_epochs", int, 1, "passes over its own rows each party makes per round",
              minimum=1),
        Param("batch_size", int, 16, "rows per local SGD step; every party needs at least "
              "this many", minimum=1),
        Param("learning_rate", float, 0.5, "local SGD step size", above=0),
        Param("momentum", float, 0.0, "a network's local SGD momentum (restarted each round)",
              minimum=0, maximum=0.999),
        Param("max_grad_norm", float, 0.0, "with DP, logistic regression: the bound C on each "
              "row's gradient (0: sqrt(columns + 1), the bound of the scaled features)",
              minimum=0),
        Param("clipping_norm", float, 0.0, "with DP, a network: each party's update is clipped "
              "to this L2 norm before the secure sum (required > 0 then)", minimum=0),
        Param("noise_coalition", int, 1, "with DP: the largest coalition of parties the noise "
              "still protects against", minimum=0),
        Param("metrics_mechanism", str, "laplace", "the noise on the confusion counts when "
              "'metrics' has a budget", choices=("laplace", "gaussian")),
    ),
    inputs=(
        Input("train", "labelled rows each party trains on locally (2 classes for logistic "
              "regression)"),
        Input("test", "labelled rows to evaluate the final model on"),
    ),
    outputs=(
        Output("metrics", "accuracy, precision, recall, F1, ROC AUC (binary) or macro-F1 "
               "(multi-class) and the confusion matrix of the final model on the test rows",
               dp=DP_OPTIONAL),
        Output("weights", "the global model after every round: the previous one plus the "
               "average of the parties' updates (every party trains the next round from it); "
               "the last one is the trained model",
               export=export_model, dp=DP_OPTIONAL),
    ),
    plaintext=plaintext,
    compare="metrics",
    validate=_validate,
    sources=_sources,
)
