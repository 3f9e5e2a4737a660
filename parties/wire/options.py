"""Deadlines and limits of every link, and the gRPC settings that enforce them."""

from __future__ import annotations

from dataclasses import dataclass, field

from parties.wire import codec


@dataclass(frozen=True)
class LinkOptions:
    """Deadlines and limits of every link.

    How long until a lost peer is named (k = keepalive_s, w = reconnect_window,
    T = recv_timeout; about 1 s of scheduling slack on top):

    - A peer that is frozen (SIGSTOP, a hung host) or whose network silently
      drops packets: within  min(T, 2k + w).  gRPC pings every k seconds and
      drops the connection when a ping is not answered within k (so at most 2k
      after the peer went silent); then the dialing side retries for w seconds
      (each attempt bounded by min(connect_timeout, max(1, w/4)), because a
      stopped process's kernel still accepts TCP) and the accepting side waits
      w for it. T applies when this node is waiting on that peer.
    - A peer whose process died (its host refuses the port): about 1 s on the
      side that dials it (refused for min(1, w/3) s means gone), w on the side
      it dialed (nobody calls back).
    - A node waiting on a healthy peer that itself waits on the lost one names
      the lost one too: when that peer's Abort arrives (the times above, plus a
      round trip), or at its own T from the waiting notices (parties/wire/waiting.py).

    With the defaults: a frozen peer in at most 2*10 + 20 = 40 s, a dead one in
    about 1 s (dialing side) or 20 s (accepting side); a receive gives up after
    120 s. Before this formula held, gRPC's own ping timeout (60 s, separate
    from the keepalive timeout) made a frozen peer take 60 + 20 = 80 s.

    Listening side (parties/wire/service.py): a connection that has not finished
    the TLS + HTTP/2 handshake within `handshake_timeout` is closed, and one that
    carries no call for twice that is let go; a stream that has not sent its
    Hello within `handshake_timeout` is cancelled. At most two connections per
    peer plus `max_unauthenticated` are held at once, and at most
    `max_unauthenticated` streams wait for their Hello.
    """

    connect_timeout: float = 30.0
    recv_timeout: float = 120.0
    close_timeout: float = 10.0
    limits: codec.Limits = field(default_factory=codec.Limits)
    max_pending_payloads: int = 100_000
    keepalive_s: float = 10.0
    reconnect_window: float = 20.0  # 0: a dropped connection is fatal at once
    handshake_timeout: float = 5.0
    max_unauthenticated: int = 16
    notice_after: float | None = None  # None: min(5 s, recv_timeout / 4)

    @property
    def notice_delay(self) -> float:
        """Seconds a receive waits before this node tells its peers whom it waits on."""
        if self.notice_after is not None:
            return self.notice_after
        return min(5.0, self.recv_timeout / 4)

    def grpc_options(self) -> list[tuple[str, int]]:
        """Options for a dialed channel (and the part a server shares)."""
        size = 2 * self.limits.chunk_bytes + (1 << 16)
        keepalive_ms = max(1, int(self.keepalive_s * 1000))
        return [
            ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", keepalive_ms),
            # gRPC's ping timeout (default 60 s) also governs keepalive pings: without it
            # an unanswered ping takes a minute to drop the connection, not keepalive_s
            ("grpc.http2.ping_timeout_ms", keepalive_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 500),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 1000),  # also gRPC's minimum connect timeout
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.experimental.tcp_read_chunk_size", 1 << 20),
            ("grpc.experimental.tcp_min_read_chunk_size", 256 << 10),
            ("grpc.experimental.tcp_max_read_chunk_size", 4 << 20),
        ]

    def max_connections(self, peers: int) -> int:
        """Incoming connections a node holds at once: two per peer (one being replaced
        while it resumes) plus the unauthenticated allowance."""
        return 2 * peers + self.max_unauthenticated

    def server_options(self, peers: int) -> list[tuple[str, int]]:
        """Options for this node's listening server, which `peers` peers may dial."""
        handshake_ms = max(1, int(self.handshake_timeout * 1000))
        return [
            *self.grpc_options(),
            ("grpc.so_reuseport", 0),
            # TLS and the HTTP/2 preface must complete within this, or the socket is closed
            ("grpc.server_handshake_timeout_ms", handshake_ms),
            ("grpc.max_allowed_incoming_connections", self.max_connections(peers)),
            # a link is one call; a connection with none (after the handshake) is let go
            ("grpc.max_connection_idle_ms", 2 * handshake_ms),
            ("grpc.max_concurrent_streams", 4),
        ]
