"""Private inference: a model owner's model scores the data owners' rows on shares.

Neither side sees the other's part: the model owner never sees a row or a
prediction, a data owner never sees a weight, and each data owner learns only
its own rows' predictions (as CrypTen's own private-inference examples do,
[KVHM21] section 5; the logistic-regression case as in SecureML [MZ17]).

1. The model is the consortium's class (``model = "models.py:MLP"``, or
   ``"torch.nn:Linear"`` with ``model_args`` for the ``model.pt`` a
   logistic-regression run writes); its weights are the model owner's
   state_dict file, which its policy names and which is checked against the
   class before connecting. Every party builds the same crypten.nn graph from
   the class; the owner's weights enter it as shares (``encrypt(src=owner)``).
2. Each data owner secret-shares its rows (in rank order, not shuffled).
3. The graph runs on the shares in evaluation mode: the class scores z.
4. The prediction: a one-output model (logistic regression) predicts class 1
   where z > 0 (one comparison), a K-output model its first argmax (one batch
   of pairwise comparisons and an AND tree). With ``predictions = "scores"``
   the scores are revealed instead: z of a one-output model, z - z_0 of a
   K-output one. Each is one-to-one with the class probabilities (sigmoid(z),
   softmax(z)), which the data owner computes from it, and its class is their
   argmax: no comparison on shares, and nothing beyond the probabilities.
5. Each data owner's rows' predictions are opened to it alone, one round per
   data owner; the optional class counts (over every scored row) go to the
   parties [[reveal]] names. The model owner's outputs are empty unless it is
   given the counts.

Serving (``smpc serve``) keeps the graph shared across queries and runs steps
2-5 per query (:func:`query`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch import nn

from protocols.api import (
    STATE_DICT,
    ExportContext,
    Input,
    Output,
    Param,
    Params,
    PlainState,
    PlainTable,
    Protocol,
    ProtocolError,
    Serving,
    Session,
)
from protocols.neural import model as models

MODEL_OWNER = "model owner"
PREDICTIONS, COUNTS = "predictions", "class_counts"
# what a predicted class or a score may differ by from float64 PyTorch: the fixed-point
# encoding (16 fractional bits) and the truncation of each layer's product
SCORE_TOLERANCE = 2e-3


def run(session: Session) -> dict[str, Any]:
    """Share the owner's model once, score every data owner's rows, reveal to each its own."""
    import crypten

    p = session.params
    owner = model_owner(session)
    width = session.table("rows").features.shape[1]
    state = session.state("model")
    torch_model = build(p, width, state.state if state is not None else None)
    secure = crypten.nn.from_pytorch(torch_model, torch.empty(1, width))
    secure.encrypt(src=session.parties.index(owner)).eval()
    result, _ = query(session, secure)
    return result


def model_owner(session: Session) -> str:
    """The one party with the model owner's role; ProtocolError (the same on every party)
    when the consortium's roles or reveals do not fit private inference."""
    owners = session.provides("model")
    if len(owners) != 1:
        raise ProtocolError(f"exactly one party must have the role '{MODEL_OWNER}' (it provides "
                            f"the model); the consortium gives it to {owners or 'nobody'}")
    outsiders = [r for r in session.recipients(PREDICTIONS) if r not in session.provides("rows")]
    if outsiders:
        raise ProtocolError(f"predictions go only to the data owners whose rows they are: "
                            f"{', '.join(outsiders)} provide no rows (field reveal)")
    if not session.recipients(PREDICTIONS) and not session.recipients(COUNTS):
        raise ProtocolError(f"[[reveal]] names neither '{PREDICTIONS}' nor '{COUNTS}': "
                            "nothing would be learned")
    return owners[0]


def build(params: Params, width: int, state: dict[str, torch.Tensor] | None) -> nn.Module:
    """The consortium's class with the owner's weights (None: its public initial weights),
    in evaluation mode, a final Softmax/LogSoftmax dropped (the scores are its input).
    ProtocolError when it does not fit `width` encoded columns."""
    spec = models.spec(params)
    try:
        model = models.build(spec)
        models.check_layers(model)
    except Exception as exc:
        raise ProtocolError(str(exc)) from None
    if state is not None:
        problem = mismatch(model, state)
        if problem:  # checked before connecting; here only if the file changed since
            raise ProtocolError("the model owner's weights do not fit the class (details in "
                                "its log)")
        model.load_state_dict(_completed(model, state))
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, width))
    except Exception as exc:
        raise ProtocolError(f"the table's {width} encoded columns do not fit model "
                            f"{spec.reference}: {type(exc).__name__}: {exc}") from None
    if out.dim() != 2 or out.shape[1] < 1:
        raise ProtocolError(f"model {spec.reference} returns {tuple(out.shape[1:])} per row; "
                            "private inference needs one score per class (or one logit)")
    _check_classes(params, int(out.shape[1]))
    return models.without_final_softmax(model, width).eval()


def mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """How a state_dict differs from the model's: missing and unexpected keys, shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {tuple(state[k].shape)}, the class has {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    parts = ([f"missing {', '.join(missing[:4])}"] if missing else []) + \
        ([f"unexpected {', '.join(unexpected[:4])}"] if unexpected else []) + shapes[:3]
    return "; ".join(parts) or None


def _completed(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the buffers evaluation never reads (BatchNorm's counter) filled in."""
    own = model.state_dict()
    return {k: state.get(k, own[k]).to(own[k].dtype) for k in own}


def check_state(state: dict[str, torch.Tensor], params: Params) -> str | None:
    """The model owner's weights against the consortium's class, before connecting."""
    spec = models.spec(params)
    problem = mismatch(models.build(spec), state)
    return f"does not match the class {spec.reference}: {problem}" if problem else None


def _check_classes(params: Params, scores: int) -> None:
    classes = len(params.classes)
    expected = max(2, scores)
    if classes and classes != expected:
        raise ProtocolError(f"parameter 'classes' names {classes} classes; model "
                            f"{params.model} predicts {expected}")


def class_names(params: Params, scores: int) -> list[Any]:
    """The classes in score order: the `classes` parameter, or 0..K-1 (K = 2 for one logit)."""
    return list(params.classes) or list(range(max(2, scores)))


def query(session: Session, secure: Any) -> tuple[dict[str, Any], int]:
    """Steps 2-5 on a model already shared: one query; returns the outputs and the rows."""
    import crypten

    p = session.params
    rows = session.share_rows("rows", shuffle=False)  # 2. each data owner's rows, rank order
    if rows is None or rows.rows == 0:
        raise ProtocolError("no data owner provided rows to score")
    with crypten.no_grad():
        z = secure(rows.features)  # 3. the class scores
    scores = int(z.size(1))
    counting = bool(session.recipients(COUNTS))
    onehot = _predicted(z) if p.predictions == "class" or counting else None  # 4.
    if p.predictions == "class":
        secret = onehot.mul(torch.arange(onehot.size(1))).sum(1)  # class index (no truncation)
    else:
        secret = z if scores == 1 else z - z[:, :1]
    result: dict[str, Any] = {PREDICTIONS: None, COUNTS: None}
    start = 0
    for party, count in zip(session.parties, rows.counts, strict=True):  # 5. each its own
        if count and party in session.recipients(PREDICTIONS):
            opened = session.reveal(PREDICTIONS, secret[start:start + count], to=[party])
            if opened[PREDICTIONS] is not None:
                result[PREDICTIONS] = _readable(opened[PREDICTIONS], p, scores)
        start += count
    if counting:
        opened = session.reveal(COUNTS, onehot.sum(0))[COUNTS]
        if opened is not None:
            names = class_names(p, scores)
            result[COUNTS] = {str(n): round(float(c)) for n, c in zip(names, opened,
                                                                       strict=True)}
    return result, rows.rows


def _predicted(z: Any) -> Any:
    """(n, K) one-hot bits of each row's predicted class: z > 0 for one logit (K = 2),
    else the first argmax."""
    import crypten

    if z.size(1) == 1:
        positive = z > 0
        return crypten.cat([1 - positive, positive], dim=1)
    return z.argmax(dim=1, one_hot=True)


def _readable(opened: torch.Tensor, p: Params, scores: int) -> dict[str, Any]:
    """What a data owner receives, in its rows' order: each row's class and, with scores,
    every class's probability (computed here from the revealed score differences)."""
    names = class_names(p, scores)
    if p.predictions == "class":
        index = opened.reshape(-1).round().long().clamp(0, len(names) - 1)
        return {"classes": names, "class": [names[i] for i in index.tolist()]}
    probabilities = _probabilities(opened.double().reshape(opened.shape[0], -1))
    index = probabilities.argmax(1)
    return {"classes": names, "class": [names[i] for i in index.tolist()],
            "probabilities": probabilities.tolist()}


def _probabilities(z: torch.Tensor) -> torch.Tensor:
    """Class probabilities from scores: (1 - sigmoid, sigmoid) of one logit, else softmax."""
    if z.shape[1] == 1:
        positive = torch.sigmoid(z)
        return torch.cat([1 - positive, positive], dim=1)
    return torch.softmax(z, dim=1)


# ---------------------------------------------------------------- plaintext twin

def plaintext(inputs: dict[str, list[Any]], params: Params, seed: bytes,
              alone: int | None) -> dict[str, Any] | None:
    """The same predictions from the original PyTorch model in float64, per data owner
    (rank -> its predictions), and the class counts. No party can predict alone."""
    if alone is not None:
        return None
    states: list[PlainState] = inputs["model"]
    tables: list[PlainTable] = inputs["rows"]
    owner = next(s.state for s in states if s.state)
    width = tables[0].features.shape[1]
    spec = models.spec(params)
    original = models.build(spec)
    original.load_state_dict(_completed(original, owner))
    original = original.double().eval()
    per_party: dict[int, dict[str, Any]] = {}
    counts = torch.zeros(0)
    for rank, table in enumerate(tables):
        if table.rows == 0:
            continue
        with torch.no_grad():
            out = original(table.features.double())
        probabilities = _plain_probabilities(original, out, width)
        names = class_names(params, out.shape[1])
        index = probabilities.argmax(1)
        mine = {"classes": names, "class": [names[i] for i in index.tolist()]}
        if params.predictions == "scores":
            mine["probabilities"] = probabilities.tolist()
        per_party[rank] = mine
        hits = torch.bincount(index, minlength=len(names)).double()
        counts = hits if counts.numel() == 0 else counts + hits
    names = class_names(params, len(counts))
    return {PREDICTIONS: per_party,
            COUNTS: {str(n): round(float(c)) for n, c in zip(names, counts, strict=True)}}


def _plain_probabilities(model: nn.Module, out: torch.Tensor, width: int) -> torch.Tensor:
    """The model's own output as probabilities: a final Softmax's as it is, a final
    LogSoftmax's exponentiated, logits through sigmoid (one) or softmax (several)."""
    last = models.scores_layer(model.float(), width)
    model.double()
    if last is not None:
        layer = model.get_submodule(last)
        return out.exp() if isinstance(layer, nn.LogSoftmax) else out
    return _probabilities(out)


# ---------------------------------------------------------------- export

def export_predictions(value: dict[str, Any], ctx: ExportContext) -> list[Path]:
    """predictions.csv: row i is data row i of this party's file; its class, and with
    scores every class's probability."""
    ctx.folder.mkdir(parents=True, exist_ok=True)
    path = ctx.folder / "predictions.csv"
    names = value["classes"]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        probabilities = value.get("probabilities")
        out.writerow(["row", "class", *(f"probability:{n}" for n in names
                                        if probabilities is not None)])
        for i, predicted in enumerate(value["class"]):
            extra = [f"{v:.6f}" for v in probabilities[i]] if probabilities is not None else []
            out.writerow([i + 1, predicted, *extra])
    return [path]


def _validate(params: Params) -> str | None:
    models.validate(params)
    return None


PROTOCOL = Protocol(
    name="inference",
    version="1",
    summary="a model owner's PyTorch model scores the data owners' rows on shares; each "
            "data owner learns only its own rows' predictions",
    run=run,
    params=(
        Param("model", str, help="the model's class: 'file.py:Class' (beside the consortium "
              "file), 'package.module:Class', or 'torch.nn:Linear' for logistic regression"),
        Param("model_args", dict, {}, "the class's keyword arguments"),
        Param("predictions", str, "class", "what a data owner learns per row: its class, or "
              "the class and every class's probability", choices=("class", "scores")),
        Param("classes", list, [], "the class names in score order (default 0..K-1)"),
    ),
    inputs=(
        Input("model", "the model owner's trained weights: a state_dict file such as the "
              "model.pt a training run exports", kind=STATE_DICT, role=MODEL_OWNER,
              check=check_state),
        Input("rows", "the rows to score", labelled=False),
    ),
    outputs=(
        Output(PREDICTIONS, "each data owner's rows' predicted class (or class "
               "probabilities), to that data owner only", export=export_predictions,
               optional=True),
        Output(COUNTS, "how many of all the scored rows fall in each class", optional=True),
    ),
    plaintext=plaintext,
    compare=COUNTS,
    validate=_validate,
    sources=models.sources,
    serving=Serving(model="model", rows="rows", build=build, query=query),
)
