"""What is computed. Each protocol is a module with NAME, VERSION, OUTPUTS and run(session)."""

from __future__ import annotations

import importlib
import types

REGISTRY: dict[str, str] = {
    "logistic-regression": "protocols.horizontal.logistic_regression",
}


def load(name: str) -> types.ModuleType:
    """The protocol module registered under `name`."""
    if name not in REGISTRY:
        raise ValueError(f"unknown protocol {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return importlib.import_module(REGISTRY[name])
