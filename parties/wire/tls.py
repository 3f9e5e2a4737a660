"""Mutual TLS: this node's identity, and why a dial over TLS failed.

gRPC says little when a secure channel never becomes ready: a black-holed
address, a stopped process and a certificate the peer rejects all look alike
("connect() timed out", "tcp handshaker shutdown", a closed socket). So after a
failed dial, `diagnose` probes the address itself: a TCP connect, then a TLS
handshake that checks the peer's certificate against the consortium CA and the
party's name (Python's ssl, without our key). That tells apart:

- no answer (TCP or TLS handshake timed out): the network or a firewall;
- the peer's certificate does not chain to the CA or does not name the party;
- the connection closed during the handshake;
- the peer's certificate is fine: then the peer refused ours.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import grpc


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


@dataclass(frozen=True)
class Diagnosis:
    """Why a dial failed: `text` names the address; `timeout` when nothing answered."""

    text: str
    timeout: bool = False


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port' or '[v6]:port'; None for anything else."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def diagnose(address: str, ca_pem: bytes, peer: str, probe_s: float, waited: float
             ) -> Diagnosis | None:
    """Why a TLS dial to `peer` at `address` failed (probing for up to 2 x `probe_s`).

    `waited` is how long the dial already waited, for the message. None when
    the address refuses connections or cannot be parsed: the caller's own
    "did not answer" message says it.
    """
    where = split_address(address)
    if where is None:
        return None
    silent = Diagnosis(f"no answer from {address} within {waited:g} s (network or firewall)",
                       timeout=True)
    try:
        sock = socket.create_connection(where, timeout=probe_s)
    except TimeoutError:
        return silent
    except OSError:
        return None  # refused, unreachable, unknown host: the caller says "did not answer"
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace"))
    try:
        with context.wrap_socket(sock, server_hostname=peer, do_handshake_on_connect=False) as tls:
            tls.settimeout(probe_s)
            tls.do_handshake()
    except TimeoutError:
        return Diagnosis(f"no answer from {address} within {waited:g} s (network or firewall: "
                         "it accepts TCP connections but does not answer the TLS handshake)",
                         timeout=True)
    except ssl.SSLCertVerificationError as exc:
        return Diagnosis(f"TLS handshake with {address} failed: its certificate does not chain "
                         f"to the consortium CA or does not name '{peer}' "
                         f"({exc.verify_message or exc.reason})")
    except (ssl.SSLError, OSError) as exc:
        why = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        return Diagnosis(f"TLS handshake with {address} failed: the connection closed during "
                         f"the handshake ({why})")
    except ValueError as exc:  # a party name that is no host name
        return Diagnosis(f"TLS handshake with {address} failed: {exc}")
    finally:
        sock.close()
    return Diagnosis(f"TLS handshake with {address} failed: it refused this node's "
                     "certificate (not issued by the consortium CA it trusts, expired, or "
                     "naming another party)")
