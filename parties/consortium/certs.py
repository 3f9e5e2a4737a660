"""Development certificates: a consortium CA and one key + certificate per node.

`smpc certs consortium.toml --out certs/` writes ca.pem, and for each party and
the dealer <name>.pem (certificate, SAN = the node's name) and <name>.key
(mode 0600). Each node proves its identity with its certificate; a peer is
accepted only if the certificate chains to the consortium CA and names the
party it claims to be. Nothing generated here is ever committed.

An organization with its own CA issues each node a certificate whose subject
alternative name (DNS) is the node's name in the consortium file, for both
server and client authentication, and points the consortium's `ca` at the CA
certificate.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A PEM key and certificate."""

    key_pem: bytes
    cert_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(name: str, days: int = 365) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA for a consortium (development use)."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} development CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
          self_signed: bool = False) -> Issued:
    """A node certificate naming `name` (CN and DNS SAN), for server and client auth."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder().subject_name(subject)
        .issuer_name(subject if self_signed else ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    cert = builder.sign(key if self_signed else ca_key, hashes.SHA256())
    return Issued(_pem_key(key), cert.public_bytes(serialization.Encoding.PEM))


def write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def generate(consortium_name: str, nodes: list[str], out: Path, days: int = 365,
             per_node: bool = False) -> list[Path]:
    """CA plus one key/certificate per node under `out`; returns the files written.

    With `per_node`, each node gets its own folder out/<node>/ holding ca.pem and
    only its own key and certificate (what a container of that node mounts).
    """
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(consortium_name, days)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    written = [out / "ca.pem", out / "ca.key"]
    written[0].write_bytes(ca_pem)
    write_private(written[1], _pem_key(ca_key))
    for node in nodes:
        folder = out / node if per_node else out
        folder.mkdir(exist_ok=True)
        if per_node:
            (folder / "ca.pem").write_bytes(ca_pem)
            written.append(folder / "ca.pem")
        issued = issue(node, ca_key, ca_cert)
        (folder / f"{node}.pem").write_bytes(issued.cert_pem)
        write_private(folder / f"{node}.key", issued.key_pem)
        written += [folder / f"{node}.pem", folder / f"{node}.key"]
    return written
