"""TEMPORARY shim until the engine branch lands (start_party, stop_party, use_public_seed)."""

from parties.engine.adapter import (  # noqa: F401
    PROVIDER_DEALER,
    PROVIDER_INSECURE_TFP,
    start_party,
    stop_party,
)


def use_public_seed(seed: bytes) -> None:
    return None
