"""Protocols run by real party processes in the tests (`--run tests.party_checks:NAME`).

Each returns a Report whose rows say which communicator behaviour held.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import torch

from protocols.session import Report, Session


def _row(report: Report, op: str, ok: bool, **extra: Any) -> None:
    report.rows.append({"op": op, "ok": bool(ok), "max_error": 0.0, "tolerance": 0.0,
                        "seconds": 0.0, **extra})


def communicator(session: Session) -> Report:
    """Every Communicator call CrypTen makes, checked against what it must return."""
    import crypten
    from torch.distributed import ReduceOp

    comm = crypten.communicator.get()
    r, n = comm.get_rank(), comm.get_world_size()
    rep = Report()
    _row(rep, "rank/world/name", r == session.rank and n == len(session.parties)
         and comm.get_name() == session.name)
    before = comm.get_communication_stats()

    nxt, prv = (r + 1) % n, (r - 1) % n
    comm.send(torch.tensor([r, -r - 7], dtype=torch.long), nxt)
    got = comm.recv(torch.zeros(2, dtype=torch.long), prv)
    _row(rep, "send/recv", got.tolist() == [prv, -prv - 7])

    buf = torch.zeros(3)
    req = comm.irecv(buf, src=prv)
    comm.isend(torch.tensor([r, 0.5, -1.25]), nxt).wait()
    req.wait()
    _row(rep, "isend/irecv", buf.tolist() == [prv, 0.5, -1.25])

    src = n - 1
    parts = [torch.full((2, 2), 10 * i - 3, dtype=torch.long) for i in range(n)]
    mine = comm.scatter(parts if r == src else None, src, size=(2, 2))
    _row(rep, "scatter", torch.equal(mine, parts[r]))

    x = torch.tensor([r + 1, -(r + 1)], dtype=torch.long)
    total = n * (n + 1) // 2
    red = comm.reduce(x, 0)
    _row(rep, "reduce", (red.tolist() == [total, -total]) if r == 0 else red is None)
    red_b = comm.reduce([x, 2 * x], 0, batched=True)
    _row(rep, "reduce batched", (red_b[1].tolist() == [2 * total, -2 * total])
         if r == 0 else red_b is None)
    bits = torch.tensor([1 << r, (1 << 62) | r], dtype=torch.long)
    expect_xor = [sum(1 << i for i in range(n)), (1 << 62 if n % 2 else 0) ^ _xor_range(n)]
    red_x = comm.reduce(bits, 0, op=ReduceOp.BXOR)
    _row(rep, "reduce BXOR", (red_x.tolist() == expect_xor) if r == 0 else red_x is None)

    ar = comm.all_reduce(x)
    _row(rep, "all_reduce", ar.tolist() == [total, -total])
    ar_b = comm.all_reduce([x, x.reshape(2, 1) * 3], batched=True)
    _row(rep, "all_reduce batched", ar_b[0].tolist() == [total, -total]
         and ar_b[1].tolist() == [[3 * total], [-3 * total]])
    ax = comm.all_reduce(bits, op=ReduceOp.BXOR)
    _row(rep, "all_reduce BXOR", ax.tolist() == expect_xor)
    ax_b = comm.all_reduce([bits, bits[:1]], op=ReduceOp.BXOR, batched=True)
    _row(rep, "all_reduce BXOR batched", ax_b[0].tolist() == expect_xor
         and ax_b[1].tolist() == expect_xor[:1])
    mixed = comm.all_reduce([bits, x], op=[ReduceOp.BXOR, ReduceOp.SUM], batched=True)
    _row(rep, "all_reduce mixed ops", mixed[0].tolist() == expect_xor
         and mixed[1].tolist() == [total, -total])

    g = comm.gather(x, 1)
    _row(rep, "gather", [t.tolist() for t in g] == [[i + 1, -(i + 1)] for i in range(n)]
         if r == 1 else g == [None])
    ag = comm.all_gather(x)
    _row(rep, "all_gather", [t.tolist() for t in ag] == [[i + 1, -(i + 1)] for i in range(n)])

    b = torch.tensor([3.5, -2.0]) if r == 1 else torch.zeros(2)
    comm.broadcast(b, 1)
    _row(rep, "broadcast", b.tolist() == [3.5, -2.0])
    bb = [torch.full((2,), 9) if r == 0 else torch.zeros(2, dtype=torch.long),
          torch.full((1, 3), -4) if r == 0 else torch.zeros(1, 3, dtype=torch.long)]
    comm.broadcast(bb, 0, batched=True)
    _row(rep, "broadcast batched", bb[0].tolist() == [9, 9] and bb[1].tolist() == [[-4] * 3])

    comm.barrier()
    _row(rep, "barrier", True)

    obj = {"size": torch.Size([2, 3]), "t": (1, -2.5, None, "x", b"\x00\xff"),
           "tensor": torch.tensor([-1, 2]), 7: [True, False]}
    if r == 0:
        comm.send_obj(obj, 1)
    if r == 1:
        o = comm.recv_obj(0)
        _row(rep, "send_obj/recv_obj", o["size"] == obj["size"] and o["t"] == obj["t"]
             and torch.equal(o["tensor"], obj["tensor"]) and o[7] == [True, False])
    bo = comm.broadcast_obj(obj if r == n - 1 else None, n - 1)
    _row(rep, "broadcast_obj", bo["t"] == obj["t"] and bo["size"] == obj["size"])

    after = comm.get_communication_stats()
    _row(rep, "stats count real bytes and rounds",
         after["rounds"] > before["rounds"] and after["bytes_sent"] > before["bytes_sent"]
         and after["bytes_received"] > before["bytes_received"],
         stats=after)
    return rep


def _xor_range(n: int) -> int:
    out = 0
    for i in range(n):
        out ^= i
    return out


def big_tensor(session: Session) -> Report:
    """A 64 MiB tensor from party 0 to party 1 and back, compared by digest."""
    import crypten

    comm = crypten.communicator.get()
    rep = Report()
    g = torch.Generator().manual_seed(session.public_seed)
    t = torch.randint(-(2**63), 2**63 - 1, (8 * 1024 * 1024,), generator=g, dtype=torch.long)
    digest = hashlib.sha256(t.numpy().tobytes()).hexdigest()
    if comm.get_rank() == 0:
        tic = time.perf_counter()
        comm.send(t, 1)
        back = comm.recv(torch.empty_like(t), 1)
        seconds = time.perf_counter() - tic
        _row(rep, "64 MiB round trip", hashlib.sha256(back.numpy().tobytes()).hexdigest()
             == digest, seconds=seconds)
    elif comm.get_rank() == 1:
        got = comm.recv(torch.empty_like(t), 0)
        _row(rep, "64 MiB received intact",
             hashlib.sha256(got.numpy().tobytes()).hexdigest() == digest)
        comm.send(got, 0)
    return rep


def die_midway(session: Session) -> Report:
    """The last party dies (as if killed) after one secure op; the others keep computing."""
    import crypten

    x = crypten.cryptensor(torch.ones(4), src=0)
    (x * x).get_plain_text()
    if session.rank == session.world_size - 1:
        os._exit(9)
    for _ in range(1000):
        (x * x).get_plain_text()
    return Report()


def silent(session: Session) -> Report:
    """The last party stops talking (alive, connected, silent); the others wait on it."""
    import crypten

    x = crypten.cryptensor(torch.ones(4), src=0)
    if session.rank == session.world_size - 1:
        time.sleep(120)
    (x * x).get_plain_text()
    return Report()
