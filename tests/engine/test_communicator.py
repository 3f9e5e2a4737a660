"""Every Communicator call CrypTen makes, between parties in threads over real loopback meshes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch.distributed import ReduceOp

from parties.engine.communicator import GrpcCommunicator
from tests.engine.harness import close, meshes, names, run_threads


def _run(n: int, fn: Callable[[GrpcCommunicator], Any], timeout: float = 60) -> list[Any]:
    """fn(communicator) on n parties at once; results in rank order."""
    parties = names(n)
    mesh = meshes(parties)
    comms = {p: GrpcCommunicator(mesh[p], parties) for p in parties}

    def abort(_: str, exc: BaseException) -> None:
        for m in mesh.values():
            m.abort(str(exc))

    try:
        got = run_threads({p: (lambda p=p: fn(comms[p])) for p in parties}, timeout, abort)
    except BaseException:
        abort("", RuntimeError("test failed"))
        raise
    close(mesh)
    return [got[p] for p in parties]


@pytest.fixture()
def verbose() -> Iterator[Callable[[bool], None]]:
    """Set CrypTen's communicator.verbose for the test; restored afterwards."""
    import crypten

    before = crypten.cfg.communicator.verbose

    def set_to(on: bool) -> None:
        crypten.cfg["communicator.verbose"] = on

    yield set_to
    set_to(before)


def _xor_range(n: int) -> int:
    out = 0
    for i in range(n):
        out ^= i
    return out


def _every_call(comm: GrpcCommunicator) -> None:
    r, n = comm.get_rank(), comm.get_world_size()
    assert comm.get_name() == f"p{r}"
    nxt, prv = (r + 1) % n, (r - 1) % n

    comm.send(torch.tensor([r, -r - 7], dtype=torch.long), nxt)
    assert comm.recv(torch.zeros(2, dtype=torch.long), prv).tolist() == [prv, -prv - 7]

    buf = torch.zeros(3)
    req = comm.irecv(buf, src=prv)
    comm.isend(torch.tensor([r, 0.5, -1.25]), nxt).wait()
    req.wait()
    assert buf.tolist() == [prv, 0.5, -1.25]

    parts = [torch.full((2, 2), 10 * i - 3, dtype=torch.long) for i in range(n)]
    assert torch.equal(comm.scatter(parts if r == n - 1 else None, n - 1, size=(2, 2)), parts[r])

    x = torch.tensor([r + 1, -(r + 1)], dtype=torch.long)
    total = n * (n + 1) // 2
    red = comm.reduce(x, 0)
    assert red.tolist() == [total, -total] if r == 0 else red is None
    red_b = comm.reduce([x, 2 * x], 0, batched=True)
    assert red_b[1].tolist() == [2 * total, -2 * total] if r == 0 else red_b is None
    bits = torch.tensor([1 << r, (1 << 62) | r], dtype=torch.long)
    expect_xor = [sum(1 << i for i in range(n)), (1 << 62 if n % 2 else 0) ^ _xor_range(n)]
    red_x = comm.reduce(bits, 0, op=ReduceOp.BXOR)
    assert red_x.tolist() == expect_xor if r == 0 else red_x is None

    assert comm.all_reduce(x).tolist() == [total, -total]
    both = comm.all_reduce([x, x.reshape(2, 1) * 3], batched=True)
    assert both[0].tolist() == [total, -total] and both[1].tolist() == [[3 * total], [-3 * total]]
    assert comm.all_reduce(bits, op=ReduceOp.BXOR).tolist() == expect_xor
    xb = comm.all_reduce([bits, bits[:1]], op=ReduceOp.BXOR, batched=True)
    assert xb[0].tolist() == expect_xor and xb[1].tolist() == expect_xor[:1]
    mixed = comm.all_reduce([bits, x], op=[ReduceOp.BXOR, ReduceOp.SUM], batched=True)
    assert mixed[0].tolist() == expect_xor and mixed[1].tolist() == [total, -total]

    g = comm.gather(x, 1)
    assert [t.tolist() for t in g] == [[i + 1, -(i + 1)] for i in range(n)] if r == 1 \
        else g == [None]
    assert [t.tolist() for t in comm.all_gather(x)] == [[i + 1, -(i + 1)] for i in range(n)]

    b = torch.tensor([3.5, -2.0]) if r == 1 else torch.zeros(2)
    comm.broadcast(b, 1)
    assert b.tolist() == [3.5, -2.0]
    bb = [torch.full((2,), 9) if r == 0 else torch.zeros(2, dtype=torch.long),
          torch.full((1, 3), -4) if r == 0 else torch.zeros(1, 3, dtype=torch.long)]
    comm.broadcast(bb, 0, batched=True)
    assert bb[0].tolist() == [9, 9] and bb[1].tolist() == [[-4] * 3]

    comm.barrier()

    obj = {"size": torch.Size([2, 3]), "t": (1, -2.5, None, "x", b"\x00\xff"),
           "tensor": torch.tensor([-1, 2]), 7: [True, False]}
    if r == 0:
        comm.send_obj(obj, 1)
    if r == 1:
        o = comm.recv_obj(0)
        assert o["size"] == obj["size"] and o["t"] == obj["t"] and o[7] == [True, False]
        assert torch.equal(o["tensor"], obj["tensor"])
    got = comm.broadcast_obj(obj if r == n - 1 else None, n - 1)
    assert got["t"] == obj["t"] and got["size"] == obj["size"]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_every_communicator_call(n: int, verbose: Callable[[bool], None]) -> None:
    verbose(True)

    def check(comm: GrpcCommunicator) -> dict[str, Any]:
        _every_call(comm)
        return comm.get_communication_stats()

    for rank, stats in enumerate(_run(n, check)):
        assert stats["rounds"] == 19 + (rank < 2)  # one per call (send_obj/recv_obj: 0 and 1)
        assert stats["bytes"] > 0
        assert stats["bytes_sent"] > 0 and stats["bytes_received"] > 0


def test_results_are_copies_of_the_inputs() -> None:
    """all_gather, gather and scatter never hand back the caller's own tensor object."""
    def check(comm: GrpcCommunicator) -> None:
        r = comm.get_rank()
        mine = torch.tensor([r, r], dtype=torch.long)
        gathered = comm.all_gather(mine)
        at_one = comm.gather(mine, 1)
        parts = [torch.full((2,), 10 * i) for i in range(3)]
        scattered = comm.scatter(parts if r == 0 else None, 0)
        mine.add_(100)  # later in-place changes of the inputs
        parts[0].add_(100)
        assert gathered[r].tolist() == [r, r]
        if r == 1:
            assert at_one[1].tolist() == [1, 1]
        assert scattered.tolist() == [10 * r, 10 * r]

    _run(3, check)


def test_statistics_follow_crypten_verbose(verbose: Callable[[bool], None]) -> None:
    """CrypTen's rounds, element bytes and time only with verbose on; wire bytes always."""
    n = 3

    def check(comm: GrpcCommunicator) -> list[dict[str, Any]]:
        out = []
        for on in (False, True):
            comm.barrier()
            verbose(on)  # every party sets the same value
            comm.barrier()
            comm.reset_communication_stats()
            comm.all_reduce(torch.zeros(10, dtype=torch.long))
            comm.all_gather(torch.zeros(5, dtype=torch.long))
            comm.broadcast(torch.zeros(4, dtype=torch.long), 0)
            out.append(comm.get_communication_stats() | {"comm_bytes": comm.comm_bytes})
        return out

    for rank, (off, on) in enumerate(_run(n, check)):
        assert off["rounds"] == 0 and off["bytes"] == 0 and off["time"] == 0
        assert off["bytes_sent"] > 0 and off["bytes_received"] > 0  # the real bytes still count
        assert on["rounds"] == 3
        broadcast = 4 * (n - 1) if rank == 0 else 4
        assert on["bytes"] == on["comm_bytes"] == 8 * (2 * 10 + 2 * (n - 1) * 5 + broadcast)
        assert on["time"] > 0


def test_64_mib_tensor_intact() -> None:
    g = torch.Generator().manual_seed(5)
    t = torch.randint(-(2**63), 2**63 - 1, (8 * 1024 * 1024,), generator=g, dtype=torch.long)
    digest = hashlib.sha256(t.numpy().tobytes()).hexdigest()

    def check(comm: GrpcCommunicator) -> tuple[str, dict[str, Any]]:
        if comm.get_rank() == 0:
            comm.send(t, 1)
            back = comm.recv(torch.empty_like(t), 1)
        else:
            back = comm.recv(torch.empty_like(t), 0)
            comm.send(back, 0)
        return hashlib.sha256(back.numpy().tobytes()).hexdigest(), \
            comm.get_communication_stats()

    for got, stats in _run(2, check):
        assert got == digest
        assert stats["bytes_sent"] > 64 * 2**20
