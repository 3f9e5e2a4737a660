"""The mesh: this node's links to every peer, one long-lived gRPC stream per pair.

Every pair of nodes (parties and the dealer) shares one `Link.Connect` call,
opened by the node that comes first in the agreed order. Sending queues wire
bytes for gRPC; receiving reads in the thread that waits (parties/wire/link.py),
validates each frame, reassembles chunks and files payloads under their tag. A
receive waits for its tag with a deadline and fails fast, naming the peer, when
the link is lost or the peer aborts; a receive that has waited a while tells
the peers whom this node waits on (parties/wire/waiting.py), so a timeout
names the party that is actually silent.

A dropped connection is not a lost link: frames carry link sequence numbers,
the receiver acknowledges them, and the dialing node reconnects and both sides
resend what the other lacks, within the reconnect window. A node that is done
says Bye; a stream that ends without it was dropped. How long until a lost
peer is named: LinkOptions (parties/wire/options.py).

Hostile connections: the listening side closes connections that have not
finished TLS, HTTP/2 and our Hello within `handshake_timeout`, and holds at
most `max_unauthenticated` such connections beyond two per peer
(parties/wire/service.py). A dial that fails over TLS is diagnosed
(parties/wire/tls.py): no answer is a timeout, not a certificate problem.

`abort` and `close` return within a bounded, short time (abort: about 0.5 s),
whatever the peers do, and leave no thread that keeps the process alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import torch

from parties.wire import codec, service, tls, waiting
from parties.wire import wire_pb2 as pb
from parties.wire.errors import PeerError, PeerTimeout, SettingError
from parties.wire.link import CLOSE, Conn, Link, code_details, count_frames
from parties.wire.options import LinkOptions
from parties.wire.tls import TlsIdentity

log = logging.getLogger("smpc.transport")

WIRE_VERSION = pb.VERSION_CURRENT
MAX_REJECTIONS_KEPT = 100
_PROBE_S = 2.0  # each step of the probe after a failed TLS dial (tls.diagnose)


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
        self.board = waiting.WaitBoard(me, self.options.notice_delay, self._tell)
        self.links = {p: Link(p, session_id, self.options, self.board, order)
                      for p in peers if p != me}
        self.gate = service.HandshakeGate(self.options.max_unauthenticated,
                                          self.options.handshake_timeout)
        self._server: grpc.Server | None = None
        self.tls = tls
        self._dialed: dict[str, tuple[str, grpc.Channel]] = {}  # peer -> (address, channel)
        self._dial_errors: dict[str, PeerError] = {}  # why a dial failed, when it was found out
        self._world = len(order)
        self._lock = threading.Lock()
        self.rejections: list[str] = []
        self.wire_log: Any = None  # a binary file: every envelope this node sends (auditing)
        self._stopped = threading.Event()
        threading.Thread(target=self._watchdog, daemon=True, name=f"watchdog-{me}").start()
        self.version = WIRE_VERSION
        # serving (parties/node/serving.py): of the peers in `one_of`, the first that dials
        # is this session's (`chosen`); the others are turned away with `busy`
        self.one_of: frozenset[str] = frozenset()
        self.chosen: str | None = None
        self.busy = "is busy"

    # ------------------------------------------------------------ set-up
    def _dials(self, peer: str) -> bool:
        return self.order.index(self.me) < self.order.index(peer)

    def bind(self, address: str) -> int:
        """Start listening on `address` (host:port; port 0 picks one). Returns the port."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise SettingError(f"listen address {address!r} is not host:port")
        server = service.make_server(self, len(self.links))
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
        """Dial the peers this node dials, wait for the others; all within connect_timeout.

        Peers in `one_of` are neither dialed nor waited for (see :meth:`wait_chosen`)."""
        deadline = time.monotonic() + self.options.connect_timeout
        threads: dict[str, threading.Thread] = {}
        for peer, link in self.links.items():
            if peer in self.one_of:
                continue
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
            if peer in self.one_of:
                continue
            remaining = max(0.0, deadline - time.monotonic())
            if not link.up.wait(remaining) and peer in threads:
                threads[peer].join(2 * _PROBE_S + 1)  # a failed TLS dial finds out why
            if not link.up.is_set() or link.error is not None:
                if peer in self._dial_errors:
                    raise self._dial_errors[peer]
                if link.error is not None:
                    raise PeerError(peer, link.error)
                where = f" at {addresses[peer]}" if peer in addresses else ""
                verb = "did not answer" if self._dials(peer) else "did not connect"
                raise PeerTimeout(
                    peer, f"{verb}{where} within {self.options.connect_timeout:g} s"
                )

    def wait_chosen(self, timeout: float | None = None) -> str | None:
        """Wait until one peer of `one_of` has connected (None after `timeout`); the others
        are then turned away and dropped from `links`. A PeerError if a connected peer's
        link fails meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            for peer, link in self.links.items():
                if peer not in self.one_of and link.error is not None:
                    raise PeerError(peer, link.error)
            with self._lock:
                chosen = self.chosen
            if chosen is not None and self.links[chosen].up.wait(0.05):
                self.links = {p: lk for p, lk in self.links.items()
                              if p not in self.one_of or p == chosen}
                return chosen
            self._stopped.wait(0.05)
        return None

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
        if hello.sender in self.one_of and hello.sender not in self.links:
            return f"'{self.me}' {self.busy}"
        if hello.sender not in self.links:
            return f"{who} is not a peer of '{self.me}'"
        if expect is None and self._dials(hello.sender):
            return f"{who} dialed, but '{self.me}' dials it"
        return None

    def _channel(self, link: Link, address: str) -> grpc.Channel:
        opts = self.options.grpc_options()
        if self.tls is None:
            channel = grpc.insecure_channel(address, options=opts)
        else:  # the server's certificate must name the party we expect there
            opts = [*opts, ("grpc.ssl_target_name_override", link.peer)]
            channel = grpc.secure_channel(address, self.tls.channel_credentials(), options=opts)
        with self._lock:
            self._dialed[link.peer] = (address, channel)
        return channel

    def _open(self, link: Link, channel: grpc.Channel, resume: bool, timeout: float
              ) -> tuple[Conn, pb.Hello]:
        """One Connect call with its handshake (bounded by `timeout`); raises service.Refused."""
        conn = Conn(link.conn.gen)
        conn.outgoing.put(self._hello(link.peer, resume))
        call = service.connect_method(channel)(conn.iterate(), wait_for_ready=not resume)
        conn.stream, conn.cancel = call, call.cancel
        timer = threading.Timer(timeout, call.cancel)
        timer.start()
        try:
            first = next(call)
        except grpc.RpcError as exc:
            raise service.Refused(*code_details(exc)) from None
        except StopIteration:
            raise service.Refused(None, "closed the connection during the handshake") from None
        finally:
            timer.cancel()
        if first.body != "hello":
            call.cancel()
            raise service.Refused(None, "did not answer with a handshake (another protocol?)")
        hello = first.message.hello
        why = self.check_hello(hello, expect=link.peer)
        if why is None and hello.resume != resume:
            why = "answered a resume with a new session" if resume else "resumed a new link"
        if why:
            log.error("rejecting %s: %s", link.peer, why)
            call.cancel()
            raise service.Refused(grpc.StatusCode.FAILED_PRECONDITION, why, ours=True)
        call.add_done_callback(lambda _: self._on_drop(link, conn))
        return conn, hello

    def _dial(self, link: Link, address: str, deadline: float) -> None:
        channel = self._channel(link, address)
        try:
            grpc.channel_ready_future(channel).result(timeout=max(0.0, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            if self.tls is not None and not self._stopped.is_set():
                found = tls.diagnose(address, self.tls.ca_pem, link.peer, _PROBE_S,
                                     waited=self.options.connect_timeout)
                if found is not None:
                    error = PeerTimeout if found.timeout else PeerError
                    self._dial_errors[link.peer] = error(link.peer, found.text)
                    link.fail(found.text)
            return  # else connect() reports the timeout, naming the peer and address
        try:
            conn, _ = self._open(link, channel, resume=False,
                                 timeout=max(1.0, deadline - time.monotonic()))
        except service.Refused as exc:
            link.fail(exc.why if exc.ours else f"refused the connection: {exc.why}")
            return
        link.attach(conn)

    def _on_drop(self, link: Link, conn: Conn) -> None:
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

    def _redial(self, link: Link, dropped: Conn) -> None:
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
                except service.Refused as exc:
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
                            link.peer, time.monotonic() - (give_up - window), count_frames(resent))
                return
            self._lose(link, dropped, f"connection lost and not restored within {window:g} s "
                                      f"(last attempt: {why})")
        finally:
            with self._lock:
                link.redialing = False

    def _lose(self, link: Link, dropped: Conn, why: str) -> None:
        with link.changed:
            if link.conn is dropped:
                link.lost = why
                link.changed.notify_all()

    def accept(self, first: codec.Incoming, request_iterator: Iterator[codec.Incoming],
               cancel: Callable[[], Any], auth: dict[str, list[bytes]] | None = None
               ) -> tuple[Link, Conn]:
        """Server side of the handshake; raises service.Refused with the reason."""
        if first.body != "hello":
            raise service.Refused(grpc.StatusCode.INVALID_ARGUMENT,
                                  "first message is not a handshake")
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
            elif not hello.resume and hello.sender in self.one_of:
                with self._lock:
                    self.chosen = self.chosen or hello.sender
                    if self.chosen != hello.sender:
                        why = f"'{self.me}' {self.busy}"
        if why is not None:
            log.error("rejected a connection: %s", why)
            if len(self.rejections) < MAX_REJECTIONS_KEPT:
                self.rejections.append(why)
            raise service.Refused(grpc.StatusCode.FAILED_PRECONDITION, why)
        assert link is not None
        conn = Conn(link.conn.gen, stream=request_iterator, cancel=cancel)
        conn.outgoing.put(self._hello(link.peer, hello.resume))
        if hello.resume:
            resent = link.resume(conn, hello.received)
            log.warning("link to party '%s' restored (%s resent)", link.peer, count_frames(resent))
        else:
            link.attach(conn)
        return link, conn

    # ------------------------------------------------------------ messages
    def _link(self, peer: str) -> Link:
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
        """Tell every peer this node stops on an error (the reason cut to
        codec.MAX_REASON_CHARS), then close without waiting for them (about 0.5 s)."""
        env = pb.Envelope(abort=pb.Abort(sender=self.me, reason=codec.bounded_reason(reason)))
        for link in self.links.values():
            link.closing = True
            link.outgoing.put(env)
            link.outgoing.put(CLOSE)
        time.sleep(0.2)  # let gRPC flush the aborts before the process goes
        self._teardown(grace=0.2)

    def close(self) -> None:
        """Half-close every link, wait (bounded) for the peers to do the same, then stop."""
        for link in self.links.values():
            link.closing = True
            link.outgoing.put(pb.Envelope(bye=pb.Bye()))
            link.outgoing.put(CLOSE)
        deadline = time.monotonic() + self.options.close_timeout
        for link in self.links.values():
            link.drain(deadline)
        self._teardown(grace=1.0)

    def _watchdog(self, tick: float = 0.05) -> None:
        """Cancel any read that outlives its deadline (the read then raises a timeout),
        and streams that owe their Hello; tell the peers about long waits."""
        while not self._stopped.wait(tick):
            now = time.monotonic()
            self.gate.expire(now)
            self.board.tick(now)
            for link in self.links.values():
                deadline, cancel = link.read_deadline, link.conn.cancel
                if deadline is not None and now > deadline and cancel is not None:
                    link.timed_out = True
                    cancel()

    def _tell(self, chain: tuple[str, ...]) -> None:
        """Send every connected peer a Waiting notice with `chain` (empty: waiting on nobody)."""
        for link in self.links.values():
            if link.up.is_set() and link.error is None and not link.closing:
                with link.send_lock:
                    link.push(pb.Envelope(waiting=pb.Waiting(chain=chain)))

    def _teardown(self, grace: float) -> None:
        """Stop the watchdog, the channels and the server; every wait on a peer ends."""
        self._stopped.set()
        for link in self.links.values():
            link.release()
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


