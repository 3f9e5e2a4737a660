"""`smpc tradeoff`: every privacy technique on a consortium's data, accuracy against privacy.

A planning run on one machine: like `smpc local`, it reads every party's data (from
each party's policy) and trains the consortium's model (protocols/report/workloads.py)
once per technique and setting:

* each party alone, and the pooled rows in plaintext (no privacy);
* MPC (inputs hidden, outputs exact) -- the consortium's own protocol;
* MPC + DP (DP-SGD inside MPC) at each epsilon;
* federated averaging with secure aggregation, without and with distributed DP;
* k-anonymized pooling: each party's rows generalized by Mondrian over the
  quasi-identifiers, then pooled in plaintext, at each k;
* DP synthetic data (noisy marginals measured in MPC) at each epsilon.

Every released model is evaluated on the pooled test rows (accuracy, AUC, F1) and
attacked with Yeom et al.'s loss-threshold membership inference (training rows vs
test rows). The MPC-based rows are real runs (`run_local`: every party and the dealer
as processes on loopback, mutual TLS) unless `real` is off (--quick, --twins): then
their plaintext twins run, with the same noise calibration. Each row says which.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import platform
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from parties.consortium import manifest
from parties.consortium.config import Consortium, load_consortium
from parties.node import local
from parties.node import party as party_node
from protocols import registry
from protocols.api import Budget, Params, PlainTable, Protocol, ProtocolError
from protocols.federated import averaging
from protocols.report import extracts, workloads
from protocols.synthetic import mst

EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
KS = (2, 5, 10, 25, 50)
QUICK_EPSILONS = (1.0, 8.0)
QUICK_KS = (5, 50)
SEED = b"smpc-tradeoff"  # the twins' public seed (shuffles, simulated noise)
SYNTHETIC_BINS = 8
REAL = "real run: smpc local (every party + dealer, loopback, mutual TLS)"
TWIN = "plaintext twin (same training and noise calibration, no MPC)"
PLAIN = "plaintext"


class TradeoffError(ValueError):
    """Bad input to the trade-off (a column, a k, a grid): one line, before anything runs."""


@dataclass(frozen=True)
class Settings:
    """What to run: the epsilon and k grids, real runs or twins, the quasi-identifiers."""

    epsilons: tuple[float, ...] = EPSILONS
    ks: tuple[int, ...] = KS
    real: bool = True
    quick: bool = False
    quasi_identifiers: tuple[str, ...] | None = None  # None: every feature
    timeout: float = 300.0  # seconds a real run's node may wait on a peer

    def check(self) -> None:
        bad = [e for e in self.epsilons if not (isinstance(e, int | float) and e > 0
                                                and math.isfinite(e))]
        if bad or not self.epsilons:
            raise TradeoffError(f"epsilon grid {list(self.epsilons)}: every epsilon must be a "
                                f"positive number (got {bad[0] if bad else 'none'})")
        bad_k = [k for k in self.ks if not isinstance(k, int) or k < 1]
        if bad_k or not self.ks:
            raise TradeoffError(f"k grid {list(self.ks)}: every k must be an integer >= 1 "
                                f"(got {bad_k[0] if bad_k else 'none'})")


@dataclass
class Study:
    """The consortium, its model, and every party's rows (read here: a planning run)."""

    consortium: Consortium
    protocol: Protocol
    params: Params
    workload: workloads.Workload
    train: list[PlainTable]
    test: list[PlainTable]
    policies: dict[str, Path]
    quasi_identifiers: list[str]
    qi_columns: list[int]
    # the plaintext rows' shuffle seed: the real MPC run's joint seed once it ran (so that
    # pooled plaintext and MPC train on the same order, as smpc local compares them)
    seed: bytes = SEED

    @property
    def parties(self) -> list[str]:
        return self.consortium.party_names

    @property
    def delta(self) -> float:
        """The delta of every DP row: 1e-5, or 0.1/rows when that is smaller."""
        return min(1e-5, 0.1 / sum(t.rows for t in self.train))

    @property
    def members(self) -> tuple[torch.Tensor, torch.Tensor]:
        return workloads.pooled(self.train)

    @property
    def non_members(self) -> tuple[torch.Tensor, torch.Tensor]:
        return workloads.pooled(self.test)


@dataclass
class Row:
    """One technique at one setting: what it gives and what it costs."""

    technique: str
    label: str
    how: str
    epsilon: float | None = None  # the epsilon spent (DP rows)
    k: int | None = None
    party: str | None = None
    accuracy: float | None = None
    auc: float | None = None
    f1: float | None = None
    advantage: float | None = None  # Yeom et al.'s membership advantage
    seconds: float | None = None
    bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Technique:
    """A privacy technique the trade-off compares: its settings and how one runs."""

    key: str
    label: str
    knob: str  # "epsilon", "k" or "" (one setting)
    values: Callable[[Settings], list[Any]]
    run: Callable[[Study, Settings, Any, Path], list[Row]]
    real: bool = False  # runs as a real MPC run when the settings allow it


def prepare(consortium_path: str | Path, settings: Settings,
            policies: dict[str, str] | None = None) -> Study:
    """Read the consortium and every party's data; TradeoffError/ConfigError on bad input."""
    settings.check()
    consortium = load_consortium(consortium_path)
    protocol = manifest.resolve_protocol(consortium)
    manifest.build(consortium, protocol)
    workload = workloads.WORKLOADS.get(protocol.name)
    if workload is None:
        raise TradeoffError(f"{consortium.where('protocol', 'name')}: smpc tradeoff compares "
                            f"the models of {', '.join(workloads.WORKLOADS)}; protocol "
                            f"'{protocol.name}' has no workload yet (protocols/report/"
                            "workloads.py)")
    params = manifest.check_parameters(consortium, protocol)
    paths = local.policy_paths(consortium, policies or {})
    tables: dict[str, list[PlainTable]] = {}
    for name in consortium.party_names:
        prepared = party_node.prepare_party(consortium.path, name, paths[name], tls=False)
        if prepared.data_error is not None:
            raise party_node.LocalDataError(prepared.data_error)
        mine = party_node.plain_tables(consortium, prepared.inputs, prepared.loaded, name)
        for input_name, table in mine.items():
            tables.setdefault(input_name, []).append(table)
    train, test = tables.get("train", []), tables.get("test", [])
    if not test or sum(t.rows for t in test) == 0:
        raise TradeoffError(f"{consortium.where('protocol', 'inputs')}: smpc tradeoff "
                            "evaluates every technique on held-out rows: map the protocol's "
                            "'test' input to a table and give the parties test rows")
    schema = consortium.tables[consortium.inputs.get("train") or next(iter(consortium.tables))]
    names, columns = _quasi_identifiers(consortium, schema, settings.quasi_identifiers,
                                        list(train[0].columns))
    smallest = min(range(len(train)), key=lambda r: train[r].rows)
    if max(settings.ks) > train[smallest].rows:
        raise TradeoffError(f"k {max(settings.ks)} is larger than party "
                            f"'{consortium.party_names[smallest]}''s {train[smallest].rows} "
                            "training rows: each party anonymizes its own rows, so k can be "
                            "at most the smallest party's row count")
    return Study(consortium, protocol, params, workload, train, test, paths, names, columns)


def _quasi_identifiers(consortium: Consortium, schema: Any, wanted: tuple[str, ...] | None,
                       encoded: list[str]) -> tuple[list[str], list[int]]:
    """The quasi-identifier features and their encoded column indices (a categorical feature
    is its one-hot columns)."""
    names = list(wanted) if wanted is not None else list(schema.features)
    for name in names:
        if name not in schema.features:
            raise TradeoffError(f"quasi-identifier '{name}' is not a feature of table "
                                f"'{schema.name}' ({consortium.where('tables', schema.name)}; "
                                f"its features: {', '.join(schema.features[:8])}"
                                f"{', ...' if len(schema.features) > 8 else ''})")
    if not names:
        raise TradeoffError("--quasi-identifiers: name at least one feature")
    columns = [i for i, c in enumerate(encoded)
               if c in names or (c.partition("=")[0] in names and c not in schema.features)]
    return names, columns


# ---- the techniques --------------------------------------------------------------------------

def _row(study: Study, technique: str, label: str, how: str, model: Any, seconds: float,
         members: tuple[torch.Tensor, torch.Tensor] | None = None, **fields: Any) -> Row:
    """A row for a released model: evaluated on the test rows, attacked with Yeom's attack."""
    xt, yt = study.non_members
    measured = study.workload.evaluate(model, xt, yt)
    leak = study.workload.leak(model, members or study.members, (xt, yt))
    return Row(technique, label, how, accuracy=measured["accuracy"], auc=measured.get("auc"),
               f1=measured["f1"], advantage=leak["advantage"], seconds=seconds,
               details={"membership": leak, **fields.pop("details", {})}, **fields)


def _model(study: Study, revealed: Any) -> Any:
    """The workload's model of a revealed (or twin's) model output."""
    return study.workload.weights_of(revealed, study.params, study.train[0].features.shape[1])


def _alone(study: Study, settings: Settings, value: Any, scratch: Path) -> list[Row]:
    rows = []
    tables = {"train": study.train, "test": study.test}
    for rank, name in enumerate(study.parties):
        tic = time.perf_counter()
        result = study.protocol.plaintext(tables, study.params, study.seed, rank) if \
            study.protocol.plaintext else None
        if result is None:
            continue
        model = _model(study, result[study.workload.output])
        own = (study.train[rank].features.double(), study.train[rank].labels.double())
        rows.append(_row(study, "alone", f"{name} alone", PLAIN, model,
                         time.perf_counter() - tic, own, party=name, bytes=0))
    return rows


def _pooled(study: Study, settings: Settings, value: Any, scratch: Path) -> list[Row]:
    tic = time.perf_counter()
    assert study.protocol.plaintext is not None
    result = study.protocol.plaintext({"train": study.train, "test": study.test}, study.params,
                                      study.seed, None)
    model = _model(study, result[study.workload.output])
    return [_row(study, "pooled", "pooled plaintext (no privacy)", PLAIN, model,
                 time.perf_counter() - tic, bytes=extracts.extract_bytes(study.members[0]))]


def _mpc(study: Study, settings: Settings, value: Any, scratch: Path) -> list[Row]:
    label = f"MPC ({study.protocol.name})"
    if not settings.real:
        tic = time.perf_counter()
        assert study.protocol.plaintext is not None
        result = study.protocol.plaintext({"train": study.train, "test": study.test},
                                          study.params, SEED, None)
        return [_row(study, "mpc", label, TWIN, _model(study, result[study.workload.output]),
                     time.perf_counter() - tic)]
    output = study.workload.output
    out = _real_run(study, settings, scratch / "mpc", study.protocol.name, dict(study.params),
                    [("metrics", "all", None), (output, "first", None)])
    study.seed = bytes.fromhex(out["seed"])
    return [_row(study, "mpc", label, REAL, _model(study, out[output]),
                 out["seconds"], bytes=out["bytes"], details={"wall": out["wall"]})]


def _mpc_dp(study: Study, settings: Settings, epsilon: float, scratch: Path) -> list[Row]:
    w = study.workload
    label = f"MPC + DP-SGD ({w.dp_protocol})"
    if w.dp_protocol is None or w.dp_parameters is None or w.dp_simulate is None:
        return [Row("mpc-dp", label, "not available for this model", epsilon=epsilon)]
    raw = w.dp_parameters(study.params, study.train[0].features.shape[1])
    budget = Budget(epsilon, study.delta)
    if not settings.real:
        dp_params = registry.load(w.dp_protocol).parameters(raw, study.params.folder)
        tic = time.perf_counter()
        weights = w.dp_simulate({"train": study.train, "test": study.test}, dp_params,
                                SEED + str(epsilon).encode(), budget)
        return [_row(study, "mpc-dp", label, TWIN, _model(study, weights),
                     time.perf_counter() - tic, epsilon=weights["privacy"]["epsilon"],
                     details={"privacy": weights["privacy"]})]
    out = _real_run(study, settings, scratch / f"mpc-dp-{epsilon:g}", w.dp_protocol, raw,
                    [("metrics", "all", None), (w.dp_output, "first", budget)])
    privacy = out[w.dp_output]["privacy"]
    return [_row(study, "mpc-dp", label, REAL, _model(study, out[w.dp_output]), out["seconds"],
                 epsilon=privacy["epsilon"], bytes=out["bytes"],
                 details={"privacy": privacy, "wall": out["wall"]})]


def _federated(study: Study, settings: Settings, epsilon: float | None, scratch: Path
               ) -> list[Row]:
    w = study.workload
    key = "fedavg" if epsilon is None else "fedavg-dp"
    label = "FedAvg + secure aggregation" + ("" if epsilon is None else " + distributed DP")
    if w.federated_model is None or w.federated_parameters is None:
        return [Row(key, label, "not available for this model", epsilon=epsilon)]
    raw = w.federated_parameters(study.params, study.train[0].features.shape[1],
                                 epsilon is not None)
    budget = None if epsilon is None else Budget(epsilon, study.delta)
    if not settings.real:
        fed_params = averaging.PROTOCOL.parameters(raw, study.params.folder)
        tables = {"train": study.train, "test": study.test}
        tic = time.perf_counter()
        result = averaging.plaintext(tables, fed_params, SEED, None) if budget is None else \
            averaging.simulate(tables, fed_params, SEED + str(epsilon).encode(), budget)
        weights = result["weights"]
        privacy = weights.get("privacy")
        return [_row(study, key, label, TWIN, _model(study, weights), time.perf_counter() - tic,
                     epsilon=privacy["epsilon"] if privacy else None,
                     details={"privacy": privacy} if privacy else {})]
    folder = scratch / (key if epsilon is None else f"{key}-{epsilon:g}")
    out = _real_run(study, settings, folder, averaging.PROTOCOL.name, raw,
                    [("metrics", "all", None), ("weights", "all", budget)])
    privacy = out["weights"].get("privacy")
    return [_row(study, key, label, REAL, _model(study, out["weights"]), out["seconds"],
                 epsilon=privacy["epsilon"] if privacy else None, bytes=out["bytes"],
                 details={"privacy": privacy, "wall": out["wall"]})]


def _k_anonymity(study: Study, settings: Settings, k: int, scratch: Path) -> list[Row]:
    tic = time.perf_counter()
    x, y, measured = extracts.k_anonymized(study.train, study.qi_columns, k)
    model = study.workload.fit(x, y, study.params, SEED)
    return [_row(study, "k-anonymity", "k-anonymized pooling (Mondrian)", PLAIN, model,
                 time.perf_counter() - tic, k=k, bytes=extracts.extract_bytes(x),
                 details={"release": measured,
                          "quasi_identifiers": len(study.quasi_identifiers)})]


def _synthetic(study: Study, settings: Settings, epsilon: float, scratch: Path) -> list[Row]:
    budget = Budget(epsilon, study.delta)
    label = "DP synthetic data (synthetic-data)"
    if settings.real:
        out = _real_run(study, settings, scratch / f"synthetic-{epsilon:g}", mst.PROTOCOL.name,
                        {"bins": SYNTHETIC_BINS}, [("marginals", "all", budget)])
        value, seed, how = out["marginals"], bytes.fromhex(out["digest"]), REAL
        seconds, sent = out["seconds"], out["bytes"]
    else:
        tic = time.perf_counter()
        value = extracts.simulated_marginals(study.train, SYNTHETIC_BINS, budget, 1,
                                             int(epsilon * 1000))
        seed, how, sent = SEED + str(epsilon).encode(), TWIN, None
        seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    x, y = mst.synthesize(value, 0, seed)  # what every recipient draws (post-processing)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).double().reshape(-1, 1)
    model = study.workload.fit(xs, ys, study.params, SEED)
    real_x, real_y = study.members
    close = mst.marginals.fidelity(real_x.numpy(), real_y.numpy().reshape(-1), x, y,
                                   SYNTHETIC_BINS, len(value["classes"]) or 2)
    return [_row(study, "synthetic", label, how, model, seconds + time.perf_counter() - tic,
                 epsilon=value["privacy"]["epsilon"], bytes=sent,
                 details={"privacy": value["privacy"], "fidelity": close,
                          "synthetic_rows": len(y)})]


TECHNIQUES: tuple[Technique, ...] = (
    Technique("alone", "each party alone", "", lambda s: [None], _alone),
    Technique("pooled", "pooled plaintext", "", lambda s: [None], _pooled),
    Technique("mpc", "MPC", "", lambda s: [None], _mpc, real=True),
    Technique("mpc-dp", "MPC + DP", "epsilon", lambda s: list(s.epsilons), _mpc_dp, real=True),
    Technique("fedavg", "FedAvg + secure aggregation", "", lambda s: [None], _federated,
              real=True),
    Technique("fedavg-dp", "FedAvg + secure aggregation + DP", "epsilon",
              lambda s: list(s.epsilons), _federated, real=True),
    Technique("k-anonymity", "k-anonymized pooling", "k", lambda s: list(s.ks), _k_anonymity),
    Technique("synthetic", "DP synthetic data", "epsilon", lambda s: list(s.epsilons),
              _synthetic, real=True),
)


def plan(settings: Settings) -> list[tuple[Technique, Any]]:
    """Every (technique, setting) the report runs, in order: with real runs, MPC first (its
    joint seed then shuffles the plaintext rows, as in smpc local's baselines)."""
    order = sorted(TECHNIQUES, key=lambda t: t.key != "mpc") if settings.real else TECHNIQUES
    return [(t, v) for t in order for v in t.values(settings)]


def run(study: Study, settings: Settings,
        progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Every technique at every setting; the report (rows, what ran how, elapsed time)."""
    tic = time.perf_counter()
    steps = plan(settings)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="smpc-tradeoff-") as tmp:
        scratch = Path(tmp).resolve()
        for i, (technique, value) in enumerate(steps):
            if progress is not None:
                knob = f" {technique.knob} {value:g}" if technique.knob else ""
                progress(i, len(steps), f"{technique.label}{knob}")
            rows += technique.run(study, settings, value, scratch)
    if progress is not None:
        progress(len(steps), len(steps), "done")
    rank = {t.key: i for i, t in enumerate(TECHNIQUES)}
    rows.sort(key=lambda r: rank[r.technique])  # stable: settings stay in grid order
    return {
        "consortium": study.consortium.name, "protocol": study.protocol.name,
        "data": "every party's rows were read on this machine (a planning run, like smpc "
                "local); nothing here is a secure deployment",
        "quick": settings.quick, "real_runs": settings.real,
        "settings": {"epsilons": list(settings.epsilons), "ks": list(settings.ks),
                     "delta": study.delta, "quasi_identifiers": study.quasi_identifiers,
                     "sensitive_attribute": "the label",
                     "membership": "Yeom et al. 2018 loss threshold (mean training loss); "
                                   "members: the training rows, non-members: the test rows"},
        "techniques": [{"key": t.key, "label": t.label, "knob": t.knob,
                        "how": (REAL if settings.real else TWIN) if t.real else PLAIN}
                       for t in TECHNIQUES],
        "rows": [asdict(r) for r in rows],
        "members": int(study.members[0].shape[0]),
        "non_members": int(study.non_members[0].shape[0]),
        "elapsed_seconds": time.perf_counter() - tic,
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}, torch {torch.__version__}",
    }


# ---- real runs -------------------------------------------------------------------------------

def _real_run(study: Study, settings: Settings, folder: Path, protocol: str,
              parameters: dict[str, Any], reveals: list[tuple[str, str, Budget | None]]
              ) -> dict[str, Any]:
    """One real run of `protocol` on the consortium's parties and tables (a scratch
    consortium on loopback, fresh development certificates): what the first party learned,
    its time and every party's bytes."""
    consortium = _scratch_consortium(study, folder, protocol, parameters, reveals)
    tic = time.perf_counter()
    with contextlib.chdir(folder):  # the nodes' out/ and checkpoints/ stay in the scratch
        out = local.run_local(consortium, {p: str(folder / "policies" / f"{p}.toml")
                                           for p in study.parties},
                              timeout=settings.timeout, announce=False)
    wall = time.perf_counter() - tic
    if not out.ok:
        failed = [f"{n}: exit {rc}" for n, rc in out.run.returncodes.items() if rc != 0]
        last = next((ln for node in out.run.nodes.values() for ln in reversed(node.lines)
                     if ln.strip()), "")
        raise ProtocolError(f"the real {protocol} run failed ({', '.join(failed)}): {last}")
    revealed = out.revealed()
    timings = [r["timings"] for r in out.results.values() if r]
    first = next(r for r in out.results.values() if r)
    return {**revealed, "seconds": max(t["protocol_seconds"] for t in timings),
            "bytes": sum(int(t["bytes_sent"]) for t in timings), "wall": wall,
            "digest": first["manifest_digest"], "seed": first["seed"]}


def _scratch_consortium(study: Study, folder: Path, protocol: str, parameters: dict[str, Any],
                        reveals: list[tuple[str, str, Budget | None]]) -> Path:
    """The consortium's parties and tables running `protocol` on loopback, and a policy per
    party naming its own data files and accepting exactly this run."""
    raw = tomllib.loads(study.consortium.path.read_text())
    parties = study.parties
    reveal_list = []
    for name, to, budget in reveals:
        entry: dict[str, Any] = {"name": name, "to": parties if to == "all" else parties[:1]}
        if budget is not None:
            entry.update(epsilon=budget.epsilon, delta=budget.delta)
        reveal_list.append(entry)
    inputs = {"train": study.consortium.inputs.get("train"),
              "test": study.consortium.inputs.get("test")}
    doc = {
        "consortium": {"name": f"{study.consortium.name}-tradeoff", "ca": "certs/ca.pem"},
        "parties": [{"name": p.name, "address": "127.0.0.1:0", "roles": list(p.roles)}
                    for p in study.consortium.parties],
        "dealer": {"address": "127.0.0.1:0"},
        "protocol": {"name": protocol, "parameters": parameters,
                     "inputs": {k: v for k, v in inputs.items() if v}},
        "reveal": reveal_list,
        "tables": {k: v for k, v in raw.get("tables", {}).items() if k in inputs.values()},
    }
    (folder / "policies").mkdir(parents=True, exist_ok=True)
    path = folder / "consortium.toml"
    path.write_text(to_toml(doc))
    _copy_sources(study, folder)
    from parties.consortium.config import load_policy

    for p in parties:
        policy = load_policy(study.policies[p])
        body: dict[str, Any] = {
            "party": p, "max_rows": policy.max_rows,
            "data": {k: str(v) for k, v in policy.data.items() if k in doc["protocol"]["inputs"]},
            "accept": {"protocols": [protocol], "reveal": [r["name"] for r in reveal_list]}}
        if policy.identifiers:
            body["identifiers"] = dict(policy.identifiers)
        (folder / "policies" / f"{p}.toml").write_text(to_toml(body))
    return path


def _copy_sources(study: Study, folder: Path) -> None:
    """The files beside the consortium that its parameters name (a model class's file), at
    the same place beside the scratch consortium (the scratch runs' parameters name them)."""
    home = study.consortium.path.parent.resolve()
    named = study.protocol.sources(study.params) if study.protocol.sources else {}
    for source in named.values():
        source = Path(source).resolve()
        if source.is_relative_to(home):
            target = folder / source.relative_to(home)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML document of tables, arrays of tables, strings, numbers, booleans and lists."""
    lines: list[str] = []
    _toml_table(doc, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    subs = {k: v for k, v in table.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in table.items()
              if isinstance(v, list) and v and all(isinstance(e, dict) for e in v)}
    for key, value in table.items():
        if key not in subs and key not in arrays:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in subs.items():
        lines += ["", f"[{'.'.join(_key(k) for k in [*path, key])}]"]
        _toml_table(value, [*path, key], lines)
    for key, entries in arrays.items():
        for entry in entries:
            lines += ["", f"[[{'.'.join(_key(k) for k in [*path, key])}]]"]
            _toml_table(entry, [*path, key], lines)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):  # numpy's numbers too (their repr is not TOML)
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
