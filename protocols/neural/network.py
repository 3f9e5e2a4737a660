"""A PyTorch network trained and evaluated on the parties' pooled rows, on shares.

1. The consortium names the model (protocols/neural/model.py): a class in a
   file beside the consortium file or in an installed package, with its
   arguments; its source is in the manifest's code hash. Every party builds it
   with the same initial weights, drawn from the joint seed, and checks it
   against its table (input width, one score per class).
2. Every party secret-shares its rows; the pooled rows are shuffled with the
   joint seed (protocols/blocks/sharing.py). The labels become one-hot bits
   (one batched equality test).
3. The model is converted to a secure graph (crypten.nn.from_pytorch, repaired
   for torch 2.13 in parties/engine/onnx_import.py) whose weights are shares.
   Training is mini-batch SGD with momentum on the cross-entropy over K
   classes (protocols/neural/training.py), the learning rate following its
   public schedule. After every epoch each party keeps its shares of the
   weights, buffers and momentum (a checkpoint); when the manifest reveals
   "loss", every step's mean loss is revealed once per epoch, and a loss that
   is not finite stops the run naming the epoch and step, before that epoch's
   checkpoint is written.
4. Evaluation runs the graph in evaluation mode on the parties' test rows (or
   the last `test_fraction` of the shuffled rows, held out from training);
   accuracy, per-class precision and recall, macro-F1 and the confusion
   matrix are computed on shares (protocols/blocks/metrics.py); with the
   consortium's min_group_size k, each statistic over fewer than k test rows (a
   class's precision, recall, F1, a confusion cell; macro-F1 if any class is
   small) is suppressed on shares before the reveal (protocols/blocks/suppression.py).
5. One round reveals the metrics and, if declared, the model; its recipients
   write it as a state_dict that loads into the original class (model.pt) with
   model.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from protocols.api import (
    COLUMNS,
    ExportContext,
    Input,
    Output,
    Param,
    ParameterError,
    Params,
    PlainTable,
    Protocol,
    ProtocolError,
    Session,
)
from protocols.blocks import metrics, optimizers, suppression
from protocols.blocks.sharing import join_plain, pool_plain
from protocols.neural import model as models
from protocols.neural import training
from protocols.neural.training import Settings

VERSION = "1"


def run(session: Session) -> dict[str, Any]:
    """Train on the pooled training rows, evaluate, reveal as declared."""
    import crypten

    p = session.params
    spec = models.spec(p)
    train = session.share("train", shuffle=p.shuffle)  # rows pooled, or columns joined by PSI
    if train is None or train.rows == 0:
        raise ProtocolError("no party provided training rows")
    classes = len(train.classes)
    torch_model = _checked_model(spec, models.joint_seed(session.generator(models.INIT_PURPOSE)),
                                 train.features.size(1), classes)
    test = session.share("test", shuffle=False)
    x, y = train.features, train.labels
    if test is None or test.rows == 0:
        keep = _training_rows(train.rows, p.test_fraction)
        if keep in (0, train.rows):
            raise ProtocolError("the held-out test rows would be empty (test_fraction and the "
                                "number of rows): nothing to train or evaluate on")
        xt, yt = x[keep:], y[keep:]
        x, y = x[:keep], y[:keep]
    else:
        xt, yt = test.features, test.labels
    onehot = metrics.one_hot(y, classes)
    spans = training.spans(x.size(0), p.batch_size)
    targets = training.scaled_targets(onehot, spans)

    secure = crypten.nn.from_pytorch(torch_model, torch.empty(2, x.size(1))).encrypt(src=0)
    settings = _settings(p, classes)
    velocity = [crypten.cryptensor(torch.zeros(t.size()), src=0)
                for _, t in secure.named_parameters()]
    start, losses = 0, []
    restored = session.restore()
    if restored is not None:
        start, state = restored
        velocity = _restore(secure, state)
        session.progress("resumed", epoch=start, of=p.epochs)
    revealing_loss = bool(session.recipients("loss"))
    for epoch in range(start, p.epochs):
        secure.train()
        lr = optimizers.learning_rate(p.learning_rate, p.lr_schedule, epoch, p.epochs,
                                      p.lr_step, p.lr_gamma)
        velocity, log = training.secure_epoch(secure, x, targets, lr, settings, velocity,
                                              keep_loss=revealing_loss)
        fields: dict[str, Any] = {}
        if revealing_loss:
            opened = session.reveal("loss", training.step_losses(log, onehot))["loss"]
            if opened is not None:
                steps = [float(v) for v in opened.tolist()]
                _stop_if_diverged(steps, epoch)
                losses.append({"epoch": epoch + 1, "mean": sum(steps) / len(steps),
                               "steps": steps})
                fields["loss"] = round(losses[-1]["mean"], 4)
        session.checkpoint(epoch + 1, _state(secure, velocity))
        session.progress("epoch", epoch=epoch + 1, of=p.epochs, **fields)
    secure.eval()
    with crypten.no_grad():
        scores = secure(xt)
    measured = metrics.multiclass_metrics(scores, yt, classes)
    k = session.min_group_size
    if k > 1:  # [Hundepool et al. 2012, primary cell suppression], on shares
        measured = suppression.guard(
            measured, suppression.multiclass_metric_groups(measured, xt.size(0)), k)
    outputs: dict[str, Any] = {"metrics": measured}
    if session.recipients("model"):
        outputs["model"] = _named_state(secure)
    opened = session.reveal(outputs)
    result: dict[str, Any] = {
        "metrics": None if opened["metrics"] is None else suppression.unguard(opened["metrics"])
        if k > 1 else metrics.as_plain(opened["metrics"])}
    if "model" in opened:
        result["model"] = None if opened["model"] is None else {
            k: v.tolist() for k, v in opened["model"].items()}
    if revealing_loss:
        result["loss"] = losses or None
    return result


def _checked_model(spec: models.ModelSpec, seed: int, width: int, classes: int
                   ) -> torch.nn.Module:
    """The model with its joint initial weights, fitted to the table: ProtocolError (the same
    on every party: it depends on public things only) when it does not fit."""
    try:
        model = models.build(spec, seed)
        models.check_layers(model)
    except ParameterError as exc:
        raise ProtocolError(str(exc)) from None
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, width))
    except Exception as exc:
        raise ProtocolError(f"the table's {width} encoded columns do not fit model "
                            f"{spec.reference}: {type(exc).__name__}: {exc}") from None
    if out.dim() != 2 or out.shape[1] != classes:
        raise ProtocolError(f"model {spec.reference} returns {tuple(out.shape[1:])} scores per "
                            f"row; the table has {classes} classes")
    return models.without_final_softmax(model, width).train()


def _settings(p: Params, classes: int) -> Settings:
    return Settings(batch_size=p.batch_size, momentum=p.momentum, weight_decay=p.weight_decay,
                    exp_iterations=p.exp_iterations, classes=classes)


def _stop_if_diverged(steps: list[float], epoch: int) -> None:
    bad = training.diverged(steps)
    if bad is not None:
        kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "no checkpoint was kept"
        raise ProtocolError(f"training diverged: the loss of epoch {epoch + 1}, step {bad + 1} "
                            f"is not finite (a fixed-point overflow: lower the learning rate); "
                            f"{kept}")


def _training_rows(rows: int, test_fraction: float) -> int:
    return rows - math.ceil(rows * test_fraction)


def _named_state(secure: Any) -> dict[str, Any]:
    """Every parameter and buffer by its state_dict key (the converter names them so)."""
    out = {n.removesuffix(".data"): t for n, t in secure.named_parameters()}
    out.update({n.removesuffix(".data"): t for n, t in secure.named_buffers()})
    return out


def _state(secure: Any, velocity: list[Any]) -> dict[str, Any]:
    state = {f"weight:{k}": v for k, v in _named_state(secure).items()}
    names = [n for n, _ in secure.named_parameters()]
    state.update({f"velocity:{n}": v for n, v in zip(names, velocity, strict=True)})
    return state


def _restore(secure: Any, state: dict[str, Any]) -> list[Any]:
    for name, tensor in [*secure.named_parameters(), *secure.named_buffers()]:
        tensor.copy_(state[f"weight:{name.removesuffix('.data')}"])
    return [state[f"velocity:{n}"] for n, _ in secure.named_parameters()]


# ---------------------------------------------------------------- plaintext twin

def plaintext(inputs: dict[str, list[PlainTable]], params: Params, seed: bytes,
              alone: int | None) -> dict[str, Any]:
    """The same training and metrics in float64, from the same initial weights, in the same
    row order, with the same approximations (and dropout masks); and the trained model."""
    tables = inputs["train"]
    classes = len(tables[0].classes)
    tests = inputs.get("test") or []
    if tables and tables[0].layout == COLUMNS:
        if alone is not None:  # the model's input width is the joined table's: no party alone
            return None
        train = join_plain(tables, seed, "train")
        x, y = train.x, train.y
        if sum(t.rows for t in tests) == 0:
            keep = _training_rows(x.shape[0], params.test_fraction)
            xt, yt, x, y = x[keep:], y[keep:], x[:keep], y[:keep]
        else:
            test = join_plain(tests, seed, "test")
            xt, yt = test.x, test.y
    else:
        x, y, origin = pool_plain(tables, seed, "train", params.shuffle)
        if sum(t.rows for t in tests) == 0:
            keep = _training_rows(x.shape[0], params.test_fraction)
            xt, yt = x[keep:], y[keep:]
            x, y, origin = x[:keep], y[:keep], origin[:keep]
        else:
            xt, yt, _ = pool_plain(tests, seed, "test", shuffle=False)
        if alone is not None:
            mine = origin == alone
            x, y = x[mine], y[mine]
    twin, losses = fit_plain(x, y, params, seed, classes)
    with torch.no_grad():
        scores = twin(xt)
    return {"metrics": metrics.multiclass_metrics_plain(scores, yt, classes), "loss": losses,
            "model": {k: v.tolist() for k, v in twin.state_dict().items()}}


def fit_plain(x: torch.Tensor, y: torch.Tensor, params: Params, seed: bytes, classes: int
              ) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """The twin's training on rows (x, y class indices) in this order, from the joint initial
    weights of `seed`: the trained float64 module in evaluation mode (scores, no final
    softmax) and every epoch's step losses."""
    from protocols.api import public_generator

    spec = models.spec(params)
    init = models.joint_seed(public_generator(seed, models.INIT_PURPOSE))
    model = models.without_final_softmax(models.build(spec, init), x.shape[1])
    twin = training.plain_model(model, seed).train()
    onehot = torch.nn.functional.one_hot(y.reshape(-1).long(), classes).double()
    settings = _settings(params, classes)
    velocity = [torch.zeros_like(p) for p in twin.parameters()]
    losses = []
    for epoch in range(params.epochs):
        twin.train()
        lr = optimizers.learning_rate(params.learning_rate, params.lr_schedule, epoch,
                                      params.epochs, params.lr_step, params.lr_gamma)
        velocity, steps = training.plain_epoch(twin, x.double(), onehot, lr, settings, velocity)
        bad = training.diverged(steps)
        if bad is not None:
            raise ProtocolError(f"training diverged: the loss of epoch {epoch + 1}, step "
                                f"{bad + 1} is not finite")
        losses.append({"epoch": epoch + 1, "mean": sum(steps) / len(steps), "steps": steps})
    return twin.eval(), losses


# ---------------------------------------------------------------- export

def export_model(state: dict[str, list[Any]], ctx: ExportContext) -> list[Path]:
    """model.pt: a state_dict that loads into the consortium's class; model.json: what it is."""
    spec = models.spec(ctx.params)
    model = models.build(spec)
    own = model.state_dict()
    loaded = {}
    for key, value in own.items():
        if key in state:
            loaded[key] = torch.tensor(state[key], dtype=value.dtype).reshape(value.shape)
        elif key.endswith("num_batches_tracked"):  # PyTorch's counter, unused with momentum
            loaded[key] = value
        else:
            raise ValueError(f"the revealed model has no '{key}'")
    model.load_state_dict(loaded)
    ctx.folder.mkdir(parents=True, exist_ok=True)
    model_pt, model_json = ctx.folder / "model.pt", ctx.folder / "model.json"
    torch.save(model.state_dict(), model_pt)
    table = ctx.tables.get("train")
    where = spec.file.name if spec.file is not None else spec.module
    meta = {
        "model": spec.reference, "class": spec.name, "source": where, "model_args": spec.args,
        "load": f"model = {spec.name}(**model_args); "
                "model.load_state_dict(torch.load('model.pt'))",
        "output": "one score per class (argmax = the predicted class)",
        "in_features": len(table.encoded_columns) if table is not None else None,
        "columns": list(table.encoded_columns) if table is not None else None,
        "label": table.label if table is not None else None,
        "classes": list(table.classes) if table is not None else None,
        "scaling": {"ranges": {k: list(v) for k, v in table.ranges.items()},
                    "rule": "x' = (x - low) / (high - low) for every column with a range; "
                            "categorical columns one-hot as 'column=value'"}
        if table is not None else None,
        "protocol": ctx.protocol, "parameters": dict(ctx.params),
        "manifest_digest": ctx.manifest_digest, "metrics": ctx.revealed.get("metrics"),
    }
    model_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return [model_pt, model_json]


def _validate(params: Params) -> str | None:
    models.validate(params)
    if params.lr_schedule == "step" and params.lr_step < 1:
        return "lr_step must be at least 1 with lr_schedule = \"step\""
    return None


PROTOCOL = Protocol(
    name="neural-network",
    version=VERSION,
    summary="a PyTorch model trained by SGD on the parties' pooled rows, evaluated on shares",
    run=run,
    params=(
        Param("model", str, help="the model class: 'file.py:Class' (beside the consortium "
              "file) or 'package.module:Class'"),
        Param("model_args", dict, {}, "the class's keyword arguments"),
        Param("epochs", int, 10, "passes over the training rows", minimum=1),
        Param("batch_size", int, 64, "rows per SGD step", minimum=2),
        Param("learning_rate", float, 0.1, "SGD step size", above=0),
        Param("momentum", float, 0.9, "SGD momentum", minimum=0, maximum=0.999),
        Param("weight_decay", float, 0.0, "L2 penalty added to the gradient", minimum=0),
        Param("lr_schedule", str, "constant", "the learning rate per epoch: constant, x "
              "lr_gamma every lr_step epochs, or cosine annealing to 0",
              choices=optimizers.SCHEDULES),
        Param("lr_step", int, 1, "epochs between steps of the 'step' schedule", minimum=1),
        Param("lr_gamma", float, 0.1, "factor of the 'step' schedule", above=0),
        Param("exp_iterations", int, 8, "squarings k of the softmax's exp, the limit "
              "(1 + x/2^k)^(2^k) for x = score - max score, valid down to -2^(k+1): fewer are "
              "faster and less accurate", minimum=6, maximum=12),
        Param("shuffle", bool, True, "mix the parties' rows with the joint seed before training"),
        Param("test_fraction", float, 0.2, "share of the shuffled rows held out for evaluation "
              "when no party provides test rows", minimum=0, maximum=0.9),
    ),
    inputs=(
        Input("train", "labelled rows to train on"),
        Input("test", "labelled rows to evaluate on", required=False),
    ),
    outputs=(
        Output("metrics", "accuracy, per-class precision, recall and F1, macro-F1 and the "
               "confusion matrix on the test rows"),
        Output("model", "the trained weights and buffers by state_dict key", export=export_model,
               optional=True),
        Output("loss", "every training step's mean cross-entropy, revealed after each epoch",
               optional=True),
    ),
    plaintext=plaintext,
    compare="metrics",
    validate=_validate,
    sources=models.sources,
)
