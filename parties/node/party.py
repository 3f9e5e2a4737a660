"""One organization's node in a consortium run: a party, or the dealer.

The order is the trust model's:

1. read the consortium file and the local policy; resolve the protocol; build
   the manifest (parameters type-checked, inputs mapped, outputs = [[reveal]]);
   check the policy; read and check this party's own data — all before
   connecting to anyone, so a bad file or setting is reported in seconds;
2. connect, and agree on the manifest with every node (a party whose data
   failed its checks still connects, to say so: every node then stops, naming
   it, while the details stay in its own log);
3. only then share data and run the protocol; export what this party learned.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from parties.consortium import handshake, manifest
from parties.consortium.config import (
    ConfigError,
    Consortium,
    Policy,
    load_consortium,
    load_policy,
)
from parties.consortium.data import DataError, LoadedTable, load_table
from parties.node import runtime
from parties.node.checkpoint import Checkpoints
from parties.wire.transport import LinkOptions, TlsIdentity
from protocols.api import (
    COLUMNS,
    STATE_DICT,
    Budget,
    ExportContext,
    Params,
    PlainState,
    PlainTable,
    Protocol,
)

DATA_REFUSED = "its data failed its local validation"


class TlsSettingError(ValueError):
    """TLS is asked for (or missing) in a way that cannot work."""


class LocalDataError(DataError):
    """This party's data failed its checks; the handshake told the peers only that."""


@dataclass
class Prepared:
    """Everything a node knows before it connects."""

    consortium: Consortium
    name: str
    protocol: Protocol
    params: Params
    manifest: dict[str, Any]
    inputs: dict[str, str]  # protocol input -> table
    objection: str | None = None
    loaded: dict[str, LoadedTable | None] = field(default_factory=dict)
    states: dict[str, PlainState] = field(default_factory=dict)  # STATE_DICT inputs (own)
    data_error: str | None = None
    tls: TlsIdentity | None = None
    policy: Policy | None = None
    refusal: str | None = None  # this party's own account of a budget refusal (file:line)

    @property
    def digest(self) -> str:
        return manifest.digest(self.manifest)


@dataclass
class Outcome:
    """What one party learned, and how long it took."""

    party: str
    digest: str
    protocol: str
    result: dict[str, Any]
    seconds: float
    stats: dict[str, Any]
    seed: str
    resumed_from: int | None = None
    files: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"party": self.party, "protocol": self.protocol, "manifest_digest": self.digest,
                "revealed": plain(self.result), "seed": self.seed,
                "resumed_from": self.resumed_from, "files": self.files,
                "timings": {"protocol_seconds": self.seconds,
                            "communication_seconds": self.stats.get("time"),
                            "rounds": self.stats.get("rounds"),
                            "bytes_sent": self.stats.get("bytes_sent"),
                            "bytes_received": self.stats.get("bytes_received"),
                            "dealer_requests": self.stats.get("dealer_requests"),
                            "dealer_draws": self.stats.get("dealer_draws")}}


def plain(value: Any) -> Any:
    """Tensors as numbers and nested lists, for JSON."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 and value.dim() == 0 else value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------- before connecting

def tls_identity(consortium: Consortium, name: str, key: Path | None, cert: Path | None,
                 insecure: bool) -> TlsIdentity | None:
    """This node's TLS identity, or None for plaintext (only with --insecure, on loopback)."""
    if insecure:
        if not consortium.all_loopback():
            raise TlsSettingError("--insecure is allowed only when every address in "
                                  f"{consortium.path} is on loopback")
        print(f"WARNING: [{name}] --insecure: links are plaintext and unauthenticated "
              "(loopback only)", file=sys.stderr, flush=True)
        return None
    ca = consortium.ca_path
    if ca is None:
        raise TlsSettingError(f"{consortium.where('consortium')}: the consortium names no CA "
                              "([consortium] ca): create one with `smpc certs`, or run with "
                              "--insecure on loopback")
    key = key or ca.parent / f"{name}.key"
    cert = cert or ca.parent / f"{name}.pem"
    for what, path in (("CA certificate", ca), ("key", key), ("certificate", cert)):
        if not path.is_file():
            raise TlsSettingError(f"{what} {path} not found (for development: smpc certs "
                                  f"{consortium.path})")
    return TlsIdentity(ca.read_bytes(), key.read_bytes(), cert.read_bytes())


def prepare_node(consortium_path: str | Path, name: str) -> Prepared:
    """Consortium, protocol and manifest (the dealer stops here; parties go on)."""
    consortium = load_consortium(consortium_path)
    consortium.address_of(name)
    protocol = manifest.resolve_protocol(consortium)
    built = manifest.build(consortium, protocol)
    return Prepared(consortium, name, protocol, manifest.check_parameters(consortium, protocol),
                    built, manifest.resolve_inputs(consortium, protocol))


def prepare_party(consortium_path: str | Path, name: str, policy_path: str | Path,
                  insecure: bool = False, tls: bool = True) -> Prepared:
    """Everything a party does before it connects: settings, manifest, policy, its own data."""
    return prepare_with(consortium_path, name, load_policy(policy_path), insecure, tls)


def prepare_with(consortium_path: str | Path, name: str, policy: Policy, insecure: bool = False,
                 tls: bool = True) -> Prepared:
    """prepare_party with a policy already read (or made: `smpc predict --input`)."""
    prepared = prepare_node(consortium_path, name)
    prepared.policy = policy
    prepared.objection = manifest.policy_objection(prepared.manifest, policy, name)
    refused = manifest.budget_refusal(prepared.manifest, policy, prepared.consortium)
    if tls:
        prepared.tls = tls_identity(prepared.consortium, name, policy.key, policy.cert, insecure)
    if refused is not None and prepared.objection == refused[0]:
        prepared.refusal = refused[1]  # a privacy budget above the policy: the data stays unread
        return prepared
    try:
        prepared.loaded = load_inputs(prepared.consortium, policy, name, prepared.protocol,
                                      prepared.inputs)
        prepared.states = load_states(prepared.consortium, policy, name, prepared.protocol,
                                      prepared.params)
    except (DataError, ConfigError) as exc:
        prepared.data_error = str(exc)
        prepared.objection = prepared.objection or DATA_REFUSED
    return prepared


def load_inputs(consortium: Consortium, policy: Policy, name: str, protocol: Protocol,
                inputs: dict[str, str]) -> dict[str, LoadedTable | None]:
    """This party's files for the inputs it provides (None for inputs it does not provide)."""
    out: dict[str, LoadedTable | None] = {}
    weights = {i.name for i in protocol.inputs if i.kind == STATE_DICT}
    unknown = sorted(set(policy.data) - set(inputs) - weights)
    if unknown:
        raise ConfigError(f"{policy.where('data', unknown[0])}: the protocol "
                          f"{protocol.name} has no input '{unknown[0]}' used by this consortium "
                          f"(inputs: {', '.join(inputs) or 'none'})")
    for input_name, table in inputs.items():
        spec = protocol.input(input_name)
        if name not in manifest.providers(consortium, spec.role):
            out[input_name] = None
            continue
        path = policy.data.get(input_name)
        if path is None:
            if spec.required:
                raise ConfigError(f"{policy.where('data')}: the policy names no file for input "
                                  f"'{input_name}' ({spec.help}); add it under [data]")
            out[input_name] = None
            continue
        schema = consortium.tables[table]
        if schema.layout == "rows":
            out[input_name] = load_table(path, schema, policy.max_rows)
            continue
        identifier = policy.identifiers.get(input_name) or schema.identifier
        if identifier is None:
            raise ConfigError(f"{policy.where('identifiers')}: input '{input_name}' reads the "
                              f"vertical table '{table}', which names no identifier column: "
                              f"name this party's under [identifiers] ({input_name} = "
                              "\"COLUMN\")")
        mine = schema.view(name)
        if identifier in schema.owners():
            raise ConfigError(f"{policy.where('identifiers', input_name)}: identifier column "
                              f"'{identifier}' is a column of table '{table}'; the identifier "
                              "is never shared, so it cannot be one")
        foreign = {c: p for c, p in schema.owners().items() if p != name}
        out[input_name] = load_table(path, mine, policy.max_rows, identifier, foreign)
    return out


def load_states(consortium: Consortium, policy: Policy, name: str, protocol: Protocol,
                params: Params) -> dict[str, PlainState]:
    """This party's own weights for each STATE_DICT input (an empty state for the inputs it
    does not provide), each checked by its input's `check`; DataError names the file."""
    from parties.consortium.weights import load_state_dict

    out = {}
    for spec in protocol.inputs:
        if spec.kind != STATE_DICT:
            continue
        if name not in manifest.providers(consortium, spec.role):
            out[spec.name] = PlainState({})
            continue
        path = policy.data.get(spec.name)
        if path is None:
            raise ConfigError(f"{policy.where('data')}: this party has the role '{spec.role}': "
                              f"name its file for input '{spec.name}' ({spec.help}) under "
                              "[data]")
        state = load_state_dict(path)
        problem = spec.check(state, params) if spec.check is not None else None
        if problem:
            raise DataError(f"{path}: {problem}")
        out[spec.name] = PlainState(state)
    return out


def plain_tables(consortium: Consortium, inputs: dict[str, str],
                 loaded: dict[str, LoadedTable | None], name: str = "") -> dict[str, PlainTable]:
    """What the protocol sees of `name`'s inputs (zero rows where it provides none)."""
    out = {}
    for input_name, table_name in inputs.items():
        schema = consortium.tables[table_name]
        got = loaded.get(input_name)
        mine = schema.view(name)  # a vertical table: this party's columns and label only
        width = len(mine.encoded_columns)
        features = got.features if got is not None else torch.empty(0, width)
        labels = got.labels if got is not None else (
            torch.empty(0, 1) if mine.label is not None else None)
        if schema.layout == "rows":
            out[input_name] = PlainTable(features, labels, tuple(schema.encoded_columns),
                                         tuple(schema.classes))
            continue
        out[input_name] = PlainTable(
            features, labels, tuple(mine.encoded_columns), tuple(schema.classes),
            layout=COLUMNS, identifiers=(got.identifiers or ()) if got is not None else (),
            pooled_columns=tuple(schema.encoded_columns))
    return out


# ---------------------------------------------------------------- connected

def node_spec(consortium: Consortium, name: str, listen: str | None, options: LinkOptions,
              threads: int = 0, tls: TlsIdentity | None = None) -> runtime.NodeSpec:
    addresses = {p.name: p.address for p in consortium.parties}
    addresses[runtime.DEALER] = consortium.dealer
    own = addresses.get(name, "")
    return runtime.NodeSpec(
        name=name, parties=consortium.party_names, session_id=consortium.name,
        listen=listen or "0.0.0.0:" + own.rpartition(":")[2], addresses=addresses,
        provider=consortium.randomness, options=options, torch_threads=threads, tls=tls)


def agree(prepared: Prepared, listen: str | None, options: LinkOptions, control: bool,
          threads: int = 0) -> tuple[runtime.NodeSpec, Any]:
    """Connect and agree on the manifest; the mesh is aborted on any disagreement."""
    spec = node_spec(prepared.consortium, prepared.name, listen, options, threads, prepared.tls)
    mesh = runtime.open_mesh(spec, control_in=sys.stdin if control else None)
    try:
        handshake.agree(mesh, prepared.manifest, prepared.objection)
    except BaseException as exc:
        mesh.abort(str(exc) if isinstance(exc, manifest.ManifestError) else "handshake failed")
        if prepared.data_error is not None:
            raise LocalDataError(prepared.data_error) from None
        if prepared.refusal is not None:
            raise manifest.ManifestError(f"refused by its policy: {prepared.refusal}") from None
        raise
    return spec, mesh


def run_party(prepared: Prepared, listen: str | None, options: LinkOptions, control: bool,
              on_progress: Any = None, threads: int = 0, checkpoint_dir: str | None = None,
              resume: bool = False, out_dir: str | None = None) -> Outcome:
    """Connect, agree, run the protocol on this party's data, export what it learned."""
    consortium, name = prepared.consortium, prepared.name
    spec, mesh = agree(prepared, listen, options, control, threads)
    folder = Path(checkpoint_dir or Path("checkpoints") / consortium.name / name)
    job = runtime.PartyJob(
        protocol=prepared.protocol, params=prepared.params,
        tables=plain_tables(consortium, prepared.inputs, prepared.loaded, name),
        providers={i: manifest.providers(consortium, prepared.protocol.input(i).role)
                   for i in [*prepared.inputs, *prepared.states]},
        reveal_to={r.name: list(r.to) for r in consortium.reveal},
        checkpoints=Checkpoints(folder, prepared.digest, resume),
        budgets={name: Budget(b["epsilon"], b["delta"])
                 for name, b in prepared.manifest.get("budget", {}).items()},
        min_group_size=prepared.manifest.get("min_group_size", 1),
        states=dict(prepared.states))
    run = runtime.run_party(spec, mesh, job, on_progress)
    outcome = Outcome(name, prepared.digest, prepared.protocol.name, run.result, run.seconds,
                      run.stats, run.seed.hex(), run.resumed_from)
    target = Path(out_dir) if out_dir else Path("out") / consortium.name / name
    outcome.files = export(prepared, run.result, target)
    return outcome


def export(prepared: Prepared, result: dict[str, Any], folder: Path) -> list[str]:
    """Run the exporter of every output this party received; return the files written."""
    context = ExportContext(
        folder=folder, protocol=prepared.protocol.name, params=prepared.params,
        manifest_digest=prepared.digest,
        tables={i: prepared.consortium.tables[t] for i, t in prepared.inputs.items()},
        revealed=plain(result))
    files: list[str] = []
    for output in prepared.protocol.outputs:
        value = result.get(output.name)
        if output.export is not None and value is not None:
            files += [str(p) for p in output.export(value, context)]
    return files


def run_dealer(consortium_path: str, listen: str | None, options: LinkOptions, control: bool,
               threads: int = 0, key: str | None = None, cert: str | None = None,
               insecure: bool = False) -> dict[str, int]:
    """The dealer of a consortium: agrees on the manifest, then serves randomness."""
    prepared = prepare_node(consortium_path, runtime.DEALER)
    prepared.tls = tls_identity(prepared.consortium, runtime.DEALER, Path(key) if key else None,
                                Path(cert) if cert else None, insecure)
    spec, mesh = agree(prepared, listen, options, control, threads)
    return runtime.run_dealer(spec, mesh)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
