"""The consortium file and a party's local policy (TOML), validated with locations.

A consortium file is what every member receives: the parties and their
addresses, the dealer, the CA, the protocol and its parameters, the data
schema, and what will be revealed to whom. A policy is what one organization
keeps to itself: where its data lives and what it is willing to run and reveal.

Every error names the file, the line where it can be found, and what is wrong.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TYPES = ("float", "int", "binary")


def is_loopback(host: str) -> bool:
    """Whether `host` (as written in an address) is on this machine's loopback."""
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


class ConfigError(ValueError):
    """A consortium or policy file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Party:
    name: str
    address: str


@dataclass(frozen=True)
class Reveal:
    """One output the protocol may reveal, and to whom."""

    name: str
    to: tuple[str, ...]


@dataclass(frozen=True)
class Schema:
    features: tuple[str, ...]
    label: str
    types: dict[str, str] = field(default_factory=dict)
    # public, agreed value ranges: each party scales its own columns to [0, 1] with them
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Consortium:
    path: Path
    name: str
    parties: tuple[Party, ...]
    dealer: str
    ca: str
    protocol: str
    protocol_version: str
    parameters: dict[str, Any]
    schema: Schema
    reveal: tuple[Reveal, ...]

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate file, relative to the consortium file; None without TLS."""
        if not self.ca:
            return None
        path = Path(self.ca)
        return path if path.is_absolute() else Path(os.path.normpath(self.path.parent / path))

    def all_loopback(self) -> bool:
        addresses = [p.address for p in self.parties] + [self.dealer]
        return all(is_loopback(a.rpartition(":")[0]) for a in addresses)

    @property
    def party_names(self) -> list[str]:
        return [p.name for p in self.parties]

    def address_of(self, name: str) -> str:
        if name == "dealer":
            return self.dealer
        for p in self.parties:
            if p.name == name:
                return p.address
        raise ConfigError(f"{self.path}: no party named '{name}' (parties: "
                          f"{', '.join(self.party_names)})")


@dataclass(frozen=True)
class Policy:
    path: Path
    party: str
    data: Path
    test_data: Path | None
    accept_protocols: tuple[str, ...]
    accept_reveal: tuple[str, ...]
    key: Path | None = None
    cert: Path | None = None


class _Where:
    """Locates keys in the TOML text so errors can name a line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, *needles: str) -> int | None:
        """First line containing every needle (after the previous one), 1-based."""
        start = 0
        found = None
        for needle in needles:
            for i in range(start, len(self.lines)):
                if needle in self.lines[i]:
                    found, start = i + 1, i + 1
                    break
            else:
                return found
        return found

    def error(self, message: str, *needles: str) -> ConfigError:
        line = self.line(*needles) if needles else None
        where = f"{self.path}:{line}" if line else f"{self.path}"
        return ConfigError(f"{where}: {message}")


def _read(path: Path) -> tuple[dict[str, Any], _Where]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text), _Where(path, text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: _Where,
         ctx: str, *needles: str) -> Any:
    if key not in table:
        raise where.error(f"{ctx}: '{key}' is missing", *(needles or (ctx.strip("[]"),)))
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise where.error(f"{ctx}: '{key}' must be a {names}, got {value!r}", *needles, key)
    return value


def _address(value: str, where: _Where, ctx: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise where.error(f"{ctx}: address {value!r} is not host:port", value)
    return value


def load_consortium(path: str | Path) -> Consortium:
    """Read and validate a consortium file."""
    path = Path(path)
    doc, where = _read(path)
    head = doc.get("consortium", {})
    if not isinstance(head, dict):
        raise where.error("[consortium] must be a table", "consortium")
    name = head.get("name", path.stem)
    parties_raw = doc.get("parties")
    if not isinstance(parties_raw, list) or not parties_raw:
        raise where.error("no [[parties]] listed", "[[parties]]")
    parties = []
    for i, entry in enumerate(parties_raw, 1):
        ctx = f"[[parties]] #{i}"
        pname = _get(entry, "name", str, where, ctx, "[[parties]]")
        if not NAME.match(pname) or pname == "dealer":
            raise where.error(f"{ctx}: party name {pname!r} must be lowercase letters, digits, "
                              "'-' or '_' (and not 'dealer')", pname)
        addr = _address(_get(entry, "address", str, where, ctx, pname), where, ctx)
        parties.append(Party(pname, addr))
    names = [p.name for p in parties]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise where.error(f"party {dups[0]!r} is listed twice", dups[0])
    if not 2 <= len(parties) <= 8:
        raise where.error(f"{len(parties)} parties: smpc runs 2 to 8", "[[parties]]")
    dealer = doc.get("dealer", {})
    dealer_addr = _address(_get(dealer, "address", str, where, "[dealer]", "[dealer]"), where,
                           "[dealer]")
    proto = doc.get("protocol")
    if not isinstance(proto, dict):
        raise where.error("[protocol] is missing", "[protocol]")
    pname = _get(proto, "name", str, where, "[protocol]", "[protocol]")
    version = str(proto.get("version", "1"))
    params = proto.get("parameters", {})
    if not isinstance(params, dict):
        raise where.error("[protocol.parameters] must be a table", "parameters")
    schema = _schema(doc, where)
    reveal = _reveals(doc, where, set(names))
    return Consortium(path=path, name=str(name), parties=tuple(parties), dealer=dealer_addr,
                      ca=str(head.get("ca", "")), protocol=pname, protocol_version=version,
                      parameters=dict(params), schema=schema, reveal=reveal)


def _schema(doc: dict[str, Any], where: _Where) -> Schema:
    raw = doc.get("schema")
    if not isinstance(raw, dict):
        raise where.error("[schema] is missing", "[schema]")
    features = _get(raw, "features", list, where, "[schema]", "[schema]")
    if not features or not all(isinstance(f, str) and f for f in features):
        raise where.error("[schema]: 'features' must be a non-empty list of column names",
                          "features")
    if len(set(features)) != len(features):
        raise where.error("[schema]: a feature column is listed twice", "features")
    label = _get(raw, "label", str, where, "[schema]", "[schema]")
    if label in features:
        raise where.error(f"[schema]: label {label!r} is also a feature", "label")
    types = raw.get("types", {})
    if not isinstance(types, dict):
        raise where.error("[schema.types] must be a table", "types")
    for col, kind in types.items():
        if col not in features and col != label:
            raise where.error(f"[schema.types]: {col!r} is not a declared column", col)
        if kind not in TYPES:
            raise where.error(f"[schema.types]: {col!r} has type {kind!r}; use one of "
                              f"{', '.join(TYPES)}", col)
    ranges_raw = raw.get("ranges", {})
    if not isinstance(ranges_raw, dict):
        raise where.error("[schema.ranges] must be a table", "ranges")
    ranges = {}
    for col, bounds in ranges_raw.items():
        if col not in features:
            raise where.error(f"[schema.ranges]: {col!r} is not a feature", col)
        ok = (isinstance(bounds, list) and len(bounds) == 2
              and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bounds)
              and bounds[0] < bounds[1])
        if not ok:
            raise where.error(f"[schema.ranges]: {col!r} must be [low, high] with low < high",
                              col)
        ranges[col] = (float(bounds[0]), float(bounds[1]))
    return Schema(tuple(features), label, dict(types), ranges)


def _reveals(doc: dict[str, Any], where: _Where, parties: set[str]) -> tuple[Reveal, ...]:
    raw = doc.get("reveal", [])
    if not isinstance(raw, list):
        raise where.error("reveal must be a list of [[reveal]] tables", "reveal")
    out, seen = [], set()
    for i, entry in enumerate(raw, 1):
        ctx = f"[[reveal]] #{i}"
        name = _get(entry, "name", str, where, ctx, "[[reveal]]")
        to = _get(entry, "to", list, where, ctx, name)
        unknown = [p for p in to if p not in parties]
        if unknown or not to:
            raise where.error(f"{ctx} '{name}': recipients {unknown or '[]'} are not parties",
                              name)
        if name in seen:
            raise where.error(f"output {name!r} is declared twice", name)
        seen.add(name)
        out.append(Reveal(name, tuple(to)))
    return tuple(out)


def load_policy(path: str | Path) -> Policy:
    """Read and validate one organization's local policy; paths are relative to the file."""
    path = Path(path)
    doc, where = _read(path)
    party = _get(doc, "party", str, where, "policy", "party")
    data = Path(_get(doc, "data", str, where, "policy", "data"))
    test = doc.get("test_data")
    accept = doc.get("accept", {})
    if not isinstance(accept, dict):
        raise where.error("[accept] must be a table", "accept")
    protocols = accept.get("protocols", [])
    reveal = accept.get("reveal", [])
    for key, value in (("protocols", protocols), ("reveal", reveal)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise where.error(f"[accept]: '{key}' must be a list of names", key)
    base = path.parent

    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else Path(os.path.normpath(base / p))

    optional = {}
    for key in ("key", "cert"):
        if key in doc:
            if not isinstance(doc[key], str):
                raise where.error(f"policy: '{key}' must be a path", key)
            optional[key] = resolve(Path(doc[key]))
    return Policy(path=path, party=party, data=resolve(data),
                  test_data=resolve(Path(test)) if isinstance(test, str) else None,
                  accept_protocols=tuple(protocols), accept_reveal=tuple(reveal), **optional)
