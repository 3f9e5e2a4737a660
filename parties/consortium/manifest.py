"""The manifest: what will be computed and revealed, agreed before any data is shared.

Every node builds the manifest from its own copy of the consortium file and its
own installed code, checks it against its local policy, then exchanges it with
every peer (parties/consortium/handshake.py). A single differing field (a
parameter, the reveal list, a byte of any file that computes) stops every
node, naming the field (for code: the file) and the party that differs.

Building the manifest is also where a consortium file meets its protocol: the
protocol must exist, its parameters must type-check, its inputs must map to
declared tables, and its outputs must be exactly the consortium's [[reveal]]
list. Each problem is a ConfigError naming the consortium line, raised before
any connection. Pure functions; the exchange itself is in handshake.py.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from parties.consortium.config import ConfigError, Consortium, Policy
from protocols import registry
from protocols.api import (
    DP_REQUIRED,
    INTERSECTION_SIZE,
    STATE_DICT,
    ParameterError,
    Params,
    Protocol,
)

MANIFEST_VERSION = 2
# smpc's own code that computes or decides what is computed (the CLI is left out), as
# imported packages: the files hashed are the ones this process runs
SMPC_CODE = ("parties.wire", "parties.engine", "parties.dealer", "parties.consortium",
             "parties.node", "protocols")


class ManifestError(RuntimeError):
    """The parties do not agree on what will be computed, or a policy refuses it."""


def resolve_protocol(consortium: Consortium) -> Protocol:
    """The consortium's protocol: from its [protocol] file, or the registry by name."""
    try:
        if consortium.protocol_file is not None:
            protocol = registry.load_file(consortium.protocol_file, consortium.protocol)
        else:
            protocol = registry.load(consortium.protocol)
    except registry.RegistryError as exc:
        raise ConfigError(f"{consortium.where('protocol', 'name')}: {exc}") from None
    wanted = consortium.protocol_version
    if wanted is not None and wanted != protocol.version:
        raise ConfigError(f"{consortium.where('protocol', 'version')}: the consortium wants "
                          f"{protocol.name} version {wanted}, this installation has version "
                          f"{protocol.version}")
    return protocol


def check_parameters(consortium: Consortium, protocol: Protocol) -> Params:
    """The protocol's parameters from [protocol.parameters]; errors name the line."""
    try:
        return protocol.parameters(consortium.parameters, consortium.path.parent)
    except ParameterError as exc:
        key = ("protocol", "parameters", exc.name)
        if exc.name not in consortium.parameters:
            key = ("protocol", "parameters")
        raise ConfigError(f"{consortium.where(*key)}: {protocol.name}: {exc}") from None


def resolve_inputs(consortium: Consortium, protocol: Protocol) -> dict[str, str]:
    """Protocol input -> table name: [protocol.inputs], or the only table for every input
    (a STATE_DICT input, a party's own weights, maps to no table)."""
    declared = {i.name: i for i in protocol.inputs if i.kind != STATE_DICT}
    mapping = dict(consortium.inputs)
    for name in mapping:
        if name in {i.name for i in protocol.inputs if i.kind == STATE_DICT}:
            raise ConfigError(f"{consortium.where('protocol', 'inputs', name)}: "
                              f"{protocol.name}'s input '{name}' is a party's own weights "
                              "(a state_dict file its policy names), not a table")
        if name not in declared:
            raise ConfigError(f"{consortium.where('protocol', 'inputs', name)}: {protocol.name} "
                              f"has no input '{name}' (its inputs: "
                              f"{', '.join(declared) or 'none'})")
    if not mapping and len(consortium.tables) == 1:
        only = next(iter(consortium.tables))
        mapping = dict.fromkeys(declared, only)
    for name, spec in declared.items():
        if name not in mapping:
            if spec.required:
                raise ConfigError(f"{consortium.where('protocol', 'inputs')}: {protocol.name} "
                                  f"needs input '{name}' ({spec.help}); map it to a table in "
                                  "[protocol.inputs]")
            continue
        table = consortium.tables[mapping[name]]
        where = consortium.where("tables", table.name)
        if spec.labelled and table.label is None:
            raise ConfigError(f"{where}: input '{name}' needs a label column; table "
                              f"'{table.name}' declares none")
        if spec.classes is not None and len(table.classes) != spec.classes:
            raise ConfigError(f"{where}: {protocol.name} needs {spec.classes} label classes for "
                              f"input '{name}'; table '{table.name}' declares "
                              f"{len(table.classes)}: {list(table.classes)}")
        if not providers(consortium, spec.role):
            raise ConfigError(f"{consortium.where('parties')}: input '{name}' comes from parties "
                              f"with the role '{spec.role}', and no party has it")
        holders = set(table.holders)
        if holders and holders != set(providers(consortium, spec.role)):
            raise ConfigError(f"{where}: input '{name}' comes from the parties with the role "
                              f"'{spec.role}' ({', '.join(providers(consortium, spec.role))}), "
                              f"but the vertical table '{table.name}' is held by "
                              f"{', '.join(sorted(holders))}")
    for spec in protocol.inputs:
        if spec.kind == STATE_DICT and spec.required and not providers(consortium, spec.role):
            raise ConfigError(f"{consortium.where('parties')}: {protocol.name}'s input "
                              f"'{spec.name}' ({spec.help}) comes from the party with the role "
                              f"'{spec.role}', and no party has it (give one roles = "
                              f"[\"{spec.role}\"])")
    return mapping


def providers(consortium: Consortium, role: str) -> list[str]:
    """The parties with `role`, in rank order."""
    return [p.name for p in consortium.parties if role in p.roles]


def check_reveals(consortium: Consortium, protocol: Protocol) -> None:
    """[[reveal]] must name every output of the protocol (optional ones may be left out).

    A consortium whose inputs read a vertical table may also reveal smpc's own
    `intersection_size`, to every party (or leave it out: to nobody); every party's node
    learns it anyway, so revealing it to some parties only would be a false promise."""
    outputs = {o.name: o for o in protocol.outputs}
    vertical = any(consortium.tables[t].layout == "columns"
                   for t in resolve_inputs(consortium, protocol).values())
    for i, r in enumerate(consortium.reveal):
        if r.name == INTERSECTION_SIZE and vertical and r.name not in outputs:
            if set(r.to) != set(consortium.party_names):
                raise ConfigError(f"{consortium.where('reveal', i, 'to')}: "
                                  f"'{INTERSECTION_SIZE}' goes to every party or, left out of "
                                  "[[reveal]], to nobody: each party's node learns it when it "
                                  "shares its rows of the intersection")
            continue
        if r.name not in outputs:
            extra = f", and {INTERSECTION_SIZE} with a vertical table" if not vertical else ""
            raise ConfigError(f"{consortium.where('reveal', i, 'name')}: {protocol.name} has no "
                              f"output '{r.name}' (its outputs: {', '.join(outputs) or 'none'}"
                              f"{extra if r.name == INTERSECTION_SIZE else ''})")
    named = {r.name for r in consortium.reveal}
    for name, output in outputs.items():
        if name not in named and not output.optional:
            raise ConfigError(f"{consortium.where('reveal')}: {protocol.name} reveals '{name}' "
                              f"({output.help}), but no [[reveal]] says to whom")


def check_budgets(consortium: Consortium, protocol: Protocol) -> dict[str, dict[str, float]]:
    """Output -> its (epsilon, delta) from [[reveal]]: a DP output that is revealed needs one,
    other outputs may not have one (the range of each number is checked in config.py)."""
    budgets = {}
    declared = {o.name: o for o in protocol.outputs}
    for i, r in enumerate(consortium.reveal):
        dp = declared[r.name].dp if r.name in declared else None  # a platform output has no DP
        if r.epsilon is not None and not dp:
            raise ConfigError(f"{consortium.where('reveal', i, 'epsilon')}: {protocol.name}'s "
                              f"output '{r.name}' is not differentially private; a privacy "
                              "budget (epsilon, delta) has no meaning for it")
        if r.epsilon is None and dp == DP_REQUIRED:
            raise ConfigError(f"{consortium.where('reveal', i)}: {protocol.name} reveals "
                              f"'{r.name}' with differential privacy: give this [[reveal]] its "
                              "budget, e.g. epsilon = 1.0 and delta = 1e-5")
        if r.epsilon is not None and r.delta is not None:
            budgets[r.name] = {"epsilon": r.epsilon, "delta": r.delta}
    return budgets


def code_hashes(protocol: Protocol, params: Params | None = None) -> dict[str, Any]:
    """sha256 of every file that computes: smpc's engine, wire, dealer, consortium, node and
    protocols, the protocol's own package (or file), the files its parameters bring in
    (`Protocol.sources`, e.g. a model's source), and the versions of CrypTen and torch."""
    smpc = {}
    for package in SMPC_CODE:
        folder = Path(importlib.import_module(package).__file__ or "").parent
        root = folder.parents[package.count(".")]
        for path in sorted(folder.rglob("*.py")):
            smpc[path.relative_to(root).as_posix()] = _sha(path)
    own = {name: _sha(path) for name, path in _own_files(protocol).items()}
    if protocol.sources is not None and params is not None:
        own.update({name: _sha(path) for name, path in protocol.sources(params).items()})
    return {"smpc": smpc, "protocol": own, "crypten": _version("crypten"),
            "torch": _version("torch")}


def _own_files(protocol: Protocol) -> dict[str, Path]:
    """The protocol's files outside smpc: its package (or module, or file beside the
    consortium) and any extra sources it names."""
    files = {Path(s).name: Path(s) for s in protocol.extra_sources}
    top = protocol.module.split(".")[0]
    if top in ("protocols", ""):
        return files
    origin = Path(importlib.import_module(top).__file__ or "")
    if origin.name != "__init__.py":
        return {origin.name: origin, **files}
    package = {f"{top}/{p.relative_to(origin.parent).as_posix()}": p
               for p in sorted(origin.parent.rglob("*.py"))}
    return {**package, **files}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def build(consortium: Consortium, protocol: Protocol | None = None) -> dict[str, Any]:
    """The manifest as plain data (safe to send with the object codec); ConfigError if the
    consortium and its protocol do not fit together."""
    protocol = protocol or resolve_protocol(consortium)
    params = check_parameters(consortium, protocol)
    inputs = resolve_inputs(consortium, protocol)
    check_reveals(consortium, protocol)
    budgets = check_budgets(consortium, protocol)
    used = sorted(set(inputs.values()))
    return {
        "manifest_version": MANIFEST_VERSION,
        "consortium": consortium.name,
        "protocol": {"name": protocol.name, "version": protocol.version,
                     "parameters": _plain(dict(params))},
        "code": code_hashes(protocol, params),
        "parties": [[p.name, p.address, list(p.roles)] for p in consortium.parties],
        "dealer": consortium.dealer,
        "randomness": consortium.randomness,
        "inputs": dict(sorted(inputs.items())),
        "tables": {name: consortium.tables[name].as_manifest() for name in used},
        "reveal": [[r.name, list(r.to)] for r in consortium.reveal],
        "budget": budgets,  # output -> {"epsilon", "delta"} of each DP output
        # revealed statistics over fewer rows are suppressed (checked on shares)
        "min_group_size": consortium.min_group_size,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def digest(manifest: dict[str, Any]) -> str:
    """A canonical fingerprint of the manifest (sha256 of sorted JSON)."""
    blob = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def first_difference(mine: Any, theirs: Any, path: tuple[Any, ...] = ()
                     ) -> tuple[tuple[Any, ...], Any, Any] | None:
    """(key path, my value, their value) of the first difference, or None if equal."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs), key=str):
            if key not in mine or key not in theirs:
                return (*path, key), mine.get(key, "<absent>"), theirs.get(key, "<absent>")
            diff = first_difference(mine[key], theirs[key], (*path, key))
            if diff:
                return diff
        return None
    if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            diff = first_difference(a, b, (*path, i))
            if diff:
                return diff
        return None
    return None if mine == theirs else (path, mine, theirs)


def _field(path: tuple[Any, ...]) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "<root>"


def policy_objection(manifest: dict[str, Any], policy: Policy, me: str) -> str | None:
    """Why `me`'s local policy refuses this manifest, or None when it accepts it."""
    if policy.party != me:
        return f"policy {policy.path} is for party '{policy.party}', not '{me}'"
    proto = manifest["protocol"]["name"]
    if proto not in policy.accept_protocols:
        return f"its policy does not accept protocol '{proto}' (field protocol.name)"
    for name, _to in manifest["reveal"]:
        if name not in policy.accept_reveal:
            return f"its policy does not accept revealing '{name}' (field reveal)"
    refused = budget_refusal(manifest, policy)
    return refused[0] if refused is not None else None


def budget_refusal(manifest: dict[str, Any], policy: Policy,
                   consortium: Consortium | None = None) -> tuple[str, str] | None:
    """(what the peers are told, what this party prints) when the policy's [accept]
    max_epsilon refuses a revealed output's budget; None when every budget is within it.

    An output the policy caps must be released with differential privacy: without a budget
    its epsilon is unbounded. The peers learn the two numbers and the field; the local
    message adds the policy's and the consortium's file:line.
    """
    budgets = manifest.get("budget", {})
    for i, (name, _to) in enumerate(manifest["reveal"]):
        cap = policy.max_epsilon.get(name)
        if cap is None:
            continue
        mine = policy.where("accept", "max_epsilon", name)
        theirs = consortium.where("reveal", i) if consortium is not None else "the consortium"
        asked = budgets.get(name)
        if asked is None:
            public = (f"its policy accepts '{name}' only with differential privacy, epsilon <= "
                      f"{cap:g}; the consortium reveals it without a budget (field budget)")
            return public, (f"{mine}: the policy accepts '{name}' only with differential "
                            f"privacy, epsilon <= {cap:g}; {theirs} reveals it without a budget")
        if asked["epsilon"] > cap:
            public = (f"its policy accepts epsilon <= {cap:g} for '{name}'; the consortium asks "
                      f"epsilon = {asked['epsilon']:g} (field budget.{name}.epsilon)")
            where = consortium.where("reveal", i, "epsilon") if consortium is not None \
                else theirs
            return public, (f"{mine}: the policy accepts epsilon <= {cap:g} for '{name}', but "
                            f"{where} asks epsilon = {asked['epsilon']:g}")
    return None


def compare(mine: dict[str, Any], theirs: dict[str, Any], peer: str) -> None:
    """Raise ManifestError naming the first field (or code file) in which `peer` differs."""
    diff = first_difference(mine, theirs)
    if diff is None:
        return
    path, a, b = diff
    if path[:1] == ("code",) and len(path) == 3 and path[1] in ("smpc", "protocol"):
        what = "is missing" if "<absent>" in (a, b) else "differs"
        raise ManifestError(f"party '{peer}' runs different code: file {path[2]} {what} "
                            f"(field 'code.{path[1]}'; sha256 here {_short(a)}, there "
                            f"{_short(b)})")
    raise ManifestError(f"manifest differs from party '{peer}' in field '{_field(path)}': "
                        f"here {_short(a)}, there {_short(b)}")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."

