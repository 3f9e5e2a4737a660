"""One link: a peer's connection, the frames it has not acknowledged, an inbox.

Incoming envelopes are read by the thread that waits for them (no reader
thread: on this kind of machine every thread hand-off costs ~100 us); the
mesh's watchdog cancels a read that outlives its deadline. Frames carry link
sequence numbers; those the peer has not acknowledged are kept, so that when
the connection drops and is re-established (within the reconnect window) each
side resends what the other has not received and the protocol above never
notices. A receive that times out names the party at the end of the waiting
chain (parties/wire/waiting.py), which is the peer itself unless that peer told
us it waits on someone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from parties.wire import codec, waiting
from parties.wire import wire_pb2 as pb
from parties.wire.errors import PeerClosed, PeerError, PeerTimeout
from parties.wire.options import LinkOptions

log = logging.getLogger("smpc.transport")

CLOSE = object()  # queued last: the call's sending side ends
ACK_EVERY = 32  # frames received without sending anything back before an explicit Ack


@dataclass
class Conn:
    """One gRPC call carrying a link; a resumed link gets a new one."""

    gen: int
    outgoing: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    stream: Iterator[codec.Incoming] | None = None  # what the peer sends
    cancel: Callable[[], Any] | None = None

    def iterate(self) -> Iterator[bytes | pb.Envelope]:  # what this node sends
        while True:
            item = self.outgoing.get()
            if item is CLOSE:
                return
            yield item


class Link:
    """One peer: its current connection, the frames it has not acknowledged, an inbox.

    `board` is the mesh's WaitBoard (whom this node waits on, what peers told
    it); `names` are all node names (a peer's waiting chain may hold only those).
    """

    def __init__(self, peer: str, session_id: str, options: LinkOptions,
                 board: waiting.WaitBoard, names: Sequence[str]) -> None:
        self.peer = peer
        self.options = options
        self.board = board
        self.names = list(names)
        self.conn = Conn(0)
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
        self.released = False  # this node stopped: nothing waits for the peer's half-close
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

    def attach(self, conn: Conn) -> None:
        """Make `conn` (the first connection) the link's."""
        with self.changed:
            self.conn = conn
            self.up.set()
            self.changed.notify_all()

    def resume(self, conn: Conn, peer_received: int) -> int:
        """Switch to `conn` after a drop: resend what the peer lacks; return how many.

        Whom each side waits on is told again on the new connection (the old
        notices were not kept for resending)."""
        self.board.forget(self.peer)  # not under send_lock: the board takes send locks
        told = self.board.told
        with self.send_lock:
            self._trim(peer_received)
            for _, blob in self.unacked:
                conn.outgoing.put(blob)
            resent = len(self.unacked)
            if told:
                conn.outgoing.put(pb.Envelope(waiting=pb.Waiting(chain=told),
                                              acked=self.received))
            with self.changed:
                old, self.conn = self.conn, conn
                conn.gen = old.gen + 1
                self.broken_at, self.lost = None, None
                self.reconnects += 1
                self.changed.notify_all()
        old.outgoing.put(CLOSE)
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
        """The link is over: every receive from now on raises PeerError(peer, what)."""
        with self.changed:
            if self.error is None:
                self.error = what
            self.eof.set()
            self.changed.notify_all()

    def release(self) -> None:
        """This node stops: whoever waits for the peer's half-close stops waiting now."""
        with self.changed:
            self.released = True
            self.changed.notify_all()

    def wait_done(self, timeout: float) -> None:
        """Wait (at most `timeout`) until the peer half-closed or this node stopped."""
        with self.changed:
            self.changed.wait_for(lambda: self.eof.is_set() or self.released, timeout)

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
            self.fail(f"aborted: {codec.bounded_reason(msg.message.abort.reason)}")
            return
        if body == "waiting":
            chain = list(msg.message.waiting.chain)
            why = waiting.check(self.peer, chain, self.names)
            if why is not None:
                raise codec.FrameError(why)
            self.board.heard(self.peer, chain)
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
                    raise ReadTimeout() from None
                if conn is not self.conn:
                    continue  # replaced by a resumed connection meanwhile
                # a peer that is done says Bye first (then eof is set and nobody
                # reads on); a stream that just ends was dropped: gRPC ends a dead
                # server-side call's request stream like a clean half-close
                why = describe(exc) if isinstance(exc, grpc.RpcError) else "the call ended"
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
            self.outgoing.put(CLOSE)
            if self.conn.cancel is not None:
                self.conn.cancel()

    def _await_resume(self, conn: Conn, deadline: float, why: str) -> None:
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
        """The payload with `tag`, reading until it arrives (PeerError after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self.read_lock:
            if tag not in self.inbox:
                self.board.begin(self.peer)
                try:
                    self._await(tag, deadline, timeout)
                finally:
                    self.board.end(self.peer)
            if tag == self.taken_below:
                self.taken_below += 1
                while self.taken_below in self._taken_early:
                    self._taken_early.discard(self.taken_below)
                    self.taken_below += 1
            else:
                self._taken_early.add(tag)
            return self.inbox.pop(tag)

    def _await(self, tag: int, deadline: float, timeout: float) -> None:
        while tag not in self.inbox:
            if self.error is not None:
                raise PeerError(self.peer, self.error)
            if self.eof.is_set():
                raise PeerClosed(self.peer, f"closed the connection (waiting for message {tag})")
            try:
                self.read_one(deadline)
            except ReadTimeout:
                raise self._silent(tag, timeout) from None

    def _silent(self, tag: int, timeout: float) -> PeerTimeout:
        """The timeout of a receive: it names the end of the waiting chain through the peer."""
        chain = self.board.chain(self.peer)
        if self.board.cyclic(self.peer):  # a deadlock, nobody silent: name the direct peer
            loop = " -> ".join([self.board.me, *chain, self.board.me])
            return PeerTimeout(self.peer, f"sent nothing for {timeout:g} s (waiting for message "
                                          f"{tag}; the waits form a cycle: {loop})")
        if len(chain) == 1:
            return PeerTimeout(self.peer,
                               f"sent nothing for {timeout:g} s (waiting for message {tag})")
        return PeerTimeout(chain[-1], f"sent nothing for {timeout:g} s ({waiting.story(chain)}; "
                                      f"this node was waiting on '{self.peer}' for message {tag})")

    def drain(self, deadline: float) -> None:
        """Read (and drop) until the peer half-closes, the link fails, or `deadline`."""
        with self.read_lock:
            while self.conn.stream is not None and not self.eof.is_set() and self.error is None:
                try:
                    self.read_one(deadline)
                except ReadTimeout:
                    return


def code_details(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    """gRPC's status code and details of a failed call (some RpcErrors carry neither)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return code, details or ""


def describe(exc: BaseException) -> str:
    code, details = code_details(exc)
    return f"{code.name if code else 'error'}: {details or 'no details'}"


def count_frames(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


class ReadTimeout(Exception):
    pass


