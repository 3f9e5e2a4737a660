"""Bulk transfer: a 64 MiB tensor from one party to another, vs plain sockets.

smpc moves it through CrypTen's `send`/`recv` on our communicator (the gRPC
mesh, ~1 MiB chunks), with and without mutual TLS. The reference is the same
bytes over a plain TCP socket and over a TLS socket (Python's ssl, the same
kind of EC P-256 certificates) between two processes on the same machine. Each
timing is one-way: from the send until the receiver has every byte (it answers
with one byte; the answer's trip is included in both).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from protocols.api import Output, Param, Protocol

MIB = 1 << 20
SIZE = 64 * MIB


def party_transfer(session: Any) -> dict[str, Any]:
    """Run by 2 smpc parties: party 0 sends 64 MiB to party 1, `repeats` times."""
    import crypten
    import torch

    comm = crypten.communicator.get()
    payload = torch.arange(SIZE // 8, dtype=torch.long)
    times = []
    for _ in range(session.params.repeats + 1):  # the first is a warm-up
        comm.barrier()
        tic = time.perf_counter()
        if comm.get_rank() == 0:
            comm.send(payload, 1)
            comm.recv(torch.zeros(1, dtype=torch.long), 1)
        else:
            got = comm.recv(torch.empty_like(payload), 0)
            comm.send(torch.ones(1, dtype=torch.long), 0)
            assert torch.equal(got[-3:], payload[-3:])
        times.append(time.perf_counter() - tic)
    return {"seconds": statistics.median(times[1:])}


PROTOCOL = Protocol(
    name="bulk-transfer", version="1", summary="64 MiB from party 0 to party 1, timed",
    run=party_transfer, params=(Param("repeats", int, 3, minimum=1),),
    outputs=(Output("seconds", "this party's own median time (measured locally)"),),
)


def smpc_seconds(tls: bool, repeats: int = 3) -> float:
    """Median one-way seconds for 64 MiB between two smpc parties."""
    from parties.node.local import run_generated

    out = run_generated(__file__, 2, insecure=not tls, timeout=300,
                        parameters={"repeats": repeats},
                        randomness="insecure-trusted-first-party")
    if not out.ok:
        tails = {n: x.lines[-3:] for n, x in out.run.nodes.items()}
        raise RuntimeError(f"bulk transfer failed: {tails}")
    return out.results["party1"]["revealed"]["seconds"]


def _receiver(port_q: Any, tls_dir: str | None, repeats: int) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls_dir:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{tls_dir}/party1.pem", f"{tls_dir}/party1.key")
        ctx.load_verify_locations(f"{tls_dir}/ca.pem")
        ctx.verify_mode = ssl.CERT_REQUIRED
        conn = ctx.wrap_socket(conn, server_side=True)
    buf = bytearray(SIZE)
    view = memoryview(buf)
    for _ in range(repeats + 1):
        got = 0
        while got < SIZE:
            n = conn.recv_into(view[got:], SIZE - got)
            if n == 0:
                return
            got += n
        conn.sendall(b"k")
    conn.close()


def socket_seconds(tls: bool, repeats: int = 3) -> float:
    """Median one-way seconds for 64 MiB over a plain (or TLS) socket between two processes."""
    from parties.consortium import certs

    with tempfile.TemporaryDirectory() as tmp:
        if tls:
            certs.generate("bulk", ["party0", "party1"], Path(tmp))
        ctx_mp = mp.get_context("spawn")
        port_q = ctx_mp.Queue()
        proc = ctx_mp.Process(target=_receiver, args=(port_q, tmp if tls else None, repeats))
        proc.start()
        sock = socket.create_connection(("127.0.0.1", port_q.get(timeout=60)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_cert_chain(f"{tmp}/party0.pem", f"{tmp}/party0.key")
            ctx.load_verify_locations(f"{tmp}/ca.pem")
            sock = ctx.wrap_socket(sock, server_hostname="party1")
        data = os.urandom(SIZE)
        times = []
        for _ in range(repeats + 1):
            tic = time.perf_counter()
            sock.sendall(data)
            if sock.recv(1) != b"k":
                raise RuntimeError("the socket receiver stopped")
            times.append(time.perf_counter() - tic)
        sock.close()
        proc.join(30)
    return statistics.median(times[1:])


def table(repeats: int = 3) -> list[dict[str, Any]]:
    """Rows: what, seconds, MB/s, ratio to the TLS socket."""
    cells = {
        "smpc mesh, mutual TLS": smpc_seconds(True, repeats),
        "smpc mesh, plaintext": smpc_seconds(False, repeats),
        "TLS socket": socket_seconds(True, repeats),
        "TCP socket": socket_seconds(False, repeats),
    }
    tls_rate = SIZE / cells["TLS socket"]
    return [{"path": k, "seconds": v, "mb_s": SIZE / v / 1e6,
             "vs_tls_socket": SIZE / v / tls_rate} for k, v in cells.items()]
