"""Connections that never authenticate: closed within the handshake timeout, and capped.

Node b listens with handshake_timeout 1 s and room for 2 unauthenticated
connections (beyond two for its one peer): raw TCP connections that never
start TLS or HTTP/2, and gRPC streams that never send a Hello, are closed in
time; the legitimate peer still connects.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import torch

from parties.wire import service
from parties.wire.transport import LinkOptions, Mesh, TlsIdentity
from tests.wire.test_tls import identity

HANDSHAKE_S = 1.0
ROOM = 2  # fewer than the 4 streams one connection may open at once
SLACK = 2.0


def _options() -> LinkOptions:
    return LinkOptions(connect_timeout=15.0, recv_timeout=5.0, handshake_timeout=HANDSHAKE_S,
                       max_unauthenticated=ROOM)


def _node(name: str, tls: TlsIdentity | None) -> Mesh:
    return Mesh(name, [p for p in "ab" if p != name], ["a", "b"], "s", _options(), tls=tls)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (reads and drops whatever it sent first)."""
    sock.settimeout(0.01)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _legitimate_peer_connects(b: Mesh, port: int, tls: TlsIdentity | None) -> None:
    a = _node("a", tls)
    a.bind("127.0.0.1:0")
    done: list[BaseException | None] = []
    t = threading.Thread(target=lambda: done.append(_try(b.connect, {})))
    t.start()
    assert _try(a.connect, {"b": f"127.0.0.1:{port}"}) is None
    t.join(20)
    assert done == [None]
    a.send("b", torch.tensor([7]))
    assert int(b.recv("a")) == 7
    a.abort("test over")


def _try(fn, *args) -> BaseException | None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    return None


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_idle_tcp_connections_are_capped_and_closed(tls: bool) -> None:
    b = _node("b", identity("b") if tls else None)
    port = b.bind("127.0.0.1:0")
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    tic = time.monotonic()
    try:
        time.sleep(0.5)
        held = [s for s in socks if not _closed(s)]
        assert len(held) <= _options().max_connections(1), len(held)
        while held and time.monotonic() - tic < HANDSHAKE_S + SLACK:
            time.sleep(0.1)
            held = [s for s in held if not _closed(s)]
        assert not held, f"{len(held)} idle connections still open after " \
                         f"{time.monotonic() - tic:.1f} s"
        _legitimate_peer_connects(b, port, identity("a") if tls else None)
    finally:
        for s in socks:
            s.close()
        b.abort("test over")


def test_legitimate_peer_gets_in_while_strangers_hold_every_slot() -> None:
    b = _node("b", None)
    port = b.bind("127.0.0.1:0")
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        tic = time.monotonic()
        _legitimate_peer_connects(b, port, None)
        assert time.monotonic() - tic < HANDSHAKE_S + 5.0
    finally:
        for s in socks:
            s.close()
        b.abort("test over")


@pytest.fixture()
def stalled() -> Iterator[threading.Event]:
    """Released at the end: request streams that never send anything until then."""
    release = threading.Event()
    yield release
    release.set()


def test_streams_without_hello_are_refused_beyond_the_room_and_cancelled(
        stalled: threading.Event) -> None:
    b = _node("b", None)
    port = b.bind("127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    ended: dict[int, tuple[grpc.StatusCode | None, float]] = {}
    tic = time.monotonic()

    def silent() -> Iterator[bytes]:
        stalled.wait(30)
        return
        yield b""

    def call(i: int) -> None:
        stream = service.connect_method(channel)(silent())
        try:
            next(stream)
            code = None
        except grpc.RpcError as exc:
            code = exc.code()
        except StopIteration:
            code = None
        ended[i] = (code, time.monotonic() - tic)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(ROOM + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANDSHAKE_S + SLACK + 3)
    codes = sorted(str(c) for c, _ in ended.values())
    assert len(ended) == ROOM + 1, f"{ROOM + 1 - len(ended)} streams without a Hello still open"
    assert codes.count(str(grpc.StatusCode.RESOURCE_EXHAUSTED)) == 1, codes
    assert codes.count(str(grpc.StatusCode.CANCELLED)) == ROOM, codes
    assert all(t < HANDSHAKE_S + SLACK for _, t in ended.values()), ended
    assert b.gate.expired == ROOM and b.gate.refused == 1 and b.gate.waiting == 0
    channel.close()
    _legitimate_peer_connects(b, port, None)
    b.abort("test over")
