"""The gRPC transport: a full mesh of long-lived bidirectional streams.

Every pair of nodes (parties and the dealer) shares one `Link.Connect` call,
opened by the node that comes first in the agreed order. Sending queues wire
bytes for gRPC; receiving reads in the thread that waits (no reader thread),
validates each frame, reassembles chunks and files payloads under their tag. A
receive waits for its tag with a deadline and fails fast, naming the peer, when
the link is lost or the peer aborts.

A dropped connection is not a lost link: frames carry link sequence numbers,
the receiver acknowledges them, and the dialing node reconnects and both sides
resend what the other lacks, within the reconnect window. A node that is done
says Bye; a stream that ends without it was dropped.

This is the only module in smpc that imports grpc (with the generated stubs).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch

from parties.wire import codec
from parties.wire import wire_pb2 as pb
from parties.wire import wire_pb2_grpc as pb_grpc

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
    reconnect_window: float = 20.0  # 0: a dropped connection is fatal at once

    def grpc_options(self) -> list[tuple[str, int]]:
        size = 2 * self.limits.chunk_bytes + (1 << 16)
        return [
            ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size),
            ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 500),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 1000),  # also gRPC's minimum connect timeout
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.so_reuseport", 0),
            ("grpc.experimental.tcp_read_chunk_size", 1 << 20),
            ("grpc.experimental.tcp_min_read_chunk_size", 256 << 10),
            ("grpc.experimental.tcp_max_read_chunk_size", 4 << 20),
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
ACK_EVERY = 32  # frames received without sending anything back before an explicit Ack


@dataclass
class _Conn:
    """One gRPC call carrying a link; a resumed link gets a new one."""

    gen: int
    outgoing: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    stream: Iterator[codec.Incoming] | None = None  # what the peer sends
    cancel: Callable[[], Any] | None = None

    def iterate(self) -> Iterator[bytes | pb.Envelope]:  # what this node sends
        while True:
            item = self.outgoing.get()
            if item is _CLOSE:
                return
            yield item


class _Link:
    """One peer: its current connection, the frames it has not acknowledged, an inbox.

    Incoming envelopes are read by the thread that waits for them (no reader
    thread: on this kind of machine every thread hand-off costs ~100 us). A
    watchdog cancels a read that outlives its deadline. Frames carry link
    sequence numbers; those the peer has not acknowledged are kept, so that when
    the connection drops and is re-established (within the reconnect window)
    each side resends what the other has not received and the protocol above
    never notices.
    """

    def __init__(self, peer: str, session_id: str, options: LinkOptions) -> None:
        self.peer = peer
        self.options = options
        self.conn = _Conn(0)
        self.changed = threading.Condition()  # a new connection, or the link failed
        self.assembler = codec.Assembler(peer, session_id, options.limits)
        self.send_lock = threading.Lock()
        self.read_lock = threading.Lock()
        self.inbox: dict[int, Any] = {}
        self.taken_below = 0  # every tag below this was taken
        self.send_seq = 0  # payload tags
        self.recv_seq = 0
        self.frame_seq = 0  # link sequence number of the last frame queued
        self.unacked: deque[tuple[int, bytes]] = deque()  # (sequence number, wire bytes)
        self.peer_acked = 0
        self.received = 0  # link sequence number of the last frame delivered
        self.acked_to_peer = 0
        self.error: str | None = None
        self.broken_at: float | None = None  # when the current connection was seen to drop
        self.lost: str | None = None  # why it could not be re-established
        self.redialing = False
        self.closing = False
        self.read_deadline: float | None = None
        self.timed_out = False
        self.eof = threading.Event()  # the peer half-closed its sending side
        self.up = threading.Event()
        self.reconnects = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self._taken_early: set[int] = set()

    @property
    def outgoing(self) -> queue.SimpleQueue[Any]:
        return self.conn.outgoing

    def attach(self, conn: _Conn) -> None:
        """Make `conn` (the first connection) the link's."""
        with self.changed:
            self.conn = conn
            self.up.set()
            self.changed.notify_all()

    def resume(self, conn: _Conn, peer_received: int) -> int:
        """Switch to `conn` after a drop: resend what the peer lacks; return how many."""
        with self.send_lock:
            self._trim(peer_received)
            for _, blob in self.unacked:
                conn.outgoing.put(blob)
            resent = len(self.unacked)
            with self.changed:
                old, self.conn = self.conn, conn
                conn.gen = old.gen + 1
                self.broken_at, self.lost = None, None
                self.reconnects += 1
                self.changed.notify_all()
        old.outgoing.put(_CLOSE)
        if old.cancel is not None:
            old.cancel()
        return resent

    def push_frame(self, build: Callable[[int, int], bytes]) -> bytes:
        """Queue one frame: `build(seq, acked)` gives its wire bytes; kept until acknowledged.

        Call with `send_lock` held.
        """
        self.frame_seq += 1
        acked = self.received
        blob = build(self.frame_seq, acked)
        self.acked_to_peer = acked
        self.unacked.append((self.frame_seq, blob))
        self.conn.outgoing.put(blob)
        return blob

    def push(self, env: pb.Envelope) -> None:
        """Queue one protobuf envelope (frames get a sequence number). With `send_lock` held."""
        if env.WhichOneof("body") == "frame":
            def build(seq: int, acked: int) -> bytes:
                env.seq, env.acked = seq, acked
                return env.SerializeToString()

            self.push_frame(build)
            return
        env.acked = self.received
        self.acked_to_peer = env.acked
        self.conn.outgoing.put(env)

    def _trim(self, upto: int) -> None:
        if upto > self.peer_acked:
            self.peer_acked = upto
        while self.unacked and self.unacked[0][0] <= upto:
            self.unacked.popleft()

    def fail(self, what: str) -> None:
        with self.changed:
            if self.error is None:
                self.error = what
            self.eof.set()
            self.changed.notify_all()

    def dropped(self, gen: int) -> None:
        """The connection `gen` broke: start the reconnect window (once)."""
        with self.changed:
            if gen == self.conn.gen and self.broken_at is None:
                self.broken_at = time.monotonic()

    def deliver(self, msg: codec.Incoming) -> None:
        """File one envelope from the peer under its tag (FrameError if it breaks a rule)."""
        self.bytes_received += msg.size
        if msg.acked > self.peer_acked:
            with self.send_lock:
                self._trim(msg.acked)
        body = msg.body
        if body == "ack":
            return
        if body == "bye":
            self.eof.set()  # the peer is done: everything it sent has arrived
            return
        if body == "abort":
            self.fail(f"aborted: {msg.message.abort.reason}")
            return
        if body == "malformed":
            raise codec.FrameError(msg.message)
        if body != "frame":
            raise codec.FrameError(f"unexpected {body or 'empty'} envelope after the handshake")
        if msg.seq <= self.received:
            return  # resent after a reconnect, but it had arrived
        if msg.seq != self.received + 1:
            raise codec.FrameError(f"frame {msg.seq} arrived after frame {self.received}")
        self.received = msg.seq
        if self.received - self.acked_to_peer >= ACK_EVERY:
            with self.send_lock:
                self.push(pb.Envelope(ack=pb.Ack()))
        done = self.assembler.feed(msg.frame)
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
        """Block for the peer's next envelope (bounded by `deadline`) and deliver it.

        A dropped connection is waited out (bounded by the reconnect window and
        `deadline`) while the link is re-established.
        """
        while True:
            conn = self.conn
            assert conn.stream is not None
            self.read_deadline = deadline
            try:
                msg = next(conn.stream)
            except (StopIteration, grpc.RpcError) as exc:
                if self.timed_out:  # the watchdog cancelled this read
                    self.fail("timed out")
                    raise _ReadTimeout() from None
                if conn is not self.conn:
                    continue  # replaced by a resumed connection meanwhile
                # a peer that is done says Bye first (then eof is set and nobody
                # reads on); a stream that just ends was dropped: gRPC ends a dead
                # server-side call's request stream like a clean half-close
                why = _describe(exc) if isinstance(exc, grpc.RpcError) else "the call ended"
                if self.closing or not self.options.reconnect_window:
                    self.fail(f"connection lost ({why})")
                    return
                self.dropped(conn.gen)
                self._await_resume(conn, deadline, why)
                if self.error is not None:
                    return
                continue
            finally:
                self.read_deadline = None
            break
        try:
            self.deliver(msg)
        except codec.FrameError as exc:
            log.error("party '%s' sent a bad frame: %s", self.peer, exc)
            self.fail(f"sent a bad frame: {exc}")
            self.outgoing.put(_CLOSE)
            if self.conn.cancel is not None:
                self.conn.cancel()

    def _await_resume(self, conn: _Conn, deadline: float, why: str) -> None:
        window = self.options.reconnect_window
        verdict = None
        with self.changed:
            while self.conn is conn and self.error is None and verdict is None:
                now = time.monotonic()
                give_up = (self.broken_at or now) + window
                if self.lost is not None:
                    verdict = self.lost
                elif now >= deadline:
                    verdict = (f"connection lost ({why}) and not restored before the "
                               "receive deadline")
                elif now >= give_up:
                    verdict = f"connection lost ({why}) and not restored within {window:g} s"
                else:
                    self.changed.wait(min(deadline, give_up) - now)
        if verdict is not None:
            self.fail(verdict)

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
            while self.conn.stream is not None and not self.eof.is_set() and self.error is None:
                try:
                    self.read_one(deadline)
                except _ReadTimeout:
                    return


def _code_details(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    """gRPC's status code and details of a failed call (some RpcErrors carry neither)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return code, details or ""


def _describe(exc: BaseException) -> str:
    code, details = _code_details(exc)
    return f"{code.name if code else 'error'}: {details or 'no details'}"


def _frames(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


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
        self._dialed: dict[str, tuple[str, grpc.Channel]] = {}  # peer -> (address, channel)
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
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            _SERVICE, {"Connect": grpc.stream_stream_rpc_method_handler(
                _Servicer(self).Connect, request_deserializer=codec.read_envelope,
                response_serializer=codec.encode_envelope)}),))
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

    def _hello(self, peer: str, resume: bool = False) -> pb.Envelope:
        return pb.Envelope(
            hello=pb.Hello(
                session_id=self.session_id, sender=self.me, receiver=peer,
                version=self.version, world_size=self._world, resume=resume,
                received=self.links[peer].received if peer in self.links else 0,
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

    def _channel(self, link: _Link, address: str) -> grpc.Channel:
        opts = self.options.grpc_options()
        if self.tls is None:
            channel = grpc.insecure_channel(address, options=opts)
        else:  # the server's certificate must name the party we expect there
            opts = [*opts, ("grpc.ssl_target_name_override", link.peer)]
            channel = grpc.secure_channel(address, self.tls.channel_credentials(), options=opts)
        with self._lock:
            self._dialed[link.peer] = (address, channel)
        return channel

    def _open(self, link: _Link, channel: grpc.Channel, resume: bool, timeout: float
              ) -> tuple[_Conn, pb.Hello]:
        """One Connect call with its handshake (bounded by `timeout`); raises _Refused."""
        conn = _Conn(link.conn.gen)
        conn.outgoing.put(self._hello(link.peer, resume))
        call = _connect_method(channel)(conn.iterate(), wait_for_ready=not resume)
        conn.stream, conn.cancel = call, call.cancel
        timer = threading.Timer(timeout, call.cancel)
        timer.start()
        try:
            first = next(call)
        except grpc.RpcError as exc:
            raise _Refused(*_code_details(exc)) from None
        except StopIteration:
            raise _Refused(None, "closed the connection during the handshake") from None
        finally:
            timer.cancel()
        if first.body != "hello":
            call.cancel()
            raise _Refused(None, "did not answer with a handshake (another protocol?)")
        hello = first.message.hello
        why = self.check_hello(hello, expect=link.peer)
        if why is None and hello.resume != resume:
            why = "answered a resume with a new session" if resume else "resumed a new link"
        if why:
            log.error("rejecting %s: %s", link.peer, why)
            call.cancel()
            raise _Refused(grpc.StatusCode.FAILED_PRECONDITION, why, ours=True)
        call.add_done_callback(lambda _: self._on_drop(link, conn))
        return conn, hello

    def _dial(self, link: _Link, address: str, deadline: float) -> None:
        channel = self._channel(link, address)
        try:
            grpc.channel_ready_future(channel).result(timeout=max(0.0, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            if self.tls is not None:
                self._diagnose(channel, link, address)
            return  # connect() reports the timeout, naming the peer and address
        try:
            conn, _ = self._open(link, channel, resume=False,
                                 timeout=max(1.0, deadline - time.monotonic()))
        except _Refused as exc:
            link.fail(exc.why if exc.ours else f"refused the connection: {exc.why}")
            return
        link.attach(conn)

    def _on_drop(self, link: _Link, conn: _Conn) -> None:
        """A call this node dialed ended: if the link still needs it, dial again."""
        if (conn is not link.conn or link.closing or link.error is not None or link.timed_out
                or self._stopped.is_set() or not self.options.reconnect_window):
            return
        link.dropped(conn.gen)
        with self._lock:
            if link.redialing:
                return
            link.redialing = True
        threading.Thread(target=self._redial, args=(link, conn), daemon=True,
                         name=f"redial-{link.peer}").start()

    def _redial(self, link: _Link, dropped: _Conn) -> None:
        """Re-establish a dropped link within the reconnect window, then resend."""
        address, channel = self._dialed[link.peer]
        window = self.options.reconnect_window
        give_up = (link.broken_at or time.monotonic()) + window
        refused_since: float | None = None
        why = "no answer"
        try:
            while (time.monotonic() < give_up and not self._stopped.is_set()
                   and link.error is None and not link.closing):
                try:
                    # a short attempt: one that hangs (a black hole) must not use up
                    # the window; the next attempt starts afresh
                    attempt = min(self.options.connect_timeout, max(1.0, window / 4),
                                  max(0.1, give_up - time.monotonic()))
                    conn, hello = self._open(link, channel, resume=True, timeout=attempt)
                except _Refused as exc:
                    why = exc.why
                    if exc.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                        self._lose(link, dropped, f"refused to resume the link: {exc.why}")
                        return
                    if "refused" in exc.why.lower():  # the host answers, the process is gone
                        refused_since = refused_since or time.monotonic()
                        if time.monotonic() - refused_since > min(1.0, window / 3):
                            self._lose(link, dropped, f"is gone: {address} refuses connections")
                            return
                    time.sleep(0.2)
                    continue
                resent = link.resume(conn, hello.received)
                log.warning("link to party '%s' restored after %.1f s (%s resent)",
                            link.peer, time.monotonic() - (give_up - window), _frames(resent))
                return
            self._lose(link, dropped, f"connection lost and not restored within {window:g} s "
                                      f"(last attempt: {why})")
        finally:
            with self._lock:
                link.redialing = False

    def _lose(self, link: _Link, dropped: _Conn, why: str) -> None:
        with link.changed:
            if link.conn is dropped:
                link.lost = why
                link.changed.notify_all()

    def _diagnose(self, channel: grpc.Channel, link: _Link, address: str) -> None:
        """After a failed connect over TLS: one call that fails fast says whether TLS was why."""
        try:
            call = _connect_method(channel)(iter([self._hello(link.peer)]),
                                            wait_for_ready=False, timeout=2.0)
            next(call)
        except grpc.RpcError as exc:
            details = _code_details(exc)[1]
            if not any(w in details.lower() for w in _NOT_TLS_WORDS):
                # the peer accepted TCP, then TLS failed: its certificate does not chain to
                # the consortium CA or does not name the party, or it refused ours (then
                # all we see is the socket closing)
                link.fail(f"TLS handshake with {address} failed: its certificate does not "
                          f"chain to the consortium CA or does not name '{link.peer}', or it "
                          f"refused ours ({details.rpartition(': ')[2] or details})")
        except StopIteration:
            pass

    def accept(self, first: codec.Incoming, request_iterator: Iterator[codec.Incoming],
               cancel: Callable[[], Any], auth: dict[str, list[bytes]] | None = None
               ) -> tuple[_Link, _Conn]:
        """Server side of the handshake; raises _Refused with the reason."""
        if first.body != "hello":
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "first message is not a handshake")
        hello = first.message.hello
        why = self.check_hello(hello, expect=None)
        if why is None and self.tls is not None:
            names = [n.decode() for n in (auth or {}).get("x509_subject_alternative_name", [])]
            if hello.sender not in names:
                why = (f"a certificate naming {names} claims to be party "
                       f"'{hello.sender}'")
        link = self.links.get(hello.sender)
        if why is None and link is not None:
            if hello.resume and not link.up.is_set():
                why = f"party '{link.peer}' resumes a link that never started"
            elif hello.resume and (link.error is not None or link.closing):
                why = f"the link to party '{link.peer}' has ended ({link.error or 'closing'})"
            elif not hello.resume and link.up.is_set():
                why = f"party '{link.peer}' is already connected"
        if why is not None:
            log.error("rejected a connection: %s", why)
            self.rejections.append(why)
            raise _Refused(grpc.StatusCode.FAILED_PRECONDITION, why)
        assert link is not None
        conn = _Conn(link.conn.gen, stream=request_iterator, cancel=cancel)
        conn.outgoing.put(self._hello(link.peer, hello.resume))
        if hello.resume:
            resent = link.resume(conn, hello.received)
            log.warning("link to party '%s' restored (%s resent)", link.peer, _frames(resent))
        else:
            link.attach(conn)
        return link, conn

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
            size, step = len(data), self.options.limits.chunk_bytes
            chunks = max(1, -(-size // step))
            for i in range(chunks):
                def build(seq: int, acked: int, i: int = i) -> bytes:
                    return codec.encode_frame(self.session_id, self.me, tag, i, chunks, kind,
                                              dtype, shape if i == 0 else (), size,
                                              data[i * step:(i + 1) * step], seq, acked)

                blob = link.push_frame(build)
                link.bytes_sent += len(blob)
                if self.wire_log is not None:  # length-prefixed envelopes
                    self.wire_log.write(len(blob).to_bytes(4, "little") + blob)
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
            link.closing = True
            link.outgoing.put(env)
            link.outgoing.put(_CLOSE)
        time.sleep(0.2)  # let gRPC flush the aborts before the process goes
        self._teardown(grace=0.2)

    def close(self) -> None:
        """Half-close every link, wait (bounded) for the peers to do the same, then stop."""
        for link in self.links.values():
            link.closing = True
            link.outgoing.put(pb.Envelope(bye=pb.Bye()))
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
                deadline, cancel = link.read_deadline, link.conn.cancel
                if deadline is not None and now > deadline and cancel is not None:
                    link.timed_out = True
                    cancel()

    def _teardown(self, grace: float) -> None:
        self._stopped.set()
        for _, channel in self._dialed.values():
            channel.close()
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


_SERVICE = "smpc.wire.Link"  # the service of proto/parties/wire.proto


def _connect_method(channel: grpc.Channel) -> Any:
    """Link.Connect with our envelope codec: frames skip protobuf objects (parties/codec.py)."""
    return channel.stream_stream(f"/{_SERVICE}/Connect",
                                 request_serializer=codec.encode_envelope,
                                 response_deserializer=codec.read_envelope)


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode | None, why: str, ours: bool = False) -> None:
        super().__init__(why)
        self.code = code
        self.why = why
        self.ours = ours  # this node refused the peer (not the other way round)


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
            link, conn = self.mesh.accept(first, request_iterator, context.cancel,
                                          context.auth_context())
        except _Refused as exc:
            context.abort(exc.code, exc.why)
            return

        def ended() -> None:
            conn.outgoing.put(_CLOSE)
            link.dropped(conn.gen)

        context.add_callback(ended)
        yield from conn.iterate()
        # our side is done; keep the call open until the peer is done too
        if conn is link.conn and context.is_active():
            link.eof.wait(self.mesh.options.close_timeout)
