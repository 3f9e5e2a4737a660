"""A whole run on one machine: every party and the dealer as local processes, plus baselines.

`run_local` starts each node of a consortium with its policy (as separate
`smpc party` / `smpc dealer` processes on loopback, each seeing only its own
files), and, because locally it can read every party's data, computes the
protocol's plaintext reference on the pooled rows and on each party's rows
alone, with the joint seed the run used (same shuffle, same split).

`write_generated` makes a throwaway consortium for a protocol that needs no
data (the self-test, a test protocol): N parties, every output to every party.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parties.consortium import certs, manifest
from parties.consortium.config import ConfigError, Consortium, load_consortium
from parties.node import party as party_node
from parties.node.launcher import LocalRun, launch
from parties.node.runtime import DEALER
from protocols import registry
from protocols.api import COLUMNS, PlainTable, Protocol


@dataclass
class LocalOutcome:
    """A local run: every node's output and result, and the plaintext baselines."""

    consortium: Consortium
    protocol: Protocol
    run: LocalRun
    wall_seconds: float
    results: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.run.ok and all(r is not None for r in self.results.values())

    def revealed(self) -> dict[str, Any]:
        """Every output as its first recipient learned it."""
        out: dict[str, Any] = {}
        for result in self.results.values():
            for name, value in ((result or {}).get("revealed") or {}).items():
                if value is not None and out.get(name) is None:
                    out[name] = value
        return out

    def as_json(self) -> dict[str, Any]:
        first = next((r for r in self.results.values() if r), {}) or {}
        return {
            "consortium": self.consortium.name, "protocol": self.protocol.name,
            "manifest_digest": first.get("manifest_digest"), "seed": first.get("seed"),
            "revealed": self.revealed(),
            "revealed_by_party": {p: (r or {}).get("revealed") for p, r in self.results.items()},
            "baseline": self.baseline,
            "timings": {p: (r or {}).get("timings") for p, r in self.results.items()},
            "dealer": self.run.nodes[DEALER].result if DEALER in self.run.nodes else None,
            "wall_seconds": self.wall_seconds,
        }


def ensure_dev_certs(consortium: Consortium) -> Path | None:
    """Local mode: create development certificates when the consortium's CA file is missing."""
    ca = consortium.ca_path
    if ca is None or ca.is_file():
        return None
    certs.generate(consortium.name, [*consortium.party_names, DEALER], ca.parent)
    return ca.parent


def policy_paths(consortium: Consortium, given: dict[str, str]) -> dict[str, Path]:
    """Each party's policy: as given (--policy party=path), else policies/<party>.toml."""
    unknown = sorted(set(given) - set(consortium.party_names))
    if unknown:
        raise ConfigError(f"--policy {unknown[0]}=...: '{unknown[0]}' is not a party of "
                          f"{consortium.path} (parties: {', '.join(consortium.party_names)})")
    return {p: Path(given[p]) if p in given
            else consortium.path.parent / "policies" / f"{p}.toml"
            for p in consortium.party_names}


def run_local(consortium_path: str | Path, policies: dict[str, str] | None = None,
              insecure: bool = False, echo: Any = None, timeout: float = 120.0,
              max_run_time: float | None = None, extra: list[str] | None = None,
              announce: bool = True) -> LocalOutcome:
    """Every party and the dealer of a consortium on loopback, then the plaintext baselines."""
    consortium = load_consortium(consortium_path)
    protocol = manifest.resolve_protocol(consortium)
    manifest.build(consortium, protocol)  # a bad consortium fails here, before any process
    paths = policy_paths(consortium, policies or {})
    tables: dict[str, list[PlainTable]] = {}
    for rank, name in enumerate(consortium.party_names):
        prepared = party_node.prepare_party(consortium.path, name, paths[name], insecure,
                                            tls=False)
        if prepared.data_error is not None:
            raise party_node.LocalDataError(prepared.data_error)
        mine: dict[str, Any] = {
            **party_node.plain_tables(consortium, prepared.inputs, prepared.loaded, name),
            **prepared.states}
        for input_name, table in mine.items():
            tables.setdefault(input_name, []).append(table)
        assert all(len(v) == rank + 1 for v in tables.values())
    made = None if insecure else ensure_dev_certs(consortium)
    if made is not None and announce:
        print(f"generated development certificates in {made}", file=sys.stderr)
    flags = ["--listen", "127.0.0.1:0", "--control", "stdin", "--timeout", str(timeout),
             "--threads", "1", *(["--insecure"] if insecure else []), *(extra or [])]
    if max_run_time is not None:
        flags += ["--max-run-time", str(max_run_time)]
    smpc = [sys.executable, "-m", "parties.cli"]
    commands = {p: [*smpc, "party", "--consortium", str(consortium.path), "--as", p,
                    "--policy", str(paths[p]), *flags] for p in consortium.party_names}
    if consortium.randomness == "dealer":
        commands[DEALER] = [*smpc, "dealer", "--consortium", str(consortium.path), *flags]
    tic = time.perf_counter()
    run = launch(commands, timeout=None if max_run_time is None else max_run_time + 60,
                 echo=echo)
    out = LocalOutcome(consortium, protocol, run, time.perf_counter() - tic,
                       {p: run.nodes[p].result for p in consortium.party_names})
    if out.ok and protocol.plaintext is not None and protocol.compare is not None:
        out.baseline = baselines(protocol, manifest.check_parameters(consortium, protocol),
                                 tables, bytes.fromhex(out.results[consortium.party_names[0]]
                                                       ["seed"]), consortium.party_names)
    return out


def baselines(protocol: Protocol, params: Any, tables: dict[str, list[PlainTable]],
              seed: bytes, parties: list[str]) -> dict[str, Any]:
    """The protocol's compared output in plaintext: pooled ("joined" for vertical tables, on
    their identifiers), and each party alone (a party that cannot is left out)."""
    assert protocol.plaintext is not None and protocol.compare is not None
    pooled = (protocol.plaintext(tables, params, seed, None) or {}).get(protocol.compare)
    vertical = any(t and t[0].layout == COLUMNS for t in tables.values())
    alone = {}
    for rank, name in enumerate(parties):
        if not any(t[rank].rows for t in tables.values()):
            continue  # provides no rows at all
        try:
            result = protocol.plaintext(tables, params, seed, rank)
        except Exception as exc:  # e.g. a party whose rows hold one class only
            alone[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        if result is not None:
            alone[name] = result[protocol.compare]
    return {"joined" if vertical else "pooled": pooled, "alone": alone}


def write_generated(target: str, parties: int, folder: Path, insecure: bool = False,
                    parameters: dict[str, Any] | None = None, randomness: str = "dealer"
                    ) -> Path:
    """A consortium for a protocol that takes no data: `parties` parties, all outputs to all.

    `target` is a registered protocol name or a Python file defining PROTOCOL;
    `parameters` become its [protocol.parameters].
    """
    if not 2 <= parties <= 8:
        raise ConfigError(f"--parties {parties}: smpc runs 2 to 8 parties")
    as_file = target.endswith(".py")
    protocol = registry.load_file(Path(target).resolve(), None) if as_file \
        else registry.load(target)
    needs = [i.name for i in protocol.inputs if i.required]
    if needs:
        raise ConfigError(f"protocol {protocol.name} needs data (input '{needs[0]}'): write a "
                          "consortium file naming the tables and each party's policy, and run "
                          "`smpc local CONSORTIUM.toml`")
    names = [f"party{i}" for i in range(parties)]
    lines = ["[consortium]", f'name = "local-{protocol.name}"',
             'ca = ""' if insecure else 'ca = "certs/ca.pem"', f'randomness = "{randomness}"',
             ""]
    for name in names:
        lines += ["[[parties]]", f'name = "{name}"', 'address = "127.0.0.1:0"', ""]
    lines += ["[dealer]", 'address = "127.0.0.1:0"', "", "[protocol]",
              f'name = "{protocol.name}"']
    if as_file:
        lines.append(f"file = {json.dumps(str(Path(target).resolve()))}")
    lines += ["", "[protocol.parameters]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in (parameters or {}).items()]
    lines.append("")
    recipients = ", ".join(f'"{n}"' for n in names)
    for output in protocol.outputs:
        lines += ["[[reveal]]", f'name = "{output.name}"', f"to = [{recipients}]", ""]
    folder.mkdir(parents=True, exist_ok=True)
    consortium = folder / "consortium.toml"
    consortium.write_text("\n".join(lines))
    accepted = ", ".join(f'"{o.name}"' for o in protocol.outputs)
    for name in names:
        policy = folder / "policies" / f"{name}.toml"
        policy.parent.mkdir(exist_ok=True)
        policy.write_text(f'party = "{name}"\n\n[accept]\nprotocols = ["{protocol.name}"]\n'
                          f"reveal = [{accepted}]\n")
    return consortium


def run_generated(target: str, parties: int, insecure: bool = False, echo: Any = None,
                  timeout: float = 120.0, extra: list[str] | None = None,
                  parameters: dict[str, Any] | None = None, randomness: str = "dealer"
                  ) -> LocalOutcome:
    """`smpc local --parties N PROTOCOL`: a generated consortium in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="smpc-local-") as tmp:
        consortium = write_generated(target, parties, Path(tmp), insecure, parameters,
                                     randomness)
        return run_local(consortium, insecure=insecure, echo=echo, timeout=timeout,
                         extra=extra, announce=False)
