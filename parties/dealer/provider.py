"""TEMPORARY shim until the engine branch lands."""

from parties.dealer.server import make_provider  # noqa: F401
