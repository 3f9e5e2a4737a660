"""The consortium file and a party's local policy (TOML), validated with exact line numbers.

A consortium file is what every member receives: the parties and their
addresses and roles, the dealer, the CA, the protocol with its parameters and
the tables it reads, the tables' columns, and what will be revealed to whom. A
policy is what one organization keeps to itself: where its data lives, how
large it may be, and what it is willing to run and reveal.

Values come from `tomllib`; the line of every key comes from
`toml_positions.key_lines`. Every error reads "FILE:LINE: message" and names
the key or entry that is wrong ("FILE: message" when no line applies).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parties.consortium.toml_positions import KeyPath, key_lines, nearest_line

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TYPES = ("float", "int", "binary", "categorical")
DEFAULT_ROLES = ("data holder",)
DEFAULT_CLASSES = (0, 1)
DEFAULT_MAX_ROWS = 10_000_000
MIN_PARTIES, MAX_PARTIES = 2, 8


def is_loopback(host: str) -> bool:
    """Whether `host` (as written in an address) is on this machine's loopback."""
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


class ConfigError(ValueError):
    """A consortium or policy file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Party:
    """One member: its name (also its certificate identity), address and free-form roles."""

    name: str
    address: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Reveal:
    """One output the protocol may reveal, and to whom; a DP output's (epsilon, delta)."""

    name: str
    to: tuple[str, ...]
    epsilon: float | None = None  # the privacy budget of a differentially private output
    delta: float | None = None


@dataclass(frozen=True)
class TableSchema:
    """The agreed columns of one table that each data holder supplies as a CSV file.

    `types` holds every feature's type (float unless declared). `categories`
    holds the categories of each categorical feature, in one-hot order. `ranges`
    are public, agreed bounds: a feature with a range is scaled to [0, 1] with
    them when loaded. `classes` are the label's values in class-index order.
    """

    name: str
    features: tuple[str, ...]
    label: str | None
    types: dict[str, str]
    ranges: dict[str, tuple[float, float]]
    categories: dict[str, tuple[str, ...]]
    classes: tuple[str | int, ...]
    # vertical partitioning: which party holds which features (rank order; `features` is
    # their concatenation), who holds the label, and the identifier column (a default; a
    # policy may name its own). Empty `holders`: every party holds every column.
    holders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    label_holder: str | None = None
    identifier: str | None = None

    @property
    def layout(self) -> str:
        """'columns' (vertical: parties hold different columns) or 'rows' (horizontal)."""
        return "columns" if self.holders else "rows"

    def view(self, party: str) -> TableSchema:
        """What `party` itself holds of a vertical table: its features, and the label if it
        holds it (a horizontal table: the table itself)."""
        if not self.holders:
            return self
        mine = self.holders.get(party, ())
        label = self.label if self.label_holder == party else None
        return TableSchema(
            name=self.name, features=mine, label=label,
            types={c: t for c, t in self.types.items() if c in mine},
            ranges={c: r for c, r in self.ranges.items() if c in mine},
            categories={c: v for c, v in self.categories.items() if c in mine},
            classes=self.classes)

    def owners(self) -> dict[str, str]:
        """Column -> the party that holds it, the label included (a vertical table)."""
        out = {c: p for p, cols in self.holders.items() for c in cols}
        if self.label is not None and self.label_holder is not None:
            out[self.label] = self.label_holder
        return out

    @property
    def encoded_columns(self) -> tuple[str, ...]:
        """The loaded feature matrix's columns: features in order, categoricals one-hot."""
        out: list[str] = []
        for col in self.features:
            if col in self.categories:
                out += [f"{col}={value}" for value in self.categories[col]]
            else:
                out.append(col)
        return tuple(out)

    def as_manifest(self) -> dict[str, Any]:
        """Everything above as plain JSON-able values, maps sorted by column name (the
        vertical layout only for a vertical table)."""
        out: dict[str, Any] = {
            "name": self.name,
            "features": list(self.features),
            "label": self.label,
            "classes": list(self.classes),
            "types": {k: self.types[k] for k in sorted(self.types)},
            "categories": {k: list(self.categories[k]) for k in sorted(self.categories)},
            "ranges": {k: list(self.ranges[k]) for k in sorted(self.ranges)},
        }
        if self.holders:
            out["layout"] = {"columns": {p: list(c) for p, c in self.holders.items()},
                             "label_holder": self.label_holder,
                             "identifier": self.identifier}
        return out


def _where(path: Path, lines: Mapping[KeyPath, int], keys: KeyPath) -> str:
    line = nearest_line(lines, keys)
    return f"{path}:{line}" if line else str(path)


RANDOMNESS = ("dealer", "insecure-trusted-first-party")


@dataclass(frozen=True)
class Consortium:
    """A validated consortium file. `protocol_file` is absolute; None for an installed protocol."""

    path: Path
    name: str
    parties: tuple[Party, ...]
    dealer: str
    ca: str
    protocol: str
    protocol_version: str | None
    protocol_file: Path | None
    parameters: dict[str, Any]
    inputs: dict[str, str]
    tables: dict[str, TableSchema]
    reveal: tuple[Reveal, ...]
    # where correlated randomness comes from: the dealer node, or (tests and benchmarks
    # only) CrypTen's trusted first party, which lets party 0 know every party's masks
    randomness: str = "dealer"
    # every revealed statistic computed over fewer rows than this is suppressed (1: none is)
    min_group_size: int = 1
    _lines: Mapping[KeyPath, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate file, relative to the consortium file; None without TLS."""
        if not self.ca:
            return None
        path = Path(self.ca)
        return path if path.is_absolute() else Path(os.path.normpath(self.path.parent / path))

    def all_loopback(self) -> bool:
        """Whether every party and the dealer have a loopback address."""
        addresses = [p.address for p in self.parties] + [self.dealer]
        return all(is_loopback(a.rpartition(":")[0]) for a in addresses)

    @property
    def party_names(self) -> list[str]:
        return [p.name for p in self.parties]

    def _party(self, name: str) -> Party:
        for p in self.parties:
            if p.name == name:
                return p
        raise ConfigError(f"{self.where('parties')}: no party named '{name}' (parties: "
                          f"{', '.join(self.party_names)})")

    def address_of(self, name: str) -> str:
        """The address of a party, or of the dealer for name 'dealer'."""
        return self.dealer if name == "dealer" else self._party(name).address

    def roles_of(self, party: str) -> tuple[str, ...]:
        """The roles the consortium gives `party`."""
        return self._party(party).roles

    def where(self, *keys: str | int) -> str:
        """'FILE:LINE' of a key path, e.g. where("reveal", 0, "to"); 'FILE' if no line is known."""
        return _where(self.path, self._lines, keys)


@dataclass(frozen=True)
class Policy:
    """A validated policy. `data` maps protocol input names to CSV files; relative paths in
    the file are taken from the policy's folder."""

    path: Path
    party: str
    data: dict[str, Path]
    accept_protocols: tuple[str, ...]
    accept_reveal: tuple[str, ...]
    identifiers: dict[str, str] = field(default_factory=dict)  # input -> identifier column
    key: Path | None = None
    cert: Path | None = None
    max_rows: int = DEFAULT_MAX_ROWS
    # output -> the largest epsilon this organization accepts for it (it must be released
    # with differential privacy then)
    max_epsilon: dict[str, float] = field(default_factory=dict)
    _lines: Mapping[KeyPath, int] = field(default_factory=dict, repr=False, compare=False)

    def where(self, *keys: str | int) -> str:
        """'FILE:LINE' of a key path, e.g. where("data", "train"); 'FILE' if no line is known."""
        return _where(self.path, self._lines, keys)


# ---- reading ---------------------------------------------------------------------------------

_MISSING: Any = object()


class _Source:
    """One parsed file: its values, the lines of its keys, and helpers that fail with a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            self.doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            at = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
            if at is None:
                raise ConfigError(f"{path}: not valid TOML: {message}") from None
            raise ConfigError(f"{path}:{at.group(1)}: not valid TOML: "
                              f"{message[:at.start()]}") from None
        self.lines = key_lines(text)

    def error(self, keys: KeyPath, message: str) -> ConfigError:
        return ConfigError(f"{_where(self.path, self.lines, keys)}: {message}")

    def get(self, table: dict[str, Any], keys: KeyPath, ctx: str,
            kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        """table[keys[-1]] checked to be of `kind` (bool is not an int); `default` if absent."""
        key = keys[-1]
        if key not in table:
            if default is _MISSING:
                raise self.error(keys[:-1], f"{ctx}: '{key}' is missing")
            return default
        value = table[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
            raise self.error(keys, f"{ctx}: '{key}' must be {_kind_name(kind)}, got {value!r}")
        return value

    def names(self, table: dict[str, Any], keys: KeyPath, ctx: str, what: str,
              default: Any = _MISSING, empty: bool = False) -> list[str] | Any:
        """A list of distinct, non-empty, unpadded strings (and at least one unless `empty`);
        an error names the bad element's line."""
        values = self.get(table, keys, ctx, list, default)
        if values is default:
            return default
        if not values and not empty:
            raise self.error(keys, f"{ctx}: '{keys[-1]}' must list at least one {what}")
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v.strip() or v != v.strip():
                raise self.error((*keys, i), f"{ctx}: '{keys[-1]}' has {v!r}; each {what} "
                                             "must be a non-empty string without outer spaces")
            if v in values[:i]:
                raise self.error((*keys, i), f"{ctx}: {what} {v!r} is listed twice")
        return values

    def only(self, table: dict[str, Any], keys: KeyPath, ctx: str, allowed: tuple[str, ...],
             hints: Mapping[str, str] | None = None) -> None:
        """Refuse keys other than `allowed`; `hints` give a replacement for retired keys."""
        for key in table:
            if key in allowed:
                continue
            hint = (hints or {}).get(key)
            if hint:
                raise self.error((*keys, key), f"{ctx}: '{key}' is no longer supported: {hint}")
            raise self.error((*keys, key), f"{ctx}: unknown key '{key}' (expected one of: "
                                           f"{', '.join(allowed)})")


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    words = {str: "a string", int: "an integer", float: "a number", list: "a list",
             dict: "a table", bool: "true or false"}
    return " or ".join(words.get(k, k.__name__) for k in _kinds(kind))


def _address(src: _Source, value: str, keys: KeyPath, ctx: str) -> str:
    """host:port with a port in 1..65535, or 0 on a loopback host (assigned at local launch)."""
    host, _, port = value.rpartition(":")
    if not host or any(c.isspace() for c in host) or not port.isdigit() or int(port) > 65535:
        raise src.error(keys, f"{ctx}: address {value!r} is not host:port")
    if int(port) == 0 and not is_loopback(host):
        raise src.error(keys, f"{ctx}: address {value!r}: port 0 (assigned at launch) is only "
                              "allowed on a loopback host")
    return value


# ---- the consortium file ---------------------------------------------------------------------

_TOP = ("consortium", "parties", "dealer", "protocol", "tables", "reveal")
_RETIRED_TOP = {"schema": "declare each table as [tables.NAME] (e.g. [tables.patients]: "
                          "features, label, types, ranges) and name the protocol's inputs "
                          "in [protocol.inputs] (e.g. train = \"patients\")"}


def load_consortium(path: str | Path) -> Consortium:
    """Read and validate a consortium file; raise ConfigError naming file, line and problem."""
    path = Path(path)
    src = _Source(path)
    doc = src.doc
    src.only(doc, (), "consortium file", _TOP, _RETIRED_TOP)
    head = src.get(doc, ("consortium",), "consortium file", dict, {})
    src.only(head, ("consortium",), "[consortium]", ("name", "ca", "randomness",
                                                    "min_group_size"))
    name = src.get(head, ("consortium", "name"), "[consortium]", str, path.stem)
    if not NAME.match(name):
        raise src.error(("consortium", "name"), f"[consortium]: name {name!r} must be lowercase "
                                                "letters, digits, '-' or '_'")
    ca = src.get(head, ("consortium", "ca"), "[consortium]", str, "")
    randomness = src.get(head, ("consortium", "randomness"), "[consortium]", str, "dealer")
    if randomness not in RANDOMNESS:
        raise src.error(("consortium", "randomness"), f"[consortium]: randomness {randomness!r} "
                                                      f"must be one of {', '.join(RANDOMNESS)}")
    min_group = src.get(head, ("consortium", "min_group_size"), "[consortium]", int, 1)
    if min_group < 1:
        raise src.error(("consortium", "min_group_size"), f"[consortium]: min_group_size must "
                                                          f"be an integer >= 1, got {min_group}")
    parties = _parties(src)
    dealer_raw = src.get(doc, ("dealer",), "consortium file", dict)
    src.only(dealer_raw, ("dealer",), "[dealer]", ("address",))
    dealer = _address(src, src.get(dealer_raw, ("dealer", "address"), "[dealer]", str),
                      ("dealer", "address"), "[dealer]")
    _distinct_addresses(src, parties, dealer)
    tables = _tables(src, parties)
    proto = src.get(doc, ("protocol",), "consortium file", dict)
    src.only(proto, ("protocol",), "[protocol]",
             ("name", "version", "file", "parameters", "inputs"))
    protocol = src.get(proto, ("protocol", "name"), "[protocol]", str)
    if not protocol.strip():
        raise src.error(("protocol", "name"), "[protocol]: 'name' is empty")
    version = src.get(proto, ("protocol", "version"), "[protocol]", str, None)
    params = src.get(proto, ("protocol", "parameters"), "[protocol]", dict, {})
    inputs = _inputs(src, proto, tables)
    return Consortium(path=path, name=name, parties=tuple(parties), dealer=dealer, ca=ca,
                      protocol=protocol, protocol_version=version,
                      protocol_file=_protocol_file(src, proto), parameters=dict(params),
                      inputs=inputs, tables=tables, reveal=_reveals(src, parties),
                      randomness=randomness, min_group_size=min_group, _lines=src.lines)


def _parties(src: _Source) -> list[Party]:
    raw = src.get(src.doc, ("parties",), "consortium file", list)
    if not raw or not all(isinstance(e, dict) for e in raw):
        raise src.error(("parties",), "list the parties as [[parties]] tables")
    parties: list[Party] = []
    for i, entry in enumerate(raw):
        keys: KeyPath = ("parties", i)
        ctx = f"[[parties]] #{i + 1}"
        src.only(entry, keys, ctx, ("name", "address", "roles"))
        name = src.get(entry, (*keys, "name"), ctx, str)
        if not NAME.match(name) or name == "dealer":
            raise src.error((*keys, "name"), f"{ctx}: party name {name!r} must be lowercase "
                                             "letters, digits, '-' or '_' (and not 'dealer')")
        if name in [p.name for p in parties]:
            raise src.error((*keys, "name"), f"{ctx}: party {name!r} is listed twice")
        address = _address(src, src.get(entry, (*keys, "address"), ctx, str),
                           (*keys, "address"), ctx)
        roles = src.names(entry, (*keys, "roles"), ctx, "role", list(DEFAULT_ROLES))
        parties.append(Party(name, address, tuple(roles)))
    if not MIN_PARTIES <= len(parties) <= MAX_PARTIES:
        raise src.error(("parties",), f"{len(parties)} parties: smpc runs {MIN_PARTIES} to "
                                      f"{MAX_PARTIES}")
    return parties


def _distinct_addresses(src: _Source, parties: list[Party], dealer: str) -> None:
    """No two nodes share an address (port 0, assigned at launch, never clashes)."""
    seen: dict[str, str] = {}
    for keys, name, address in [*((("parties", i, "address"), p.name, p.address)
                                  for i, p in enumerate(parties)),
                                (("dealer", "address"), "the dealer", dealer)]:
        if address.endswith(":0"):
            continue
        if address in seen:
            raise src.error(keys, f"{name}: address {address!r} is already {seen[address]}'s")
        seen[address] = name


def _protocol_file(src: _Source, proto: dict[str, Any]) -> Path | None:
    keys = ("protocol", "file")
    file = src.get(proto, keys, "[protocol]", str, None)
    if file is None:
        return None
    path = Path(os.path.abspath(src.path.parent / file))
    if not file.strip() or not path.is_file():
        raise src.error(keys, f"[protocol]: protocol file {file!r} not found (looked for {path})")
    return path


def _inputs(src: _Source, proto: dict[str, Any], tables: dict[str, TableSchema]
            ) -> dict[str, str]:
    raw = src.get(proto, ("protocol", "inputs"), "[protocol]", dict, {})
    for name, table in raw.items():
        keys = ("protocol", "inputs", name)
        if not isinstance(table, str) or table not in tables:
            known = ", ".join(tables) or "none declared"
            raise src.error(keys, f"[protocol.inputs]: '{name}' = {table!r} is not a declared "
                                  f"table (tables: {known})")
    return dict(raw)


def _tables(src: _Source, parties: list[Party]) -> dict[str, TableSchema]:
    raw = src.get(src.doc, ("tables",), "consortium file", dict, {})
    out = {}
    for name, body in raw.items():
        if not NAME.match(name):
            raise src.error(("tables", name), f"[tables.{name}]: a table name must be lowercase "
                                              "letters, digits, '-' or '_'")
        if not isinstance(body, dict):
            raise src.error(("tables", name), f"'tables.{name}' must be a [tables.{name}] table")
        out[name] = _table_schema(src, name, body, [p.name for p in parties])
    return out


def _table_schema(src: _Source, name: str, raw: dict[str, Any],
                  parties: list[str]) -> TableSchema:
    keys: KeyPath = ("tables", name)
    ctx = f"[tables.{name}]"
    src.only(raw, keys, ctx, ("features", "label", "classes", "types", "categories", "ranges",
                              "columns", "label_holder", "identifier"))
    label = src.get(raw, (*keys, "label"), ctx, str, None)
    if label is not None and (not label.strip() or label != label.strip()):
        raise src.error((*keys, "label"), f"{ctx}: label {label!r} is not a column name")
    holders: dict[str, tuple[str, ...]] = {}
    label_holder = identifier = None
    if "columns" in raw:
        holders, label_holder, identifier = _vertical(src, raw, keys, ctx, label, parties)
        features = [c for cols in holders.values() for c in cols]
    else:
        for key in ("label_holder", "identifier"):
            if key in raw:
                raise src.error((*keys, key), f"{ctx}: '{key}' is for a vertical table: "
                                              f"declare which party holds which columns in "
                                              f"[tables.{name}.columns]")
        features = src.names(raw, (*keys, "features"), ctx, "feature column")
    if label in features:
        raise src.error((*keys, "label"), f"{ctx}: label {label!r} is also a feature")
    classes = _classes(src, raw, keys, ctx, label)
    types = _types(src, raw, keys, ctx, features, label)
    categories = _categories(src, raw, keys, ctx, types)
    ranges = _ranges(src, raw, keys, ctx, types)
    return TableSchema(name=name, features=tuple(features), label=label, types=types,
                       ranges=ranges, categories=categories, classes=classes, holders=holders,
                       label_holder=label_holder, identifier=identifier)


def _vertical(src: _Source, raw: dict[str, Any], keys: KeyPath, ctx: str, label: str | None,
              parties: list[str]) -> tuple[dict[str, tuple[str, ...]], str | None, str | None]:
    """A vertical table's [tables.NAME.columns] (party -> its features, pooled in rank
    order), its label holder and its default identifier column."""
    ck = (*keys, "columns")
    where = f"{ctx[:-1]}.columns]"
    if "features" in raw:
        raise src.error((*keys, "features"), f"{ctx}: give either 'features' (every party "
                                             f"holds them) or {where} (which party holds "
                                             "which), not both")
    declared = src.get(raw, ck, ctx, dict)
    owner: dict[str, str] = {}
    for party in declared:
        if party not in parties:
            raise src.error((*ck, party), f"{where}: {party!r} is not a party (parties: "
                                          f"{', '.join(parties)})")
        for i, col in enumerate(src.names(declared, (*ck, party), where,
                                          f"column of {party!r}", empty=True)):
            if col in owner:
                raise src.error((*ck, party, i), f"{where}: column {col!r} is already "
                                                 f"{owner[col]!r}'s; a column has one holder")
            owner[col] = party
    label_holder = src.get(raw, (*keys, "label_holder"), ctx, str, None)
    if label is not None and label_holder is None:
        raise src.error((*keys, "label"), f"{ctx}: a vertical table's label needs its holder: "
                                          "add label_holder = \"PARTY\"")
    if label_holder is not None:
        if label is None:
            raise src.error((*keys, "label_holder"), f"{ctx}: 'label_holder' is given but the "
                                                     "table has no 'label'")
        if label_holder not in parties:
            raise src.error((*keys, "label_holder"), f"{ctx}: label holder {label_holder!r} "
                                                     f"is not a party (parties: "
                                                     f"{', '.join(parties)})")
    if label in owner:
        raise src.error((*keys, "label"), f"{ctx}: label {label!r} is also a column of "
                                          f"{owner[label]!r}")
    for party in parties:
        if party not in declared and party != label_holder:
            raise src.error(ck, f"{where}: party {party!r} holds no column and not the label; "
                                "every party of a vertical table holds some")
    identifier = src.get(raw, (*keys, "identifier"), ctx, str, None)
    if identifier is not None and (not identifier.strip() or identifier in owner
                                   or identifier == label):
        raise src.error((*keys, "identifier"), f"{ctx}: identifier {identifier!r} must be a "
                                               "column name that is neither a feature nor the "
                                               "label (it is never shared)")
    holders = {p: tuple(declared.get(p, ())) for p in parties
               if p in declared or p == label_holder}
    return holders, label_holder, identifier


def _classes(src: _Source, raw: dict[str, Any], keys: KeyPath, ctx: str,
             label: str | None) -> tuple[str | int, ...]:
    ck = (*keys, "classes")
    values = src.get(raw, ck, ctx, list, None)
    if values is None:
        return DEFAULT_CLASSES
    if label is None:
        raise src.error(ck, f"{ctx}: 'classes' is given but the table has no 'label'")
    kinds = set()
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, str | int) or (isinstance(v, str)
                                                                   and v != v.strip()):
            raise src.error((*ck, i), f"{ctx}: class {v!r} must be an integer or a string "
                                      "without outer spaces")
        if isinstance(v, str) and not v:
            raise src.error((*ck, i), f"{ctx}: a class name is empty")
        if v in values[:i]:
            raise src.error((*ck, i), f"{ctx}: class {v!r} is listed twice")
        kinds.add(type(v))
    if len(kinds) > 1:
        raise src.error(ck, f"{ctx}: 'classes' must be all integers or all strings")
    if len(values) < 2:
        raise src.error(ck, f"{ctx}: 'classes' must list at least 2 classes")
    return tuple(values)


def _types(src: _Source, raw: dict[str, Any], keys: KeyPath, ctx: str, features: list[str],
           label: str | None) -> dict[str, str]:
    tk = (*keys, "types")
    declared = src.get(raw, tk, ctx, dict, {})
    for col, kind in declared.items():
        if col == label:
            raise src.error((*tk, col), f"{ctx[:-1]}.types]: {col!r} is the label; its values "
                                        "are given by 'classes'")
        if col not in features:
            raise src.error((*tk, col), f"{ctx[:-1]}.types]: {col!r} is not a feature")
        if kind not in TYPES:
            raise src.error((*tk, col), f"{ctx[:-1]}.types]: {col!r} has type {kind!r}; use "
                                        f"one of {', '.join(TYPES)}")
    return {col: declared.get(col, "float") for col in features}


def _categories(src: _Source, raw: dict[str, Any], keys: KeyPath, ctx: str,
                types: dict[str, str]) -> dict[str, tuple[str, ...]]:
    ck = (*keys, "categories")
    declared = src.get(raw, ck, ctx, dict, {})
    where = f"{ctx[:-1]}.categories]"
    for col in declared:
        if types.get(col) != "categorical":
            what = "not a feature" if col not in types else f"of type {types[col]!r}"
            raise src.error((*ck, col), f"{where}: {col!r} is {what}; categories are for "
                                        "categorical features only")
    out = {}
    for col, kind in types.items():
        if kind == "categorical":
            if col not in declared:
                raise src.error((*keys, "types", col), f"{ctx}: categorical column {col!r} "
                                                       f"needs its values in {where}")
            out[col] = tuple(src.names(declared, (*ck, col), where, f"category of {col!r}"))
    return out


def _ranges(src: _Source, raw: dict[str, Any], keys: KeyPath, ctx: str,
            types: dict[str, str]) -> dict[str, tuple[float, float]]:
    rk = (*keys, "ranges")
    declared = src.get(raw, rk, ctx, dict, {})
    where = f"{ctx[:-1]}.ranges]"
    out = {}
    for col, bounds in declared.items():
        if col not in types:
            raise src.error((*rk, col), f"{where}: {col!r} is not a feature")
        if types[col] == "categorical":
            raise src.error((*rk, col), f"{where}: {col!r} is categorical; it has no range")
        ok = (isinstance(bounds, list) and len(bounds) == 2
              and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                      for v in bounds)
              and bounds[0] < bounds[1])
        if not ok:
            raise src.error((*rk, col), f"{where}: {col!r} must be [low, high] with finite "
                                        f"numbers and low < high, got {bounds!r}")
        out[col] = (float(bounds[0]), float(bounds[1]))
    return out


def _reveals(src: _Source, parties: list[Party]) -> tuple[Reveal, ...]:
    raw = src.get(src.doc, ("reveal",), "consortium file", list, [])
    if not all(isinstance(e, dict) for e in raw):
        raise src.error(("reveal",), "list the outputs as [[reveal]] tables")
    names = [p.name for p in parties]
    out: list[Reveal] = []
    for i, entry in enumerate(raw):
        keys: KeyPath = ("reveal", i)
        ctx = f"[[reveal]] #{i + 1}"
        src.only(entry, keys, ctx, ("name", "to", "epsilon", "delta"))
        name = src.get(entry, (*keys, "name"), ctx, str)
        if not name.strip():
            raise src.error((*keys, "name"), f"{ctx}: 'name' is empty")
        if name in [r.name for r in out]:
            raise src.error((*keys, "name"), f"{ctx}: output {name!r} is declared twice")
        to = src.names(entry, (*keys, "to"), f"{ctx} '{name}'", "recipient")
        for j, party in enumerate(to):
            if party not in names:
                raise src.error((*keys, "to", j), f"{ctx} '{name}': recipient {party!r} is not "
                                                  f"a party (parties: {', '.join(names)})")
        out.append(Reveal(name, tuple(to), *_budget(src, entry, keys, f"{ctx} '{name}'")))
    return tuple(out)


def _budget(src: _Source, entry: dict[str, Any], keys: KeyPath, ctx: str
            ) -> tuple[float | None, float | None]:
    """A [[reveal]] entry's (epsilon, delta): both or neither; epsilon > 0, 0 <= delta < 1."""
    epsilon = src.get(entry, (*keys, "epsilon"), ctx, (int, float), None)
    delta = src.get(entry, (*keys, "delta"), ctx, (int, float), None)
    if epsilon is None and delta is None:
        return None, None
    if epsilon is None or delta is None:
        given, missing = ("epsilon", "delta") if delta is None else ("delta", "epsilon")
        raise src.error((*keys, given), f"{ctx}: a privacy budget needs both epsilon and delta; "
                                        f"'{given}' is given, '{missing}' is missing")
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise src.error((*keys, "epsilon"), f"{ctx}: epsilon must be a number > 0, got "
                                            f"{epsilon!r}")
    if not math.isfinite(delta) or not 0 <= delta < 1:
        raise src.error((*keys, "delta"), f"{ctx}: delta must be a number >= 0 and < 1, got "
                                          f"{delta!r}")
    return float(epsilon), float(delta)


# ---- the policy file -------------------------------------------------------------------------

_POLICY = ("party", "max_rows", "data", "identifiers", "accept", "key", "cert")
_RETIRED_POLICY = {"test_data": "name each protocol input's file in a [data] table, "
                                "e.g. [data] train = \"train.csv\", test = \"test.csv\""}


def load_policy(path: str | Path) -> Policy:
    """Read and validate one organization's local policy; paths are relative to the file."""
    path = Path(path)
    src = _Source(path)
    doc = src.doc
    src.only(doc, (), "policy", _POLICY, _RETIRED_POLICY)
    party = src.get(doc, ("party",), "policy", str)
    if not NAME.match(party):
        raise src.error(("party",), f"policy: party name {party!r} must be lowercase letters, "
                                    "digits, '-' or '_'")
    max_rows = src.get(doc, ("max_rows",), "policy", int, DEFAULT_MAX_ROWS)
    if max_rows < 1:
        raise src.error(("max_rows",), f"policy: 'max_rows' must be at least 1, got {max_rows}")
    if isinstance(doc.get("data"), str):
        raise src.error(("data",), "policy: 'data' is now a table of protocol input -> CSV "
                                   f"file: write [data] then train = {doc['data']!r}")
    data_raw = src.get(doc, ("data",), "policy", dict, {})
    accept = src.get(doc, ("accept",), "policy", dict, {})
    src.only(accept, ("accept",), "[accept]", ("protocols", "reveal", "max_epsilon"))
    protocols = src.names(accept, ("accept", "protocols"), "[accept]", "protocol name", [],
                          empty=True)
    reveal = src.names(accept, ("accept", "reveal"), "[accept]", "output name", [], empty=True)
    max_epsilon = _max_epsilon(src, accept)

    def resolve(keys: KeyPath, ctx: str) -> Path:
        value = src.get(doc if len(keys) == 1 else data_raw, keys, ctx, str)
        if not value.strip():
            raise src.error(keys, f"{ctx}: '{keys[-1]}' is an empty path")
        p = Path(value)
        return p if p.is_absolute() else Path(os.path.normpath(path.parent / p))

    data = {name: resolve(("data", name), "[data]") for name in data_raw}
    id_raw = src.get(doc, ("identifiers",), "policy", dict, {})
    identifiers = {name: src.get(id_raw, ("identifiers", name), "[identifiers]", str)
                   for name in id_raw}
    for name, column in identifiers.items():
        if not column.strip() or column != column.strip():
            raise src.error(("identifiers", name), f"[identifiers]: {name!r} = {column!r} is "
                                                   "not a column name")
    optional = {k: resolve((k,), "policy") for k in ("key", "cert") if k in doc}
    return Policy(path=path, party=party, data=data, accept_protocols=tuple(protocols),
                  accept_reveal=tuple(reveal), identifiers=identifiers, max_rows=max_rows,
                  max_epsilon=max_epsilon, _lines=src.lines, **optional)


def _max_epsilon(src: _Source, accept: dict[str, Any]) -> dict[str, float]:
    """[accept] max_epsilon = {output = number > 0, ...}."""
    keys: KeyPath = ("accept", "max_epsilon")
    raw = src.get(accept, keys, "[accept]", dict, {})
    out = {}
    for name, value in raw.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value <= 0:
            raise src.error((*keys, name), f"[accept]: max_epsilon for {name!r} must be a "
                                           f"number > 0, got {value!r}")
        out[name] = float(value)
    return out
