"""A model shared once and kept: the owner's fixed share, and the complement from a seed.

Serving (parties/node/serving.py) shares a model once, when the model owner
starts. It draws a 256-bit seed s (`secrets`) and, for every parameter and
buffer W of the crypten.nn graph, expands a complement share R from a ChaCha20
stream keyed by s and the tensor's name; its own share is encode(W) - R, kept
in memory for as long as it serves. For each query it hands s to the querying
data owner over their mutually authenticated link, and the data owner's share
of every tensor is R: the two hold an additive sharing of the fixed-point
weights without the owner computing anything again.

R is uniform and independent of W, so a data owner (or several, who all learn
the same R) learns nothing about the weights; the owner's share never leaves
the owner. Each query's products draw fresh Beaver material from the dealer,
so openings never repeat a mask.
"""

from __future__ import annotations

from typing import Any

import torch

from parties.engine.compat import load_crypten
from parties.engine.correlated import SEED_BYTES, keyed_stream, ring

_crypten = load_crypten()


def _tensors(graph: Any) -> list[tuple[Any, str, str, torch.Tensor]]:
    """(module, attribute, full name, value) of every parameter and tensor buffer, in the
    graph's order (the same on every party that builds it from the same class)."""
    out = []
    for prefix, module in graph.named_modules():
        items = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, value in items:
            if torch.is_tensor(value) or hasattr(value, "share"):
                out.append((module, name, f"{prefix}.{name}" if prefix else name, value))
    return out


def complement(graph: Any, seed: bytes) -> dict[str, torch.Tensor]:
    """R for every tensor of `graph`: the querying party's shares."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ValueError(f"a standing-share seed is {SEED_BYTES} bytes")
    return {key: ring(keyed_stream(seed, i, f"standing:{key}"), tuple(value.size()))
            for i, (_, _, key, value) in enumerate(_tensors(graph))}


def owner_shares(graph: Any, seed: bytes) -> dict[str, torch.Tensor]:
    """encode(W) - R for every tensor W of the plaintext `graph`: the owner's shares."""
    encoder = _crypten.encoder.FixedPointEncoder()
    others = complement(graph, seed)
    return {key: encoder.encode(value.detach()) - others[key]
            for _, _, key, value in _tensors(graph)}


def attach(graph: Any, shares: dict[str, torch.Tensor]) -> Any:
    """`graph` with every parameter and buffer an MPCTensor holding this party's share."""
    from crypten.mpc import MPCTensor

    for module, name, key, _ in _tensors(graph):
        secret = MPCTensor.from_shares(shares[key])
        if name in module._parameters:
            module.set_parameter(name, secret)
        else:
            module.set_buffer(name, secret)
    for module in graph.modules():
        module.encrypted = True
    return graph
