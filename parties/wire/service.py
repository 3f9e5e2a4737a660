"""The listening side: the gRPC `Link` service, and the guard against idle strangers.

The servicer is thin: it takes the first envelope (the Hello), lets the mesh
accept or refuse it, then streams the link's outgoing queue. What arrives
before a Hello is bounded:

- gRPC closes a connection whose TLS and HTTP/2 handshake has not finished
  within `handshake_timeout` (plaintext too: the client's HTTP/2 settings must
  arrive by then), lets go of one that carries no call for twice that, and
  holds at most `LinkOptions.max_connections` connections (two per peer plus
  `max_unauthenticated`); others are closed at once (options.py
  `server_options`). gRPC has no per-source limit; the cap is per node.
- A stream that has sent no Hello within `handshake_timeout` is cancelled, and
  at most `max_unauthenticated` such streams wait at once; more are refused
  with RESOURCE_EXHAUSTED (`HandshakeGate`, checked by the mesh's watchdog).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from parties.wire import codec
from parties.wire import wire_pb2_grpc as pb_grpc
from parties.wire.link import CLOSE

if TYPE_CHECKING:
    from parties.wire.mesh import Mesh

SERVICE = "smpc.wire.Link"  # the service of proto/parties/wire/wire.proto


def connect_method(channel: grpc.Channel) -> Any:
    """Link.Connect with our envelope codec: frames skip protobuf objects (codec.py)."""
    return channel.stream_stream(f"/{SERVICE}/Connect",
                                 request_serializer=codec.encode_envelope,
                                 response_deserializer=codec.read_envelope)


class Refused(Exception):
    """A handshake refused, with the gRPC status code to answer (or that was answered)."""

    def __init__(self, code: grpc.StatusCode | None, why: str, ours: bool = False) -> None:
        super().__init__(why)
        self.code = code
        self.why = why
        self.ours = ours  # this node refused the peer (not the other way round)


class HandshakeGate:
    """Streams still waiting for their Hello: at most `limit`, each cancelled after `timeout`."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[float, Callable[[], Any]]] = {}
        self._next = 0
        self.expired = 0
        self.refused = 0

    def enter(self, cancel: Callable[[], Any]) -> int | None:
        """Admit one stream (None when `limit` are already waiting); `cancel` ends it."""
        with self._lock:
            if len(self._pending) >= self.limit:
                self.refused += 1
                return None
            self._next += 1
            self._pending[self._next] = (time.monotonic() + self.timeout, cancel)
            return self._next

    def leave(self, key: int) -> None:
        """The stream sent its Hello (or ended)."""
        with self._lock:
            self._pending.pop(key, None)

    def expire(self, now: float) -> None:
        """Cancel the streams whose Hello is overdue."""
        with self._lock:
            due = [k for k, (deadline, _) in self._pending.items() if now > deadline]
            cancels = [self._pending.pop(k)[1] for k in due]
            self.expired += len(cancels)
        for cancel in cancels:
            cancel()

    @property
    def waiting(self) -> int:
        return len(self._pending)


class Servicer(pb_grpc.LinkServicer):
    """Thin: handshake through the mesh, then stream the link's outgoing queue."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    def Connect(self, request_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        gate = self.mesh.gate
        key = gate.enter(context.cancel)
        if key is None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          "too many connections without a handshake")
            return
        try:
            first = next(request_iterator)
        except (StopIteration, grpc.RpcError):
            return
        finally:
            gate.leave(key)
        try:
            link, conn = self.mesh.accept(first, request_iterator, context.cancel,
                                          context.auth_context())
        except Refused as exc:
            context.abort(exc.code, exc.why)
            return

        def ended() -> None:
            conn.outgoing.put(CLOSE)
            link.dropped(conn.gen)

        context.add_callback(ended)
        yield from conn.iterate()
        # our side is done; keep the call open until the peer is done too (or we stop)
        if conn is link.conn and context.is_active():
            link.wait_done(self.mesh.options.close_timeout)


def make_server(mesh: Mesh, peers: int) -> grpc.Server:
    """A gRPC server for `mesh` (not yet bound): `peers` links plus the handshake allowance."""
    options = mesh.options
    workers = options.max_connections(peers) + 2
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="link-server"),
        options=options.server_options(peers), maximum_concurrent_rpcs=workers)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Connect": grpc.stream_stream_rpc_method_handler(
            Servicer(mesh).Connect, request_deserializer=codec.read_envelope,
            response_serializer=codec.encode_envelope)}),))
    return server

