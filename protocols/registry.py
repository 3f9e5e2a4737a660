"""The one registry of protocols: built-ins and installed packages' entry points, by name.

A package makes its protocol available to every consortium on the machine by
declaring an entry point in the group ``smpc.protocols``::

    [project.entry-points."smpc.protocols"]
    column-statistics = "smpc_stats.protocol:PROTOCOL"

The name on the left is the name consortium files use; the object on the right
is a :class:`protocols.api.Protocol` with the same name. smpc's own protocols
are listed in ``BUILTIN`` and found the same way. A consortium may also name a
protocol file shipped beside it (``[protocol] file = "mine.py"``), loaded by
:func:`load_file`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from protocols.api import Protocol

GROUP = "smpc.protocols"
BUILTIN: dict[str, str] = {
    "logistic-regression": "protocols.horizontal.logistic_regression:PROTOCOL",
    "neural-network": "protocols.neural.network:PROTOCOL",
    "dp-logistic-regression": "protocols.horizontal.dp_logistic_regression:PROTOCOL",
    "federated-averaging": "protocols.federated.averaging:PROTOCOL",
    "dp-neural-network": "protocols.neural.dp_network:PROTOCOL",
    "synthetic-data": "protocols.synthetic.mst:PROTOCOL",
    "inference": "protocols.inference.prediction:PROTOCOL",
    "selftest": "protocols.diagnostics.selftest:PROTOCOL",
}


class RegistryError(LookupError):
    """A protocol that cannot be found or loaded; the message lists what can."""


def available() -> dict[str, str]:
    """Every registered name -> "module:attribute" (built-ins first, then entry points)."""
    found = dict(BUILTIN)
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in found and found[ep.name] != ep.value:
            raise RegistryError(f"protocol name '{ep.name}' is registered twice: {found[ep.name]} "
                                f"and {ep.value} (entry point of {_dist(ep)})")
        found[ep.name] = ep.value
    return found


def _dist(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"package {dist.name}" if dist is not None else "an installed package"


def load(name: str) -> Protocol:
    """The protocol registered under `name`; RegistryError lists the known ones."""
    known = available()
    if name not in known:
        raise RegistryError(f"unknown protocol '{name}' (registered: {', '.join(sorted(known))}; "
                            f"a package registers more with an entry point in '{GROUP}', or "
                            "[protocol] file = \"x.py\" names one beside the consortium file)")
    target = known[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        protocol = getattr(module, attr or "PROTOCOL")
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"protocol '{name}' ({target}) cannot be loaded: {exc}") from None
    return _checked(protocol, name, target, module_name)


def load_file(path: Path, name: str | None) -> Protocol:
    """The protocol object `PROTOCOL` defined in the Python file `path` (named `name`, if given)."""
    if not path.is_file():
        raise RegistryError(f"protocol file {path} not found")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"smpc_protocol_file_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise RegistryError(f"protocol file {path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise RegistryError(f"protocol file {path} failed to import: "
                                f"{type(exc).__name__}: {exc}") from None
    protocol = getattr(module, "PROTOCOL", None)
    if protocol is None:
        raise RegistryError(f"protocol file {path} defines no PROTOCOL (a protocols.api.Protocol)")
    return _checked(protocol, name or getattr(protocol, "name", ""), str(path), module_name,
                    source=path)


def _checked(protocol: object, name: str, target: str, module_name: str,
             source: Path | None = None) -> Protocol:
    if not isinstance(protocol, Protocol):
        raise RegistryError(f"{target} is a {type(protocol).__name__}, not a "
                            "protocols.api.Protocol")
    if protocol.name != name:
        raise RegistryError(f"{target} is protocol '{protocol.name}', not '{name}'")
    extra = (str(source),) if source is not None else ()
    return dataclasses.replace(protocol, module=module_name,
                               extra_sources=protocol.extra_sources + extra)
