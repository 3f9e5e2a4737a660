"""The gRPC transport, as the layers above use it (re-exports).

    from parties.wire.transport import Mesh, LinkOptions, TlsIdentity, PeerError

The pieces, one job each (gRPC is imported only under parties/wire):

    errors.py   PeerError (names the peer), PeerClosed, PeerTimeout, SettingError
    options.py  LinkOptions: deadlines, limits, gRPC settings, and the formula for
                how long until a lost peer is named
    codec.py    frames, envelopes and the safe object encoding (no pickle)
    link.py     one peer: connection, unacknowledged frames, inbox, reads
    waiting.py  waiting notices: who waits on whom, so timeouts name the silent party
    mesh.py     Mesh: every link of this node; dialing, resuming, abort and close
    service.py  the listening side: the Link service and the handshake guard
    tls.py      TlsIdentity, and the diagnosis of a failed TLS dial
"""

from __future__ import annotations

from parties.wire.errors import PeerClosed, PeerError, PeerTimeout, SettingError
from parties.wire.mesh import WIRE_VERSION, Mesh
from parties.wire.options import LinkOptions
from parties.wire.tls import TlsIdentity

__all__ = ["WIRE_VERSION", "LinkOptions", "Mesh", "PeerClosed", "PeerError", "PeerTimeout",
           "SettingError", "TlsIdentity"]
