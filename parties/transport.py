"""The gRPC transport: a full mesh of long-lived bidirectional streams.

Every pair of nodes (parties and the dealer) shares one `Link.Connect` call,
opened by the node that comes first in the agreed order. Each side of a link
has an outgoing queue (drained by gRPC) and a reader thread that validates
incoming frames, reassembles chunks and files complete payloads under their
tag. A receive waits for its tag with a deadline and fails fast, naming the
peer, when the link breaks or the peer aborts.

This is the only module in smpc that imports grpc (with the generated stubs).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch

from parties import codec
from parties import wire_pb2 as pb
from parties import wire_pb2_grpc as pb_grpc

log = logging.getLogger("smpc.transport")

WIRE_VERSION = pb.VERSION_CURRENT
_CLOSE = object()


class PeerError(RuntimeError):
    """Something went wrong with one named peer."""

    def __init__(self, peer: str, what: str) -> None:
        super().__init__(f"party '{peer}': {what}")
        self.peer = peer
        self.what = what


class PeerClosed(PeerError):
    """A peer ended its side of the link cleanly while we still wanted a message."""


class PeerTimeout(PeerError):
    """A peer did not connect or did not send within the deadline."""


class SettingError(ValueError):
    """A local setting (address, port) that cannot work."""


@dataclass(frozen=True)
class LinkOptions:
    """Deadlines and limits of every link."""

    connect_timeout: float = 30.0
    recv_timeout: float = 120.0
    close_timeout: float = 10.0
    limits: codec.Limits = field(default_factory=codec.Limits)
    max_pending_payloads: int = 100_000
    keepalive_s: float = 10.0

    def grpc_options(self) -> list[tuple[str, int]]:
        size = 2 * self.limits.chunk_bytes + (1 << 16)
        return [
            ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size),
            ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 1000),
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 500),
            ("grpc.so_reuseport", 0),
        ]


@dataclass(frozen=True)
class TlsIdentity:
    """This node's key and certificate, and the consortium CA that every peer must chain to."""

    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)],
                                           root_certificates=self.ca_pem,
                                           require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem,
                                            private_key=self.key_pem,
                                            certificate_chain=self.cert_pem)


_NOT_TLS_WORDS = ("connection refused", "dns", "resolv", "no route", "unreachable")


class _Link:
    """One peer: outgoing queue, inbox of completed payloads keyed by tag, stats.

    Incoming envelopes are read by the thread that waits for them (no reader
    thread: on this kind of machine every thread hand-off costs ~100 us). A
    watchdog cancels a read that outlives its deadline.
    """

    def __init__(self, peer: str, session_id: str, options: LinkOptions) -> None:
        self.peer = peer
        self.options = options
        self.outgoing: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.assembler = codec.Assembler(peer, session_id, options.limits)
        self.send_lock = threading.Lock()
        self.read_lock = threading.Lock()
        self.inbox: dict[int, Any] = {}
        self.taken_below = 0  # every tag below this was taken
        self.send_seq = 0
        self.recv_seq = 0
        self.error: str | None = None
        self.stream: Iterator[pb.Envelope] | None = None
        self.cancel: Callable[[], Any] | None = None
        self.read_deadline: float | None = None
        self.timed_out = False
        self.eof = threading.Event()  # the peer half-closed its sending side
        self.up = threading.Event()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self._taken_early = set()

    def attach(self, stream: Iterator[pb.Envelope], cancel: Callable[[], Any]) -> None:
        self.stream, self.cancel = stream, cancel
        self.up.set()

    def fail(self, what: str) -> None:
        if self.error is None:
            self.error = what
        self.eof.set()

    def deliver(self, env: pb.Envelope) -> None:
        """File one envelope from the peer under its tag (FrameError if it breaks a rule)."""
        self.bytes_received += env.ByteSize()
        body = env.WhichOneof("body")
        if body == "abort":
            self.fail(f"aborted: {env.abort.reason}")
            return
        if body != "frame":
            raise codec.FrameError(f"unexpected {body or 'empty'} envelope after the handshake")
        done = self.assembler.feed(env.frame)
        if done is None:
            return
        tag, payload = done
        if tag in self.inbox or tag < self.taken_below:
            raise codec.FrameError(f"repeated tag {tag}")
        if len(self.inbox) >= self.options.max_pending_payloads:
            raise codec.FrameError(
                f"more than {self.options.max_pending_payloads} payloads waiting unread"
            )
        self.inbox[tag] = payload
        self.messages_received += 1

    def read_one(self, deadline: float) -> None:
        """Block for the peer's next envelope (bounded by `deadline`) and deliver it."""
        assert self.stream is not None
        self.read_deadline = deadline
        try:
            env = next(self.stream)
        except (StopIteration, grpc.RpcError) as exc:
            if self.timed_out:  # the watchdog cancelled this read
                self.fail("timed out")
                raise _ReadTimeout() from None
            if isinstance(exc, StopIteration):
                self.eof.set()
                return
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            self.fail(f"connection lost ({code.name if code else 'error'}: {details})")
            return
        finally:
            self.read_deadline = None
        try:
            self.deliver(env)
        except codec.FrameError as exc:
            log.error("party '%s' sent a bad frame: %s", self.peer, exc)
            self.fail(f"sent a bad frame: {exc}")
            self.outgoing.put(_CLOSE)
            if self.cancel is not None:
                self.cancel()

    def outgoing_iter(self) -> Iterator[pb.Envelope]:
        while True:
            item = self.outgoing.get()
            if item is _CLOSE:
                return
            yield item

    def take(self, tag: int, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self.read_lock:
            while tag not in self.inbox:
                if self.error is not None:
                    raise PeerError(self.peer, self.error)
                if self.eof.is_set():
                    raise PeerClosed(self.peer,
                                     f"closed the connection (waiting for message {tag})")
                try:
                    self.read_one(deadline)
                except _ReadTimeout:
                    raise PeerTimeout(
                        self.peer, f"sent nothing for {timeout:g} s (waiting for message {tag})"
                    ) from None
            if tag == self.taken_below:
                self.taken_below += 1
                while self.taken_below in self._taken_early:
                    self._taken_early.discard(self.taken_below)
                    self.taken_below += 1
            else:
                self._taken_early.add(tag)
            return self.inbox.pop(tag)

    def drain(self, deadline: float) -> None:
        """Read (and drop) until the peer half-closes, the link fails, or `deadline`."""
        with self.read_lock:
            while self.stream is not None and not self.eof.is_set() and self.error is None:
                try:
                    self.read_one(deadline)
                except _ReadTimeout:
                    return


class _ReadTimeout(Exception):
    pass


class Mesh:
    """This node's links to its peers, over one gRPC stream per pair.

    `order` is the agreed order of all node names; of each pair, the node that
    comes first dials the other. Tags are per-pair sequence numbers unless the
    caller passes explicit ones.
    """

    def __init__(
        self,
        me: str,
        peers: list[str],
        order: list[str],
        session_id: str,
        options: LinkOptions | None = None,
        tls: TlsIdentity | None = None,
    ) -> None:
        unknown = [p for p in [me, *peers] if p not in order]
        if unknown:
            raise SettingError(f"node(s) {unknown} are not in the node order {order}")
        self.me = me
        self.order = order
        self.session_id = session_id
        self.options = options or LinkOptions()
        self.links = {p: _Link(p, session_id, self.options) for p in peers if p != me}
        self._server: grpc.Server | None = None
        self.tls = tls
        self._channels: list[grpc.Channel] = []
        self._world = len(order)
        self._lock = threading.Lock()
        self.rejections: list[str] = []
        self.wire_log: Any = None  # a binary file: every envelope this node sends (auditing)
        self._stopped = threading.Event()
        threading.Thread(target=self._watchdog, daemon=True, name=f"watchdog-{me}").start()
        self.version = WIRE_VERSION

    # ------------------------------------------------------------ set-up
    def _dials(self, peer: str) -> bool:
        return self.order.index(self.me) < self.order.index(peer)

    def bind(self, address: str) -> int:
        """Start listening on `address` (host:port; port 0 picks one). Returns the port."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise SettingError(f"listen address {address!r} is not host:port")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=len(self.links) + 4),
            options=self.options.grpc_options(),
        )
        pb_grpc.add_LinkServicer_to_server(_Servicer(self), server)
        try:
            if self.tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, self.tls.server_credentials())
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise SettingError(f"cannot listen on {address}: the port is in use or the address "
                               "is not one of this host's")
        server.start()
        self._server = server
        return bound

    def connect(self, addresses: dict[str, str]) -> None:
        """Dial the peers this node dials, wait for the others; all within connect_timeout."""
        deadline = time.monotonic() + self.options.connect_timeout
        threads: dict[str, threading.Thread] = {}
        for peer, link in self.links.items():
            if self._dials(peer):
                if peer not in addresses:
                    raise SettingError(f"no address for party '{peer}'")
                t = threading.Thread(
                    target=self._dial, args=(link, addresses[peer], deadline), daemon=True,
                    name=f"dial-{peer}",
                )
                t.start()
                threads[peer] = t
        for peer, link in self.links.items():
            remaining = max(0.0, deadline - time.monotonic())
            if not link.up.wait(remaining) and peer in threads:
                threads[peer].join(3.0)  # a failed TLS dial is still finding out why
            if not link.up.is_set() or link.error is not None:
                if link.error is not None:
                    raise PeerError(peer, link.error)
                where = f" at {addresses[peer]}" if peer in addresses else ""
                verb = "did not answer" if self._dials(peer) else "did not connect"
                raise PeerTimeout(
                    peer, f"{verb}{where} within {self.options.connect_timeout:g} s"
                )

    def _hello(self, peer: str) -> pb.Envelope:
        return pb.Envelope(
            hello=pb.Hello(
                session_id=self.session_id, sender=self.me, receiver=peer,
                version=self.version, world_size=self._world,
            )
        )

    def check_hello(self, hello: pb.Hello, expect: str | None) -> str | None:
        """Why a peer's Hello is refused, or None when it is acceptable.

        `expect` is the peer this node dialed (client side), None on the server side.
        """
        who = f"party '{hello.sender}'"
        if hello.version != self.version:
            return f"{who} speaks wire version {hello.version}, this node speaks {self.version}"
        if hello.session_id != self.session_id:
            return f"{who} is in session {hello.session_id!r}, not {self.session_id!r}"
        if hello.receiver != self.me:
            return f"{who} wanted party '{hello.receiver}' but reached '{self.me}'"
        if expect is not None and hello.sender != expect:
            return f"expected party '{expect}' but {who} answered"
        if hello.sender not in self.links:
            return f"{who} is not a peer of '{self.me}'"
        if expect is None and self._dials(hello.sender):
            return f"{who} dialed, but '{self.me}' dials it"
        return None

    def _dial(self, link: _Link, address: str, deadline: float) -> None:
        opts = self.options.grpc_options()
        if self.tls is None:
            channel = grpc.insecure_channel(address, options=opts)
        else:  # the server's certificate must name the party we expect there
            opts = [*opts, ("grpc.ssl_target_name_override", link.peer)]
            channel = grpc.secure_channel(address, self.tls.channel_credentials(), options=opts)
        with self._lock:
            self._channels.append(channel)
        try:
            grpc.channel_ready_future(channel).result(timeout=max(0.0, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            if self.tls is not None:
                self._diagnose(channel, link, address)
            return  # connect() reports the timeout, naming the peer and address
        link.outgoing.put(self._hello(link.peer))
        responses = pb_grpc.LinkStub(channel).Connect(link.outgoing_iter())
        try:
            first = next(responses)
        except grpc.RpcError as exc:
            details = exc.details() if hasattr(exc, "details") else str(exc)
            link.fail(f"refused the connection: {details}")
            return
        except StopIteration:
            link.fail("closed the connection during the handshake")
            return
        if first.WhichOneof("body") != "hello":
            link.fail("did not answer with a handshake (another protocol?)")
            return
        why = self.check_hello(first.hello, expect=link.peer)
        if why:
            log.error("rejecting %s at %s: %s", link.peer, address, why)
            link.fail(why)
            responses.cancel()
            return
        link.attach(responses, responses.cancel)

    def _diagnose(self, channel: grpc.Channel, link: _Link, address: str) -> None:
        """After a failed connect over TLS: one call that fails fast says whether TLS was why."""
        try:
            call = pb_grpc.LinkStub(channel).Connect(iter([self._hello(link.peer)]),
                                                     wait_for_ready=False, timeout=2.0)
            next(call)
        except grpc.RpcError as exc:
            details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
            if not any(w in details.lower() for w in _NOT_TLS_WORDS):
                # the peer accepted TCP, then TLS failed: its certificate does not chain to
                # the consortium CA or does not name the party, or it refused ours (then
                # all we see is the socket closing)
                link.fail(f"TLS handshake with {address} failed: its certificate does not "
                          f"chain to the consortium CA or does not name '{link.peer}', or it "
                          f"refused ours ({details.rpartition(': ')[2] or details})")
        except StopIteration:
            pass

    def accept(self, first: pb.Envelope, request_iterator: Iterator[pb.Envelope],
               cancel: Callable[[], Any], auth: dict[str, list[bytes]] | None = None) -> _Link:
        """Server side of the handshake; raises _Refused with the reason."""
        if first.WhichOneof("body") != "hello":
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "first message is not a handshake")
        why = self.check_hello(first.hello, expect=None)
        if why is None and self.tls is not None:
            names = [n.decode() for n in (auth or {}).get("x509_subject_alternative_name", [])]
            if first.hello.sender not in names:
                why = (f"a certificate naming {names} claims to be party "
                       f"'{first.hello.sender}'")
        if why is None and self.links[first.hello.sender].up.is_set():
            why = f"party '{first.hello.sender}' is already connected"
        if why is not None:
            log.error("rejected a connection: %s", why)
            self.rejections.append(why)
            raise _Refused(grpc.StatusCode.FAILED_PRECONDITION, why)
        link = self.links[first.hello.sender]
        link.attach(request_iterator, cancel)
        return link

    # ------------------------------------------------------------ messages
    def _link(self, peer: str) -> _Link:
        try:
            link = self.links[peer]
        except KeyError:
            raise SettingError(f"'{peer}' is not a peer of '{self.me}'") from None
        if link.error is not None:
            raise PeerError(peer, link.error)
        return link

    def send(self, peer: str, payload: Any, tag: int | None = None) -> int:
        """Queue a tensor (or, with OBJECT kind, any safe object) for `peer`; return its tag."""
        link = self._link(peer)
        if isinstance(payload, torch.Tensor):
            dtype, shape, data = codec.tensor_bytes(payload)
            kind = pb.TENSOR
        else:
            data, dtype, shape, kind = codec.encode_object(payload), 0, [], pb.OBJECT
        with link.send_lock:
            if tag is None:
                tag = link.send_seq
                link.send_seq += 1
            for env in codec.frames_for(self.session_id, self.me, tag, kind, dtype, shape, data,
                                        self.options.limits.chunk_bytes):
                link.bytes_sent += env.ByteSize()
                if self.wire_log is not None:  # length-prefixed envelopes
                    blob = env.SerializeToString()
                    self.wire_log.write(len(blob).to_bytes(4, "little") + blob)
                link.outgoing.put(env)
            link.messages_sent += 1
        return tag

    def next_recv_tag(self, peer: str) -> int:
        """Reserve the next auto tag for a receive from `peer` (for deferred receives)."""
        link = self._link(peer)
        tag = link.recv_seq
        link.recv_seq += 1
        return tag

    def recv(self, peer: str, tag: int | None = None, timeout: float | None = None) -> Any:
        """Wait for the payload with `tag` (default: the next in sequence) from `peer`."""
        link = self._link(peer)
        if tag is None:
            tag = self.next_recv_tag(peer)
        return link.take(tag, self.options.recv_timeout if timeout is None else timeout)

    def abort(self, reason: str) -> None:
        """Tell every peer this node stops on an error, then close without waiting."""
        env = pb.Envelope(abort=pb.Abort(sender=self.me, reason=reason))
        for link in self.links.values():
            link.outgoing.put(env)
            link.outgoing.put(_CLOSE)
        time.sleep(0.2)  # let gRPC flush the aborts before the process goes
        self._teardown(grace=0.2)

    def close(self) -> None:
        """Half-close every link, wait (bounded) for the peers to do the same, then stop."""
        for link in self.links.values():
            link.outgoing.put(_CLOSE)
        deadline = time.monotonic() + self.options.close_timeout
        for link in self.links.values():
            link.drain(deadline)
        self._teardown(grace=1.0)

    def _watchdog(self, tick: float = 0.05) -> None:
        """Cancel any read that outlives its deadline (the read then raises a timeout)."""
        while not self._stopped.wait(tick):
            now = time.monotonic()
            for link in self.links.values():
                deadline = link.read_deadline
                if deadline is not None and now > deadline and link.cancel is not None:
                    link.timed_out = True
                    link.cancel()

    def _teardown(self, grace: float) -> None:
        self._stopped.set()
        for ch in self._channels:
            ch.close()
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1)
            self._server = None

    # ------------------------------------------------------------ stats
    def stats(self) -> dict[str, int]:
        """Bytes and messages actually sent and received on all links."""
        links = self.links.values()
        return {
            "bytes_sent": sum(lk.bytes_sent for lk in links),
            "bytes_received": sum(lk.bytes_received for lk in links),
            "messages_sent": sum(lk.messages_sent for lk in links),
            "messages_received": sum(lk.messages_received for lk in links),
        }


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


class _Servicer(pb_grpc.LinkServicer):
    """Thin: handshake through the mesh, then stream the link's outgoing queue."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    def Connect(self, request_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        try:
            first = next(request_iterator)
        except (StopIteration, grpc.RpcError):
            return
        try:
            link = self.mesh.accept(first, request_iterator, context.cancel,
                                    context.auth_context())
        except _Refused as exc:
            context.abort(exc.code, exc.why)
            return
        context.add_callback(lambda: link.outgoing.put(_CLOSE))
        yield self.mesh._hello(link.peer)
        yield from link.outgoing_iter()
        # our side is done; keep the call open until the peer is done too
        link.eof.wait(self.mesh.options.close_timeout)
