"""The manifest: what will be computed and revealed, agreed before any data is read.

Every party builds the manifest from its own copy of the consortium file and
its own copy of the protocol's code, checks it against its local policy, then
exchanges it with every peer. A single differing field (a parameter, the
reveal list, a byte of protocol code) stops every party, naming the field and
the party that differs. Pure functions; the exchange itself is in runtime.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import types
from typing import Any

from parties.consortium.config import Consortium, Policy

MANIFEST_VERSION = 1


class ManifestError(RuntimeError):
    """The parties do not agree on what will be computed, or a policy refuses it."""


def code_hash(module: types.ModuleType) -> str:
    """sha256 of the protocol module's source: a changed line changes the manifest."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        raise ManifestError(
            f"cannot read the source of protocol module {module.__name__}") from None
    return hashlib.sha256(source.encode()).hexdigest()


def build(consortium: Consortium, protocol_module: types.ModuleType) -> dict[str, Any]:
    """The manifest as plain data (safe to send with the object codec)."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "consortium": consortium.name,
        "protocol": {
            "name": consortium.protocol,
            "version": consortium.protocol_version,
            "code_sha256": code_hash(protocol_module),
            "parameters": _plain(consortium.parameters),
        },
        "parties": [[p.name, p.address] for p in consortium.parties],
        "dealer": consortium.dealer,
        "schema": {
            "features": list(consortium.schema.features),
            "label": consortium.schema.label,
            "types": dict(sorted(consortium.schema.types.items())),
            "ranges": {k: list(v) for k, v in sorted(consortium.schema.ranges.items())},
        },
        "reveal": [[r.name, list(r.to)] for r in consortium.reveal],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def digest(manifest: dict[str, Any]) -> str:
    """A short, canonical fingerprint of the manifest (sha256 of sorted JSON)."""
    blob = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def first_difference(mine: Any, theirs: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """(dotted field, my value, their value) of the first difference, or None if equal."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in mine or key not in theirs:
                return sub, mine.get(key, "<absent>"), theirs.get(key, "<absent>")
            diff = first_difference(mine[key], theirs[key], sub)
            if diff:
                return diff
        return None
    if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            diff = first_difference(a, b, f"{path}[{i}]")
            if diff:
                return diff
        return None
    return None if mine == theirs else (path or "<root>", mine, theirs)


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
    return None


def compare(mine: dict[str, Any], theirs: dict[str, Any], peer: str) -> None:
    """Raise ManifestError naming the first field in which `peer`'s manifest differs."""
    diff = first_difference(mine, theirs)
    if diff is not None:
        field, a, b = diff
        raise ManifestError(
            f"manifest differs from party '{peer}' in field '{field}': "
            f"here {_short(a)}, there {_short(b)}"
        )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
