"""The manifest handshake, run over the mesh before any data is read.

Each node sends every peer its manifest and its policy's verdict (an objection
or None), then reads theirs. Every node reaches the same decision: if anyone
objects, or any two manifests differ, every node stops with a message naming
the party and the field.
"""

from __future__ import annotations

from typing import Any

from parties.consortium.manifest import ManifestError, compare, digest
from parties.wire.transport import Mesh


def agree(mesh: Mesh, manifest: dict[str, Any], objection: str | None) -> str:
    """Exchange manifests with every peer; return the agreed digest or raise ManifestError."""
    mine = {"manifest": manifest, "objection": objection}
    peers = list(mesh.links)
    for peer in peers:
        mesh.send(peer, mine)
    theirs = {peer: mesh.recv(peer) for peer in peers}
    if objection is not None:
        raise ManifestError(f"party '{mesh.me}' refuses: {objection}")
    for peer in peers:
        got = theirs[peer]
        if not isinstance(got, dict) or set(got) != {"manifest", "objection"}:
            raise ManifestError(f"party '{peer}' sent a malformed manifest")
        if got["objection"] is not None:
            raise ManifestError(f"party '{peer}' refuses: {got['objection']}")
    for peer in peers:
        compare(manifest, theirs[peer]["manifest"], peer)
    return digest(manifest)
