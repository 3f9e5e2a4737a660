"""Serving: a model shared once, then one short session per query on the same consortium.

    smpc serve --consortium C --as dealer
    smpc serve --consortium C --as hospital-a --policy P     the model owner
    smpc predict --consortium C --as clinic-d --input rows.csv --out predictions.csv

The model owner and the dealer stay up. The owner loads its weights (checked
against the consortium's class), builds the crypten.nn graph once and shares
it once (parties/engine/standing.py: its own share kept in memory, the
complement a seed's expansion). Each query is a session of three nodes, the
querying data owner, the model owner and the dealer, on a fresh mesh over the
consortium's addresses with mutual TLS, the same manifest agreed by all three,
and the protocol's `Serving.query` run on the graph; only the owner's seed
travels to the data owner, never the model again.

Who dials whom: the data owner dials the owner and the dealer; the owner dials
the dealer. The owner and the dealer accept one data owner per session (the
first whose handshake arrives); another one dialing meanwhile is turned away
("is serving another query: try again"). A query that fails (a peer that dies,
a bad row count) ends that session only: the serving nodes log it and wait for
the next. Each serving node appends one JSON line per query to its query log:
who asked, when, how long it took, how many rows (the owner; the dealer sees
no rows) and how it ended, never a row or a prediction.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from parties.consortium import handshake, manifest
from parties.consortium.config import ConfigError, Consortium
from parties.node import runtime
from parties.node.party import DATA_REFUSED, LocalDataError, Prepared, plain_tables
from parties.wire.errors import PeerError
from parties.wire.transport import LinkOptions, Mesh
from protocols.api import Serving

BUSY = "is serving another query: try again"
SEED_BYTES = 32


@dataclass(frozen=True)
class Plan:
    """Who takes part in a serving consortium, and how sessions are laid out."""

    consortium: Consortium
    serving: Serving
    owner: str  # the party that provides the model
    data_owners: list[str]  # the parties that provide rows, rank order
    width: int  # the rows table's encoded columns

    @property
    def order(self) -> list[str]:
        """Dialing order: data owners first (they dial), then the owner, then the dealer."""
        return [*self.data_owners, self.owner, runtime.DEALER]

    @property
    def session_id(self) -> str:
        return f"{self.consortium.name}:serving"

    def parties(self, data_owner: str) -> list[str]:
        """A query's parties in consortium rank order."""
        return [p for p in self.consortium.party_names if p in (self.owner, data_owner)]

    def addresses(self) -> dict[str, str]:
        out = {p.name: p.address for p in self.consortium.parties}
        out[runtime.DEALER] = self.consortium.dealer
        return out


def plan(prepared: Prepared) -> Plan:
    """The serving layout of a prepared node's consortium; ConfigError when it cannot serve."""
    consortium, protocol = prepared.consortium, prepared.protocol
    serving = protocol.serving
    if serving is None:
        raise ConfigError(f"{consortium.where('protocol', 'name')}: protocol {protocol.name} "
                          "has no serving mode (smpc serve/predict run models, e.g. protocol "
                          "\"inference\")")
    if consortium.randomness != "dealer":
        raise ConfigError(f"{consortium.where('consortium', 'randomness')}: serving needs the "
                          "dealer (randomness = \"dealer\")")
    owners = manifest.providers(consortium, protocol.input(serving.model).role)
    if len(owners) != 1:
        raise ConfigError(f"{consortium.where('parties')}: serving needs exactly one party with "
                          f"the role '{protocol.input(serving.model).role}'; found "
                          f"{owners or 'none'}")
    rows = protocol.input(serving.rows)
    data_owners = [p for p in manifest.providers(consortium, rows.role) if p != owners[0]]
    if not data_owners:
        raise ConfigError(f"{consortium.where('parties')}: no party provides rows to score "
                          f"(the role '{rows.role}')")
    table = consortium.tables[prepared.inputs[serving.rows]]
    return Plan(consortium, serving, owners[0], data_owners, len(table.encoded_columns))


class QueryLog:
    """One JSON line per query: who, when, how long, how many rows, outcome (no data)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _mesh(plan_: Plan, me: str, peers: list[str], options: LinkOptions, tls: Any) -> Mesh:
    mesh = Mesh(me, peers, plan_.order, plan_.session_id, options, tls)
    mesh.one_of = frozenset(p for p in peers if p in plan_.data_owners)
    mesh.busy = BUSY
    return mesh


def _session(plan_: Plan, me: str, listen: str | None, options: LinkOptions, tls: Any,
             objection: str | None, manifest_: dict[str, Any]) -> tuple[Mesh, str]:
    """A serving node's next session: bind, connect to the fixed peers, wait for a data
    owner (as long as it takes), agree on the manifest. Returns the mesh and who asked."""
    fixed = [runtime.DEALER] if me == plan_.owner else [plan_.owner]
    mesh = _mesh(plan_, me, [*fixed, *plan_.data_owners], options, tls)
    try:
        mesh.bind(listen or "0.0.0.0:" + plan_.addresses()[me].rpartition(":")[2])
        mesh.connect(plan_.addresses())
        asker = mesh.wait_chosen()
        assert asker is not None
        handshake.agree(mesh, manifest_, objection)
    except BaseException as exc:
        mesh.abort(str(exc) if isinstance(exc, manifest.ManifestError) else "handshake failed")
        raise
    return mesh, asker


def _spec(plan_: Plan, me: str, asker: str, options: LinkOptions, threads: int, tls: Any
          ) -> runtime.NodeSpec:
    return runtime.NodeSpec(name=me, parties=plan_.parties(asker), session_id=plan_.session_id,
                            listen="", addresses=plan_.addresses(), options=options,
                            torch_threads=threads, tls=tls)


def _job(prepared: Prepared, plan_: Plan, asker: str, run: Callable[[Any], dict[str, Any]]
         ) -> runtime.PartyJob:
    consortium, protocol = prepared.consortium, prepared.protocol
    session = plan_.parties(asker)
    providers = {i: [p for p in manifest.providers(consortium, protocol.input(i).role)
                     if p in session] for i in [*prepared.inputs, *prepared.states]}
    return runtime.PartyJob(
        protocol=dataclasses.replace(protocol, run=run), params=prepared.params,
        tables=plain_tables(consortium, prepared.inputs, prepared.loaded, prepared.name),
        providers=providers, reveal_to={r.name: list(r.to) for r in consortium.reveal},
        states=dict(prepared.states))


def _graph(plan_: Plan, prepared: Prepared, state: dict[str, torch.Tensor] | None) -> Any:
    """The model's crypten.nn graph (plaintext): with the owner's weights, or the class's."""
    import crypten

    from parties.engine import context  # noqa: F401  (CrypTen's globals installed)

    model = plan_.serving.build(prepared.params, plan_.width, state)
    return crypten.nn.from_pytorch(model, torch.empty(1, plan_.width)).eval()


# ---------------------------------------------------------------- the model owner

def serve_owner(prepared: Prepared, listen: str | None, options: LinkOptions, log: QueryLog,
                say: Callable[[str], None], threads: int = 0,
                queries: int | None = None) -> int:
    """Share the model once, then answer queries until interrupted (or `queries` served)."""
    from parties.engine import standing

    if prepared.data_error is not None:
        raise LocalDataError(prepared.data_error)
    if prepared.objection is not None:
        raise manifest.ManifestError(f"refused by its own policy: {prepared.objection}")
    plan_ = plan(prepared)
    if prepared.name != plan_.owner:
        raise ConfigError(f"{prepared.consortium.where('parties')}: '{prepared.name}' does not "
                          f"provide the model ('{plan_.owner}' does): smpc serve runs the model "
                          "owner or the dealer")
    state = prepared.states[plan_.serving.model].state
    graph = _graph(plan_, prepared, state)
    seed = secrets.token_bytes(SEED_BYTES)
    shares = standing.owner_shares(graph, seed)  # kept for as long as this node serves
    say(f"model shared once ({len(shares)} tensors); serving "
        f"{', '.join(plan_.data_owners)} on {plan_.addresses()[prepared.name]}")
    served = 0
    while queries is None or served < queries:
        record = _owner_query(prepared, plan_, (graph, shares), seed, listen, options, threads,
                              say)
        if record is None:
            continue
        served += 1
        log.write(record)
    return served


def _owner_query(prepared: Prepared, plan_: Plan, model: tuple[Any, dict[str, torch.Tensor]],
                 seed: bytes, listen: str | None, options: LinkOptions, threads: int,
                 say: Callable[[str], None]) -> dict[str, Any] | None:
    """One query, start to end; its log record (None: no query came, e.g. a dealer restart).
    `model` is the graph and the owner's standing shares of it."""
    from parties.engine import standing

    try:
        mesh, asker = _session(plan_, prepared.name, listen, options, prepared.tls, None,
                               prepared.manifest)
    except (PeerError, manifest.ManifestError, TimeoutError) as exc:
        say(f"waiting for the dealer or a query: {exc}")
        time.sleep(1.0)
        return None
    started, tic = _now(), time.perf_counter()
    rows: dict[str, int] = {}

    def run(session: Any) -> dict[str, Any]:
        mesh.send(asker, torch.frombuffer(bytearray(seed), dtype=torch.uint8))
        graph = standing.attach(*model)  # the same shares every query: nothing re-shared
        result, rows["rows"] = plan_.serving.query(session, graph)
        return result

    record: dict[str, Any] = {"party": asker, "started": started}
    say(f"query from {asker} started")
    try:
        run_ = runtime.run_party(_spec(plan_, prepared.name, asker, options, threads,
                                       prepared.tls), mesh, _job(prepared, plan_, asker, run))
        record.update(rows=rows["rows"], seconds=round(time.perf_counter() - tic, 4),
                      rounds=run_.stats.get("rounds"), outcome="ok")
    except Exception as exc:  # the session ended; the server goes on
        record.update(rows=rows.get("rows"), seconds=round(time.perf_counter() - tic, 4),
                      outcome=f"failed: {exc}")
    say(f"query from {asker}: {record['outcome']} ({record.get('rows')} rows, "
        f"{record['seconds']:.3f} s)")
    return record


# ---------------------------------------------------------------- the dealer

def serve_dealer(prepared: Prepared, listen: str | None, options: LinkOptions, log: QueryLog,
                 say: Callable[[str], None], threads: int = 0,
                 queries: int | None = None) -> int:
    """Serve correlated randomness to one query after another until interrupted."""
    plan_ = plan(prepared)
    say(f"dealer serving queries of {', '.join(plan_.data_owners)} to {plan_.owner}")
    served = 0
    while queries is None or served < queries:
        try:
            mesh, asker = _session(plan_, runtime.DEALER, listen, options, prepared.tls, None,
                                   prepared.manifest)
        except (PeerError, manifest.ManifestError, TimeoutError):
            time.sleep(0.5)  # the owner is not up (yet), or a session fell apart: wait again
            continue
        started, tic = _now(), time.perf_counter()
        record: dict[str, Any] = {"party": asker, "started": started}
        try:
            got = runtime.run_dealer(_spec(plan_, runtime.DEALER, asker, options, threads,
                                           prepared.tls), mesh)
            record.update(seconds=round(time.perf_counter() - tic, 4),
                          served=sum(got.values()), outcome="ok")
        except Exception as exc:
            record.update(seconds=round(time.perf_counter() - tic, 4), outcome=f"failed: {exc}")
        say(f"query from {asker}: {record['outcome']}")
        log.write(record)
        served += 1
    return served


# ---------------------------------------------------------------- a data owner's query

def predict(prepared: Prepared, options: LinkOptions, threads: int = 0
            ) -> runtime.PartyRun:
    """One query: connect to the owner and the dealer, agree, score this party's rows."""
    from parties.engine import standing

    if prepared.data_error is not None:
        raise LocalDataError(prepared.data_error)
    if prepared.objection is not None and prepared.objection != DATA_REFUSED:
        raise manifest.ManifestError(f"refused by its own policy: {prepared.objection}")
    plan_ = plan(prepared)
    me = prepared.name
    if me not in plan_.data_owners:
        raise ConfigError(f"{prepared.consortium.where('parties')}: '{me}' provides no rows "
                          f"to score (data owners: {', '.join(plan_.data_owners)})")
    learns = [o.name for o in prepared.protocol.outputs
              if me in next((r.to for r in prepared.consortium.reveal if r.name == o.name), ())]
    if not learns:
        raise ConfigError(f"{prepared.consortium.where('reveal')}: [[reveal]] gives '{me}' no "
                          "output: a query would teach it nothing")
    graph = _graph(plan_, prepared, None)  # before connecting: the class's shapes only
    mesh = _mesh(plan_, me, [plan_.owner, runtime.DEALER], options, prepared.tls)
    try:
        mesh.connect(plan_.addresses())
        handshake.agree(mesh, prepared.manifest, None)
    except BaseException as exc:
        mesh.abort(str(exc) if isinstance(exc, manifest.ManifestError) else "handshake failed")
        raise

    def run(session: Any) -> dict[str, Any]:
        seed = mesh.recv(plan_.owner)
        if not isinstance(seed, torch.Tensor) or seed.dtype != torch.uint8 \
                or seed.numel() != SEED_BYTES:
            raise PeerError(plan_.owner, "sent a malformed model share")
        standing.attach(graph, standing.complement(graph, seed.numpy().tobytes()))
        return plan_.serving.query(session, graph)[0]

    return runtime.run_party(_spec(plan_, me, me, options, threads, prepared.tls), mesh,
                             _job(prepared, plan_, me, run))
