"""The protocol contract: what a protocol declares, and the Session it runs with.

A protocol is one :class:`Protocol` object. It declares

* its **name** and **version** (both go into the manifest every party agrees on);
* its **parameters** (:class:`Param`: type, default, range), checked before any
  connection, each error naming the parameter and the consortium line;
* its **inputs** (:class:`Input`): the tables each party provides, and which
  parties (a role) provide them;
* its **outputs** (:class:`Output`): every value it may reveal. The consortium's
  ``[[reveal]]`` list must name exactly these (``smpc manifest`` refuses a
  missing or extra one), and an output may carry an exporter that turns the
  revealed value into files for its recipients (a model into a ``state_dict``);
* ``run(session)``, the secure computation, which returns a dict of the
  outputs this party learned (keys are declared outputs);
* optionally ``sources(params)``: files its parameters bring in (a model's
  source named by a parameter), which the manifest's code hash covers too;
* optionally ``plaintext(inputs, params, seed, alone)``, the same computation
  in the clear, which ``smpc local`` runs as the pooled baseline (``alone`` is
  None) and as each party's baseline (``alone`` is that party's rank: train on
  its rows only, evaluate where the pooled run evaluates).

Protocols never import ``parties`` (the node, the wire, the dealer). They get a
:class:`Session` and compute with CrypTen tensors; the only way to open a
secret is ``session.reveal``, which opens only declared outputs to their
declared recipients. Everything else that reconstructs a secret
(``get_plain_text()``, ``reveal()``) is refused by the engine.

Protocols are found by name in one registry (protocols/registry.py): the
built-ins and any package's ``smpc.protocols`` entry point.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol

import torch

EVERY_PARTY = "data holder"  # the default role: every party holds data


class RevealError(PermissionError):
    """A secret was about to be opened outside a declared output."""


class ParameterError(ValueError):
    """A protocol parameter that is missing, unknown, of the wrong type or out of range."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"parameter '{name}': {problem}" if name else f"parameters: {problem}")
        self.name = name
        self.problem = problem


class ProtocolError(RuntimeError):
    """A protocol cannot go on (an empty input, a diverging loss); the message says why.

    Its text may reach every peer: never put a value derived from private data
    in it (counts, cell values, file paths).
    """


_REQUIRED: Any = object()


@dataclass(frozen=True)
class Param:
    """One typed parameter of a protocol, as the consortium's [protocol.parameters] sets it."""

    name: str
    kind: type  # int, float, str, bool, list or dict (a TOML table)
    default: Any = _REQUIRED
    help: str = ""
    choices: tuple[Any, ...] = ()
    minimum: float | None = None  # value >= minimum
    above: float | None = None  # value > above
    maximum: float | None = None  # value <= maximum

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def describe(self) -> str:
        """'an integer >= 1', 'one of piecewise, exact', ... (for errors and `smpc protocols`)."""
        word = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                list: "a list", dict: "a table"}.get(self.kind, self.kind.__name__)
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.above is not None:
            bounds.append(f"> {self.above:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return " ".join([word, " and ".join(bounds)]) if bounds else word

    def check(self, value: Any) -> Any:
        """The value as the protocol sees it (ints accepted as floats); ParameterError if bad."""
        ok_type = isinstance(value, self.kind) and not (
            self.kind in (int, float) and isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok_type = float(value), True
        if self.kind is float and ok_type and not math.isfinite(value):
            ok_type = False
        if not ok_type or (self.choices and value not in self.choices):
            raise ParameterError(self.name, f"must be {self.describe()}, got {value!r}")
        if self.kind in (int, float):
            low_ok = self.minimum is None or value >= self.minimum
            above_ok = self.above is None or value > self.above
            high_ok = self.maximum is None or value <= self.maximum
            if not (low_ok and above_ok and high_ok):
                raise ParameterError(self.name, f"must be {self.describe()}, got {value!r}")
        return value


class Params(Mapping[str, Any]):
    """Checked parameters, defaults filled in: `params["epochs"]` or `params.epochs`.

    `folder` is where files that parameters name are looked up (the consortium
    file's folder); it is not a parameter and not part of the manifest.
    """

    def __init__(self, values: dict[str, Any], folder: Path | None = None) -> None:
        self._values = dict(values)
        self.folder = folder

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no parameter {key!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params({self._values!r})"


TABLE = "table"  # Input.kind: rows of a consortium table, from a CSV file
STATE_DICT = "state_dict"  # Input.kind: a party's own model weights, a PyTorch state_dict file


@dataclass(frozen=True)
class Input:
    """A table each party of a role provides (its rows stay private; their count is public),
    or (`kind` STATE_DICT) a party's own trained weights: a state_dict file its policy names,
    read with torch.load(weights_only=True) and checked by `check` before connecting. A
    state-dict input maps to no table."""

    name: str
    help: str = ""
    required: bool = True  # optional inputs may be left out of the consortium
    labelled: bool = True  # the table's schema must declare a label column
    role: str = EVERY_PARTY  # which parties provide it
    classes: int | None = None  # the number of label classes the protocol needs, if fixed
    kind: str = TABLE
    # STATE_DICT: check(state, params) -> what is wrong with a party's own weights, or None;
    # the answer stays in that party's log (the peers hear only that its data failed)
    check: Callable[[dict[str, torch.Tensor], Params], str | None] | None = None


@dataclass(frozen=True)
class ExportContext:
    """What an exporter knows when it writes a revealed output to files."""

    folder: Path
    protocol: str
    params: Params
    manifest_digest: str
    tables: dict[str, Any]  # input name -> its TableSchema (columns, scaling, classes)
    revealed: dict[str, Any]  # everything this party learned, for cross-references


DP_REQUIRED = "required"  # Output.dp: released only with differential privacy
DP_OPTIONAL = "optional"  # Output.dp: with DP when the consortium gives it a budget


@dataclass(frozen=True)
class Output:
    """A value the protocol may reveal; the consortium's [[reveal]] says to whom."""

    name: str
    help: str = ""
    # writes the revealed value to files in context.folder; returns their paths
    export: Callable[[Any, ExportContext], list[Path]] | None = None
    optional: bool = False  # a consortium may leave it out of [[reveal]]: then nobody learns it
    # differential privacy: "" (never), DP_REQUIRED (the consortium must give its [[reveal]]
    # entry an epsilon and delta) or DP_OPTIONAL (with DP exactly when it gives them)
    dp: str = ""


@dataclass(frozen=True)
class Budget:
    """The (epsilon, delta) privacy budget the consortium gives one DP output."""

    epsilon: float
    delta: float


@dataclass(frozen=True)
class Serving:
    """How a protocol serves repeated queries (`smpc serve`, `smpc predict`): the serving
    party's model is loaded and secret-shared once, then every query is a short session
    with one data owner on that shared model.

    `build(params, width, state)` is the plaintext model: the consortium's class with the
    weights `state` (None: the class's public initial weights, for the parties that only
    need the shapes), fitted to a table of `width` encoded columns (ProtocolError when it
    does not fit). `query(session, model)` runs one query on `model`, a crypten.nn graph of
    that model whose parameters are already shares, and returns the outputs this party
    learned and the number of rows scored.
    """

    model: str  # the STATE_DICT input the serving party provides
    rows: str  # the table each query brings
    build: Callable[[Params, int, dict[str, torch.Tensor] | None], torch.nn.Module]
    query: Callable[[Session, Any], tuple[dict[str, Any], int]]


@dataclass(frozen=True)
class Protocol:
    """Everything smpc needs to know to agree on, run, compare and export a protocol."""

    name: str
    version: str
    summary: str
    run: Callable[[Session], dict[str, Any]]
    params: tuple[Param, ...] = ()
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    # plaintext(inputs, params, seed, alone): the same computation in the clear on
    # {input name: [PlainTable (PlainState for a STATE_DICT input) of each party, rank
    # order]}; `alone`: a rank, or None
    # for everyone's rows; returns {output name: value}, or None when that party
    # cannot compute it alone (e.g. it holds no labels of a vertical table)
    plaintext: Callable[[dict[str, list[PlainTable]], Params, bytes, int | None],
                        dict[str, Any] | None] | None = None
    compare: str | None = None  # the output `smpc local` compares with the plaintext baselines
    passed: Callable[[dict[str, Any]], bool] | None = None  # a check protocol's verdict
    # checks across parameters: returns what is wrong, or None
    validate: Callable[[Params], str | None] | None = None
    module: str = ""  # filled in by the registry: where the protocol was found
    extra_sources: tuple[str, ...] = field(default=())  # files the code hash must also cover
    # sources(params): the files the parameters bring in (e.g. a model's source file), by a
    # name that is the same on every party; the manifest's code hash covers them
    sources: Callable[[Params], dict[str, Path]] | None = None
    serving: Serving | None = None  # repeated queries on a model shared once (smpc serve)

    def parameters(self, raw: Mapping[str, Any], folder: Path | None = None) -> Params:
        """Check `raw` against the declared parameters; ParameterError names the first problem.

        `folder` is where files named by parameters are found (the consortium's folder).
        """
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ParameterError(unknown[0], f"is not a parameter of {self.name} (its "
                                             f"parameters: {', '.join(known) or 'none'})")
        out = {}
        for p in self.params:
            if p.name in raw:
                out[p.name] = p.check(raw[p.name])
            elif p.required:
                raise ParameterError(p.name, f"is required ({p.describe()})")
            else:
                out[p.name] = p.default
        params = Params(out, folder)
        problem = self.validate(params) if self.validate is not None else None
        if problem:
            raise ParameterError("", problem)
        return params

    def output(self, name: str) -> Output:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def input(self, name: str) -> Input:
        for i in self.inputs:
            if i.name == name:
                return i
        raise KeyError(name)


def public_generator(seed: bytes, purpose: str) -> torch.Generator:
    """A torch generator every party derives alike from the joint seed and a purpose.

    For public randomness only (shuffles, splits, initial weights): torch's
    generator is not a cryptographic one.
    """
    key = hashlib.sha256(seed + b"|" + purpose.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)


ROWS, COLUMNS = "rows", "columns"  # horizontal and vertical layouts of a table
# An output smpc itself may reveal for any protocol that reads a vertical table: the size
# of each vertical input's private set intersection (every party's node learns it anyway:
# it shares that many rows), reported to every party or to nobody as [[reveal]] says.
INTERSECTION_SIZE = "intersection_size"


@dataclass(frozen=True)
class PlainTable:
    """One party's rows of one input, checked and encoded: what it shares.

    features: rows x columns float32 (categorical columns one-hot, scaled
    columns in [0, 1]); labels: rows x 1 float32 class indices (0..K-1), or
    None for an unlabelled table.

    A vertical table (`layout` COLUMNS) holds only this party's `columns` of
    its rows; `identifiers` are its rows' identifiers (private: they leave the
    party only blinded, inside the private set intersection); `pooled_columns`
    are every party's columns in the pooled order (public, from the schema).
    """

    features: torch.Tensor
    labels: torch.Tensor | None
    columns: tuple[str, ...]
    classes: tuple[Any, ...] = ()
    layout: str = ROWS
    identifiers: tuple[str, ...] | None = None
    pooled_columns: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class PlainState:
    """One party's own model weights (a STATE_DICT input): parameter and buffer name ->
    tensor, as its file holds them; empty for a party that provides none."""

    state: dict[str, torch.Tensor]
    layout: str = ROWS  # (a state holds no rows: it is never pooled)

    @property
    def rows(self) -> int:
        return 0


@dataclass
class SharedTable:
    """Rows pooled from every party, secret-shared (CrypTen tensors).

    Horizontal (`layout` ROWS): `counts[i]` rows came from party i (public:
    shapes are public in MPC). After the joint shuffle the rows are mixed;
    `order[k]` is the pooled row that came k-th in rank order (public, from
    the joint seed). Vertical (COLUMNS): every row holds every party's
    columns; `counts[i]` is the number of rows party i shared columns of (the
    rows, or 0 for a party with no columns).
    """

    features: Any
    labels: Any  # rows x 1 class indices as shares, or None
    counts: list[int]
    columns: tuple[str, ...]
    classes: tuple[Any, ...]
    order: torch.Tensor | None = None
    layout: str = ROWS

    @property
    def rows(self) -> int:
        return int(sum(self.counts)) if self.layout == ROWS else max(self.counts, default=0)


class Session(TypingProtocol):
    """A running party, as a protocol sees it (the node implements it in parties/node)."""

    party: str  # this party's name
    rank: int
    world_size: int
    parties: list[str]  # every party's name, in rank order
    params: Params
    seed: bytes  # the run's joint public random seed (a coin toss among the parties)
    # the consortium's minimum group size: a revealed statistic computed over fewer rows is
    # suppressed (protocols/blocks/suppression.py checks the count on shares)
    min_group_size: int

    def generator(self, purpose: str) -> torch.Generator:
        """A public torch generator from the joint seed (shuffles, splits, initial weights)."""

    def table(self, input_name: str) -> PlainTable | None:
        """This party's own rows of `input_name` (zero rows when it provides none; None when
        the consortium does not use the input)."""

    def state(self, input_name: str) -> PlainState | None:
        """This party's own weights of a STATE_DICT input (None when it provides none)."""

    def provides(self, input_name: str) -> list[str]:
        """The parties that provide `input_name` (by role), in rank order."""

    def share_rows(self, input_name: str, shuffle: bool = True) -> SharedTable | None:
        """Every providing party's rows pooled into one secret table (horizontal partitioning).

        With `shuffle`, rows are permuted with the joint seed so that mini-batches
        mix the parties' rows. None when no party provides rows for the input.
        """

    def share_columns(self, input_name: str) -> SharedTable | None:
        """Every providing party's columns of the same aligned rows, concatenated as shares
        (vertical partitioning); labels from the lowest-ranked party that has any."""

    def share(self, input_name: str, shuffle: bool = True) -> SharedTable | None:
        """The input pooled as the consortium lays it out: `share_rows` for a horizontal
        table; for a vertical one, a private set intersection on the identifiers, then
        every party's columns of the common rows (the label holder's labels), in the order
        of a joint-seed hash of the identifier with `shuffle` (the plaintext twin's order),
        else in the order of the blinded identifiers. ProtocolError if the intersection
        is empty."""

    def exchange(self, outgoing: dict[str, torch.Tensor], sources: list[str]
                 ) -> dict[str, torch.Tensor]:
        """Send `outgoing[party]` to each party, receive one tensor from each of `sources`.

        For values that are public or blinded ONLY (set sizes, blinded identifiers):
        nothing secret-shared and nothing private may go through it. Large tensors are
        streamed in chunks by the wire; no message is opened or checked by the engine.
        """

    def reveal(self, outputs: dict[str, Any] | str, value: Any = None,
               to: list[str] | None = None) -> dict[str, Any]:
        """Open declared outputs to their recipients, all in one round.

        `outputs` maps output names to CrypTen tensors (or nested dicts/lists of
        them; plain numbers pass through). Returns {name: plaintext} with None
        for the outputs this party does not receive. `to` narrows the
        recipients (it can never widen them).
        """

    def progress(self, step: str, **fields: Any) -> None:
        """Report progress: `session.progress("epoch", epoch=3, of=10)`."""

    def checkpoint(self, step: int, state: dict[str, Any]) -> None:
        """Keep this party's shares (and plain values) of `state` as of `step`."""

    def restore(self) -> tuple[int, dict[str, Any]] | None:
        """With --resume: the newest step every party has kept, and its state; else None."""

    def communication_stats(self) -> dict[str, Any]:
        """Rounds and real bytes this party sent and received so far."""

    def budget(self, output: str) -> Budget | None:
        """The privacy budget the manifest gives a DP output; None when it is released
        without differential privacy."""

    def recipients(self, output: str) -> list[str]:
        """The parties the manifest reveals `output` to, in rank order (none for an optional output
        it leaves out: a protocol may then skip computing it)."""
