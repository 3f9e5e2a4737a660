"""Mutual TLS between nodes: who is accepted, who is refused, and what each side says."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator

import grpc
import pytest
import torch

from parties.consortium import certs
from parties.wire import wire_pb2 as pb
from parties.wire import wire_pb2_grpc as pb_grpc
from parties.wire.transport import LinkOptions, Mesh, PeerError, PeerTimeout, TlsIdentity

CA_KEY, CA_CERT = certs.make_ca("test")
CA_PEM = certs.serialization.Encoding.PEM
CA_BYTES = CA_CERT.public_bytes(CA_PEM)


def identity(name: str, **kwargs: object) -> TlsIdentity:
    issued = certs.issue(name, CA_KEY, CA_CERT, **kwargs)  # type: ignore[arg-type]
    return TlsIdentity(CA_BYTES, issued.key_pem, issued.cert_pem)


def pair(a_identity: TlsIdentity, b_identity: TlsIdentity, a_name: str = "a",
         order: list[str] | None = None) -> tuple[Mesh, Mesh, dict[str, BaseException | None]]:
    opts = LinkOptions(connect_timeout=3.0, recv_timeout=5.0)
    a = Mesh(a_name, ["b"], order or [a_name, "b"], "s", opts, tls=a_identity)
    b = Mesh("b", ["a"], ["a", "b"], "s", opts, tls=b_identity)
    book = {"b": f"127.0.0.1:{b.bind('127.0.0.1:0')}"}
    a.bind("127.0.0.1:0")
    errors: dict[str, BaseException | None] = {}

    def go(name: str, mesh: Mesh) -> None:
        try:
            mesh.connect(book)
            errors[name] = None
        except BaseException as exc:
            errors[name] = exc

    threads = [threading.Thread(target=go, args=x) for x in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return a, b, errors


def _close(*meshes: Mesh) -> None:
    for m in meshes:
        m.abort("test over")


def test_valid_certificates_connect_and_carry_data() -> None:
    a, b, errors = pair(identity("a"), identity("b"))
    assert errors == {"a": None, "b": None}
    a.send("b", torch.tensor([1.5, -2.0]))
    assert b.recv("a").tolist() == [1.5, -2.0]
    _close(a, b)


def test_no_client_certificate_is_refused() -> None:
    b = Mesh("b", ["a"], ["a", "b"], "s", LinkOptions(connect_timeout=2.0), tls=identity("b"))
    port = b.bind("127.0.0.1:0")
    creds = grpc.ssl_channel_credentials(root_certificates=CA_BYTES)  # no key, no certificate
    channel = grpc.secure_channel(f"127.0.0.1:{port}", creds,
                                  options=[("grpc.ssl_target_name_override", "b")])
    hello = pb.Envelope(hello=pb.Hello(session_id="s", sender="a", receiver="b", version=1))
    with pytest.raises(grpc.RpcError) as info:
        next(pb_grpc.LinkStub(channel).Connect(iter([hello]), timeout=3))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert b.links["a"].up.is_set() is False
    channel.close()
    _close(b)


def _tls_refused(errors: dict[str, BaseException | None]) -> None:
    assert isinstance(errors["a"], PeerError)
    assert "party 'b': TLS handshake with 127.0.0.1:" in str(errors["a"])
    assert isinstance(errors["b"], PeerError) and "party 'a'" in str(errors["b"])


def test_self_signed_certificate_with_the_right_name_is_refused() -> None:
    a, b, errors = pair(identity("a", self_signed=True), identity("b"))
    _tls_refused(errors)
    _close(a, b)


def test_expired_certificate_is_refused() -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    a, b, errors = pair(identity("a", not_before=past, not_after=past + dt.timedelta(days=1)),
                        identity("b"))
    _tls_refused(errors)
    _close(a, b)


def test_server_presenting_the_wrong_name_is_refused_by_the_client() -> None:
    a, b, errors = pair(identity("a"), identity("c"))
    _tls_refused(errors)
    _close(a, b)


def test_server_certificate_from_another_ca_is_reported_as_tls() -> None:
    other_key, other_cert = certs.make_ca("other")
    issued = certs.issue("b", other_key, other_cert)
    a, b, errors = pair(identity("a"), TlsIdentity(CA_BYTES, issued.key_pem, issued.cert_pem))
    assert isinstance(errors["a"], PeerError) and not isinstance(errors["a"], PeerTimeout)
    assert "TLS handshake with 127.0.0.1:" in str(errors["a"])
    assert "its certificate does not chain to the consortium CA" in str(errors["a"])
    _close(a, b)


def _dial(address: str) -> PeerError:
    """What node a says when its dial to b at `address` fails (connect timeout 2 s)."""
    a = Mesh("a", ["b"], ["a", "b"], "s", LinkOptions(connect_timeout=2.0), tls=identity("a"))
    a.bind("127.0.0.1:0")
    try:
        a.connect({"b": address})
    except PeerError as exc:
        return exc
    finally:
        a.abort("test over")
    raise AssertionError(f"connected to {address}")


@pytest.fixture()
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port where nothing answers: its accept queue is full, so the kernel drops SYNs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)  # fills the queue
    probe = socket.socket()
    probe.settimeout(0.5)
    with pytest.raises(TimeoutError):  # the premise: a connect now gets no answer
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    filler.close()
    sock.close()


def test_black_hole_is_no_answer_not_a_certificate_problem(black_hole: int) -> None:
    exc = _dial(f"127.0.0.1:{black_hole}")
    assert isinstance(exc, PeerTimeout), exc
    assert f"party 'b': no answer from 127.0.0.1:{black_hole} within 2 s (network or firewall" \
        in str(exc)
    assert "certificate" not in str(exc) and "failed" not in str(exc)


def test_silent_port_is_no_answer_not_a_certificate_problem(silent_port: int) -> None:
    exc = _dial(f"127.0.0.1:{silent_port}")
    assert isinstance(exc, PeerTimeout), exc
    assert str(exc) == (f"party 'b': no answer from 127.0.0.1:{silent_port} within 2 s "
                        "(network or firewall)")


def test_valid_certificate_with_another_partys_name_is_refused() -> None:
    a, b, errors = pair(identity("c"), identity("b"))
    assert isinstance(errors["a"], PeerError)
    assert "refused the connection: a certificate naming ['c'] claims to be party 'a'" in str(
        errors["a"])
    assert b.rejections == ["a certificate naming ['c'] claims to be party 'a'"]
    _close(a, b)


def test_certificate_for_a_name_the_consortium_does_not_list_is_refused() -> None:
    a, b, errors = pair(identity("mallory"), identity("b"), a_name="mallory",
                        order=["mallory", "b"])
    assert isinstance(errors["a"], PeerError)
    assert "party 'mallory' is not a peer of 'b'" in str(errors["a"])
    assert "party 'mallory' is not a peer of 'b'" in b.rejections[0]
    _close(a, b)


def test_generated_keys_are_private(tmp_path) -> None:
    written = certs.generate("hospitals", ["hospital-a", "dealer"], tmp_path)
    keys = [p for p in written if p.suffix == ".key"]
    assert len(keys) == 3
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in keys)


def _consortium_copy(tmp_path, edit: tuple[str, str]):
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "examples" / "hospitals", tmp_path / "h",
                    ignore=shutil.ignore_patterns("*.py", "certs", "checkpoints"))
    path = tmp_path / "h" / "consortium.toml"
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(*edit))
    return path


def _party(consortium, *extra: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "parties.cli", "party", "--consortium", str(consortium),
         "--as", "hospital-a", "--policy",
         str(consortium.parent / "policies" / "hospital-a.toml"), *extra],
        capture_output=True, text=True, timeout=60)


def test_insecure_with_a_non_loopback_address_is_refused(tmp_path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: the refusal must come before any connection is tried
    consortium = _consortium_copy(tmp_path, ('address = "127.0.0.1:7102"',
                                             'address = "192.0.2.10:7102"'))
    proc = _party(consortium, "--insecure")
    assert proc.returncode == 2
    assert "--insecure is allowed only when every address" in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1


def test_missing_certificates_are_named(tmp_path) -> None:
    consortium = _consortium_copy(tmp_path, ("epochs = 10", "epochs = 10"))
    proc = _party(consortium)
    assert proc.returncode == 2
    assert "certs/ca.pem not found" in proc.stderr and "smpc certs" in proc.stderr


def test_per_node_folders_hold_only_their_own_key(tmp_path) -> None:
    certs.generate("hospitals", ["hospital-a", "dealer"], tmp_path, per_node=True)
    for node in ("hospital-a", "dealer"):
        names = sorted(p.name for p in (tmp_path / node).iterdir())
        assert names == sorted(["ca.pem", f"{node}.key", f"{node}.pem"])
        assert (tmp_path / node / "ca.pem").read_bytes() == (tmp_path / "ca.pem").read_bytes()
