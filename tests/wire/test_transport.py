"""The gRPC mesh in one process: tags, chunking, handshake and frame validation."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import torch

from parties.wire import codec
from parties.wire import wire_pb2 as pb
from parties.wire.transport import LinkOptions, Mesh, PeerError, PeerTimeout, SettingError
from tests.wire.relay import Relay


def _mesh(names: list[str], **opts: float) -> dict[str, Mesh]:
    options = LinkOptions(**{"connect_timeout": 5.0, "recv_timeout": 5.0, **opts})
    return {n: Mesh(n, [p for p in names if p != n], names, "s", options) for n in names}


def _connect(meshes: dict[str, Mesh]) -> dict[str, BaseException | None]:
    book = {n: f"127.0.0.1:{m.bind('127.0.0.1:0')}" for n, m in meshes.items()}
    errors: dict[str, BaseException | None] = {}

    def go(n: str) -> None:
        try:
            meshes[n].connect(book)
            errors[n] = None
        except BaseException as exc:
            errors[n] = exc

    threads = [threading.Thread(target=go, args=(n,)) for n in meshes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


@pytest.fixture()
def pair() -> Iterator[dict[str, Mesh]]:
    meshes = _mesh(["a", "b"])
    assert _connect(meshes) == {"a": None, "b": None}
    yield meshes
    for m in meshes.values():
        m.abort("test over")


def test_out_of_order_arrivals_are_matched_by_tag(pair: dict[str, Mesh]) -> None:
    a, b = pair["a"], pair["b"]
    for tag in (3, 1, 2, 0):
        a.send("b", torch.tensor([tag * 10]), tag=tag)
    assert [int(b.recv("a", tag=t)) for t in (0, 1, 2, 3)] == [0, 10, 20, 30]
    a.send("b", torch.tensor([5]), tag=9)
    a.send("b", torch.tensor([4]), tag=8)
    assert int(b.recv("a", tag=9)) == 5 and int(b.recv("a", tag=8)) == 4


def _close_all(meshes: dict[str, Mesh]) -> None:
    threads = [threading.Thread(target=m.close) for m in meshes.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_chunked_payload_reassembled() -> None:
    meshes = {n: Mesh(n, [p for p in "ab" if p != n], ["a", "b"], "s",
                      LinkOptions(connect_timeout=5, recv_timeout=5,
                                  limits=codec.Limits(chunk_bytes=64 * 1024)))
              for n in "ab"}
    assert _connect(meshes) == {"a": None, "b": None}
    t = torch.randn(3 * 2**20 // 4 + 17)
    meshes["a"].send("b", t)
    meshes["a"].send("b", {"after": (1, 2)})
    assert torch.equal(meshes["b"].recv("a"), t)
    assert meshes["b"].recv("a") == {"after": (1, 2)}
    _close_all(meshes)


def test_receive_deadline_names_the_peer(pair: dict[str, Mesh]) -> None:
    with pytest.raises(PeerTimeout, match=r"party 'a': sent nothing for 0\.3 s"):
        pair["b"].recv("a", timeout=0.3)


def _inject(mesh: Mesh, peer: str, frame: pb.Frame) -> None:
    link = mesh.links[peer]
    with link.send_lock:
        link.push(pb.Envelope(frame=frame))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pb.Frame(session_id="s", sender="a", tag=0, chunks=1, kind=pb.TENSOR, dtype=pb.INT64,
                  shape=[4], nbytes=8, data=b"\0" * 8), "shape \\[4\\] needs 32 bytes"),
        (pb.Frame(session_id="s", sender="c", tag=0, chunks=1, kind=pb.TENSOR, dtype=pb.INT64,
                  shape=[1], nbytes=8, data=b"\0" * 8), "claims sender 'c'"),
        (pb.Frame(session_id="other", sender="a", tag=0, chunks=1, kind=pb.TENSOR,
                  dtype=pb.INT64, shape=[1], nbytes=8, data=b"\0" * 8), "unknown session"),
        (pb.Frame(session_id="s", sender="a", tag=0, chunks=1, kind=pb.TENSOR, dtype=99,
                  shape=[1], nbytes=8, data=b"\0" * 8), "unknown dtype"),
        (pb.Frame(session_id="s", sender="a", tag=0, chunks=2, kind=pb.TENSOR, dtype=pb.INT8,
                  shape=[1 << 40], nbytes=1 << 40, data=b"\0"), "exceeds the limit"),
    ],
)
def test_bad_frame_is_an_error_naming_the_peer(pair: dict[str, Mesh], frame: pb.Frame,
                                               message: str) -> None:
    _inject(pair["a"], "b", frame)
    with pytest.raises(PeerError, match="party 'a': sent a bad frame: .*" + message):
        pair["b"].recv("a", tag=0, timeout=5)


def test_repeated_tag_is_refused(pair: dict[str, Mesh]) -> None:
    pair["a"].send("b", torch.tensor([1]), tag=0)
    pair["a"].send("b", torch.tensor([2]), tag=0)
    with pytest.raises(PeerError, match="repeated tag 0"):
        for _ in range(2):
            pair["b"].recv("a", tag=0, timeout=5)
            pair["b"].recv("a", tag=1, timeout=5)


def test_other_wire_version_is_refused_on_both_sides() -> None:
    meshes = _mesh(["a", "b"], connect_timeout=3.0)
    meshes["a"].version = 99
    errors = _connect(meshes)
    assert isinstance(errors["a"], PeerError)
    assert "party 'b': refused the connection: party 'a' speaks wire version 99" in str(errors["a"])
    assert isinstance(errors["b"], PeerError) and "party 'a'" in str(errors["b"])
    assert meshes["b"].rejections and "version 99" in meshes["b"].rejections[0]
    for m in meshes.values():
        m.abort("test over")


def test_port_in_use_is_a_setting_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        with pytest.raises(SettingError, match=f"cannot listen on 127.0.0.1:{port}"):
            _mesh(["a", "b"])["a"].bind(f"127.0.0.1:{port}")
    finally:
        sock.close()


def test_wrong_address_names_peer_and_address() -> None:
    m = _mesh(["a", "b"], connect_timeout=1.0)["a"]
    m.bind("127.0.0.1:0")
    expect = r"party 'b': did not answer at 127\.0\.0\.1:9 within 1 s"
    with pytest.raises(PeerTimeout, match=expect):
        m.connect({"b": "127.0.0.1:9"})
    m.abort("test over")


def test_bad_listen_address() -> None:
    with pytest.raises(SettingError, match="not host:port"):
        _mesh(["a", "b"])["a"].bind("nonsense")


def test_objects_round_trip_and_refuse_code() -> None:
    obj = {"a": (1, -2**70, 0.1, None, True), "s": torch.Size([3]), "b": b"x",
           "t": torch.tensor([[1.5, -2.0]])}
    back = codec.decode_object(codec.encode_object(obj))
    assert back["a"] == obj["a"] and back["s"] == obj["s"] and back["b"] == b"x"
    assert torch.equal(back["t"], obj["t"])
    with pytest.raises(codec.FrameError, match="no pickle"):
        codec.encode_object({"f": print})
    with pytest.raises(codec.FrameError):
        codec.decode_object(b'{"pickle": "x"}')


def test_manifest_handshake_over_the_mesh() -> None:
    from parties.consortium.handshake import agree
    from parties.consortium.manifest import ManifestError

    names = ["a", "b", "c"]
    meshes = _mesh(names)
    assert set(_connect(meshes).values()) == {None}
    base = {"protocol": {"name": "lr", "parameters": {"epochs": 5}}, "reveal": [["m", ["a"]]]}
    manifests = {"a": base, "b": base,
                 "c": {**base, "protocol": {"name": "lr", "parameters": {"epochs": 6}}}}
    objections = {"a": None, "b": "its policy does not accept revealing 'm'", "c": None}
    errors: dict[str, str] = {}

    def go(n: str) -> None:
        try:
            agree(meshes[n], manifests[n], objections[n])
        except ManifestError as exc:
            errors[n] = str(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    # every node stops, and the objection (checked first) names party b
    assert set(errors) == set(names)
    assert all("party 'b' refuses: its policy does not accept revealing 'm'" in e
               for e in errors.values())
    for m in meshes.values():
        m.abort("test over")

    meshes = _mesh(names)
    assert set(_connect(meshes).values()) == {None}
    objections["b"] = None
    errors.clear()
    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert "differs from party 'c' in field 'protocol.parameters.epochs'" in errors["a"]
    assert "differs from party 'a' in field 'protocol.parameters.epochs'" in errors["c"]
    for m in meshes.values():
        m.abort("test over")


def _pair_via_relay(**opts: float) -> tuple[dict[str, Mesh], Relay]:
    """a dials b through a relay that the test can cut."""
    meshes = _mesh(["a", "b"], **opts)
    port_b = meshes["b"].bind("127.0.0.1:0")
    port_a = meshes["a"].bind("127.0.0.1:0")
    relay = Relay(("127.0.0.1", port_b))
    book = {"a": f"127.0.0.1:{port_a}", "b": f"127.0.0.1:{relay.start()}"}
    threads = [threading.Thread(target=m.connect, args=(book,)) for m in meshes.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(m.links[p].up.is_set() for m, p in ((meshes["a"], "b"), (meshes["b"], "a")))
    return meshes, relay


def test_dropped_connection_is_resumed_without_loss() -> None:
    """Cut the TCP connection (RST) with an outage; every payload arrives once, in order."""
    meshes, relay = _pair_via_relay(reconnect_window=10.0, recv_timeout=30.0)
    a, b = meshes["a"], meshes["b"]
    big = torch.randint(-2**62, 2**62, (3 * 2**20 // 8 + 5,))  # several chunks
    got_a: list[int] = []
    got_b: list[torch.Tensor] = []

    def b_side() -> None:  # echo each small tensor back, doubled
        for _ in range(60):
            x = b.recv("a")
            got_b.append(x)
            if x.numel() == 1:
                b.send("a", x * 2)

    t = threading.Thread(target=b_side)
    t.start()
    for i in range(30):
        a.send("b", torch.tensor([i]))
        got_a.append(int(a.recv("b")))
    relay.cut(outage=1.0)
    a.send("b", big)  # sent into the dead connection: kept until acknowledged
    for i in range(30, 59):
        a.send("b", torch.tensor([i]))
        got_a.append(int(a.recv("b")))
    t.join(30)
    assert got_a == [2 * i for i in range(59)]
    assert torch.equal(got_b[30], big)
    assert [int(x) for x in got_b[:30] + got_b[31:]] == list(range(59))
    assert a.links["b"].reconnects >= 1 and b.links["a"].reconnects >= 1
    assert len(a.links["b"].unacked) <= 1  # acknowledged frames are not kept
    _close_all(meshes)
    relay.stop()


def test_lost_peer_is_named_within_the_reconnect_window() -> None:
    """The route to b disappears for good: both sides fail naming the other, in time."""
    meshes, relay = _pair_via_relay(reconnect_window=2.0)
    a, b = meshes["a"], meshes["b"]
    a.send("b", torch.tensor([1]))
    assert int(b.recv("a")) == 1
    relay.stop()  # connections reset, and the relay's port now refuses
    tic = time.monotonic()
    with pytest.raises(PeerError, match=r"party 'b': is gone: 127\.0\.0\.1:[0-9]+ refuses"):
        a.recv("b", timeout=30)
    with pytest.raises(PeerError, match=r"party 'a': connection lost .* not restored within 2 s"):
        b.recv("a", timeout=30)
    assert time.monotonic() - tic < 8
    for m in meshes.values():
        m.abort("test over")


def _abort_seen_by_b(reason: str) -> PeerError:
    """The error b's receive from a ends with when a aborts with `reason` (b is reading:
    gRPC drops what a cancelled call carried but nobody had read)."""
    meshes = _mesh(["a", "b"])
    assert _connect(meshes) == {"a": None, "b": None}
    seen: list[PeerError] = []

    def wait() -> None:
        try:
            meshes["b"].recv("a", timeout=10)
        except PeerError as exc:
            seen.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    meshes["a"].abort(reason)
    t.join(15)
    meshes["b"].abort("test over")
    assert len(seen) == 1 and seen[0].peer == "a"
    return seen[0]


def test_abort_reason_arrives_unchanged() -> None:
    reason = "lost party 'c' after epoch 2/10 (round 1504): sent nothing for 30 s\n(détail)"
    assert _abort_seen_by_b(reason).what == f"aborted: {reason}"


def test_long_abort_reason_is_cut_when_sent() -> None:
    what = _abort_seen_by_b("x" * 100_000).what
    assert what.startswith("aborted: xxx") and what.endswith("(cut off)")
    assert len(what) == len("aborted: ") + codec.MAX_REASON_CHARS


def test_long_abort_reason_is_cut_when_received(pair: dict[str, Mesh]) -> None:
    link = pair["a"].links["b"]  # a peer that does not cut its reason
    with link.send_lock:
        link.push(pb.Envelope(abort=pb.Abort(sender="a", reason="y" * 1_000_000)))
    with pytest.raises(PeerError) as info:
        pair["b"].recv("a", timeout=5)
    assert len(info.value.what) == len("aborted: ") + codec.MAX_REASON_CHARS
