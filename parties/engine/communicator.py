"""CrypTen's Communicator interface, implemented over the gRPC mesh.

Every collective is built from tagged point-to-point messages, so no call can
be matched with another's payload. Reductions are done locally after one
all-to-all (or all-to-one) exchange: one round each. The statistics keep
CrypTen's figures (rounds, element bytes, time; only while
`cfg.communicator.verbose` is on) and, always, the bytes gRPC actually
carried (frames with their headers).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from parties.engine.compat import load_crypten, reduce_ops
from parties.wire.transport import Mesh

_crypten = load_crypten()
_Base: Any = _crypten.communicator.Communicator


class _Done:
    """Request object for sends: already queued."""

    def wait(self) -> None:
        return None

    def is_completed(self) -> bool:
        return True


class _PendingRecv:
    """Request object for irecv: fills the caller's tensor in place on wait()."""

    def __init__(self, comm: GrpcCommunicator, tensor: torch.Tensor, src: str, tag: int) -> None:
        self._comm, self._tensor, self._src, self._tag = comm, tensor, src, tag
        self._done = False

    def wait(self) -> None:
        if not self._done:
            got = self._comm.mesh.recv(self._src, tag=self._tag)
            self._tensor.copy_(got.reshape(self._tensor.shape))
            self._done = True

    def is_completed(self) -> bool:
        return self._done


class GrpcCommunicator(_Base):
    """One party's view of the MPC world: ranks 0..n-1 are `parties` in order.

    Results never alias the caller's tensors (all_gather, gather and scatter
    return copies, as CrypTen's own communicator does). Statistics follow
    CrypTen's contract: with `cfg.communicator.verbose` on (start_party turns it
    on), every call counts one round, CrypTen's element accounting (8 bytes per
    element sent or received, `comm_bytes`) and its time; with it off, none of
    them. The real framed bytes on the wire (`bytes_sent`, `bytes_received`)
    come from the mesh and are always kept.
    """

    BYTES_PER_ELEMENT = 8

    def __init__(self, mesh: Mesh, parties: Sequence[str]) -> None:
        self.mesh = mesh
        self.parties = list(parties)
        self.rank = self.parties.index(mesh.me)
        self.world_size = len(self.parties)
        self._name = mesh.me
        self.reset_communication_stats()

    # ------------------------------------------------------------ identity
    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world_size

    def set_name(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"party name must be a string, got {type(name).__name__}")
        self._name = name

    def get_name(self) -> str:
        return self._name

    @classmethod
    def is_initialized(cls) -> bool:
        return True

    # ------------------------------------------------------------ stats
    def reset_communication_stats(self) -> None:
        self.comm_rounds = 0
        self.comm_bytes = 0
        self.comm_time = 0.0
        self._base = self.mesh.stats()

    def get_communication_stats(self) -> dict[str, Any]:
        """rounds, bytes (CrypTen's element accounting), time; bytes_sent/received (real)."""
        now = self.mesh.stats()
        return {
            "rounds": self.comm_rounds,
            "bytes": self.comm_bytes,
            "time": self.comm_time,
            "bytes_sent": now["bytes_sent"] - self._base["bytes_sent"],
            "bytes_received": now["bytes_received"] - self._base["bytes_received"],
        }

    def print_communication_stats(self) -> None:
        s = self.get_communication_stats()
        print(f"[{self._name}] rounds={s['rounds']} bytes={s['bytes']:.0f} (CrypTen's count) "
              f"bytes_sent={s['bytes_sent']} bytes_received={s['bytes_received']} (on the "
              f"wire) time={s['time']:.3f}s")

    def _round(self, elements: float, fn: Callable[[], Any] | None = None) -> Any:
        """Run `fn` (if any) as one round; with verbose on, count it, its elements and time."""
        if not _verbose():
            return fn() if fn is not None else None
        tic = time.perf_counter()
        try:
            return fn() if fn is not None else None
        finally:
            self.comm_time += time.perf_counter() - tic
            self.comm_rounds += 1
            self.comm_bytes += elements * self.BYTES_PER_ELEMENT

    # ------------------------------------------------------------ helpers
    def _name_of(self, rank: int) -> str:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside 0..{self.world_size - 1}")
        return self.parties[rank]

    def _others(self) -> list[str]:
        return [p for p in self.parties if p != self.mesh.me]

    def _to_all(self, payload: Any) -> None:
        for p in self._others():
            self.mesh.send(p, payload)

    def _from_all(self) -> dict[str, Any]:
        return {p: self.mesh.recv(p) for p in self._others()}

    @staticmethod
    def _combine(op: Any, tensors: list[torch.Tensor]) -> torch.Tensor:
        total = tensors[0].clone()
        _, bxor = reduce_ops()
        for t in tensors[1:]:
            if op == bxor:
                total ^= t
            else:
                total += t
        return total

    def _ordered(self, mine: Any, got: dict[str, Any]) -> list[Any]:
        return [mine if p == self.mesh.me else got[p] for p in self.parties]

    # ------------------------------------------------------------ point to point
    def send(self, tensor: torch.Tensor, dst: int) -> None:
        self.mesh.send(self._name_of(dst), tensor)
        self._round(tensor.nelement())

    def recv(self, tensor: torch.Tensor, src: int | None = None) -> torch.Tensor:
        if src is None:
            raise ValueError("recv needs a source rank (receives are matched by sender and tag)")
        got = self._round(tensor.nelement(), lambda: self.mesh.recv(self._name_of(src)))
        out = got.reshape(tensor.shape)  # a new tensor, as CrypTen's recv returns
        return out if out.dtype == tensor.dtype else out.to(tensor.dtype)

    def isend(self, tensor: torch.Tensor, dst: int) -> _Done:
        self.mesh.send(self._name_of(dst), tensor)
        self._round(tensor.nelement())
        return _Done()

    def irecv(self, tensor: torch.Tensor, src: int | None = None) -> _PendingRecv:
        if src is None:
            raise ValueError("irecv needs a source rank")
        name = self._name_of(src)
        self._round(tensor.nelement())
        return _PendingRecv(self, tensor, name, self.mesh.next_recv_tag(name))

    def exchange(self, outgoing: dict[int, torch.Tensor], sources: Sequence[int]
                 ) -> dict[int, torch.Tensor]:
        """One round: send `outgoing[r]` to each rank r, receive one tensor from each `sources`."""
        if not outgoing and not sources:
            return {}

        def run() -> dict[int, torch.Tensor]:
            for r, t in outgoing.items():
                self.mesh.send(self._name_of(r), t)
            return {r: self.mesh.recv(self._name_of(r)) for r in sources}

        got: dict[int, torch.Tensor] = self._round(
            sum(t.nelement() for t in outgoing.values()), run)
        if _verbose():
            self.comm_bytes += sum(t.nelement() for t in got.values()) * self.BYTES_PER_ELEMENT
        return got

    # ------------------------------------------------------------ collectives
    def scatter(self, scatter_list: list[torch.Tensor], src: int, size: Any = None,
                device: Any = None) -> torch.Tensor:
        if self.rank == src:
            for r, p in enumerate(self.parties):
                if r != src:
                    self.mesh.send(p, scatter_list[r])
            self._round(sum(t.nelement() for r, t in enumerate(scatter_list) if r != src))
            return scatter_list[src].clone()
        got = self._round(0, lambda: self.mesh.recv(self._name_of(src)))
        if _verbose():
            self.comm_bytes += got.nelement() * self.BYTES_PER_ELEMENT
        return got

    def reduce(self, input: Any, dst: int, op: Any = None, batched: bool = False) -> Any:
        op = op if op is not None else reduce_ops()[0]
        items = list(input) if batched else [input]
        elements = sum(t.nelement() for t in items)
        if self.rank != dst:
            for t in items:
                self.mesh.send(self._name_of(dst), t)
            self._round(elements)
            return None

        def run() -> Any:
            got = {p: [self.mesh.recv(p) for _ in items] for p in self._others()}
            cols = self._ordered(items, got)
            out = [self._combine(op, [c[i] for c in cols]) for i in range(len(items))]
            return out if batched else out[0]

        return self._round(elements * (self.world_size - 1), run)

    def all_reduce(self, input: Any, op: Any = None, batched: bool = False) -> Any:
        """Sum (or XOR) every party's tensor; `batched`: a list in one message, `op` may
        then be a list with one op per tensor (one round opens sums and XORs together)."""
        op = op if op is not None else reduce_ops()[0]
        mine = list(input) if batched else [input]
        ops = op if isinstance(op, list | tuple) else [op] * len(mine)
        if len(ops) != len(mine):
            raise ValueError(f"all_reduce of {len(mine)} tensors got {len(ops)} ops")
        payload = mine[0] if len(mine) == 1 and not batched else _concat(mine)

        def run() -> Any:
            self._to_all(payload)
            got = self._from_all()
            if batched:
                got = {p: _unstack(v, mine) for p, v in got.items()}
                cols = self._ordered(mine, got)
                return [self._combine(ops[i], [c[i] for c in cols]) for i in range(len(mine))]
            return self._combine(op, self._ordered(input, got))

        return self._round(2 * sum(t.nelement() for t in mine), run)

    def gather(self, tensor: torch.Tensor, dst: int) -> list[torch.Tensor | None]:
        if self.rank != dst:
            self.mesh.send(self._name_of(dst), tensor)
            self._round(tensor.nelement())
            return [None]
        return self._round(tensor.nelement() * (self.world_size - 1),
                           lambda: self._ordered(tensor.clone(), self._from_all()))

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        def run() -> list[torch.Tensor]:
            self._to_all(tensor)
            return self._ordered(tensor.clone(), self._from_all())

        return self._round(2 * (self.world_size - 1) * tensor.nelement(), run)

    def broadcast(self, input: Any, src: int, group: Any = None, batched: bool = False) -> Any:
        items = list(input) if batched else [input]
        elements = sum(t.nelement() for t in items)
        if self.rank == src:
            for t in items:
                self._to_all(t)
            self._round(elements * (self.world_size - 1))
            return input
        name = self._name_of(src)

        def run() -> Any:
            for t in items:
                got = self.mesh.recv(name)
                t.data.copy_(got.reshape(t.shape))
            return input

        return self._round(elements, run)

    def barrier(self) -> None:
        def run() -> None:
            self._to_all(torch.zeros(0, dtype=torch.uint8))
            self._from_all()

        self._round(0, run)

    # ------------------------------------------------------------ objects
    def send_obj(self, obj: Any, dst: int, group: Any = None) -> None:
        self.mesh.send(self._name_of(dst), _Obj(obj).payload())
        self._round(sys.getsizeof(obj) / self.BYTES_PER_ELEMENT)

    def recv_obj(self, src: int, group: Any = None) -> Any:
        got = _Obj.unwrap(self._round(0, lambda: self.mesh.recv(self._name_of(src))))
        if _verbose():
            self.comm_bytes += sys.getsizeof(got)
        return got

    def broadcast_obj(self, obj: Any, src: int, group: Any = None) -> Any:
        if self.rank == src:
            if obj is None:
                raise ValueError("the source party must provide the object to broadcast")
            self._to_all(_Obj(obj).payload())
            self._round(sys.getsizeof(obj) / self.BYTES_PER_ELEMENT * (self.world_size - 1))
            return obj
        got = _Obj.unwrap(self._round(0, lambda: self.mesh.recv(self._name_of(src))))
        if _verbose():
            self.comm_bytes += sys.getsizeof(got)
        return got


def _verbose() -> bool:
    """CrypTen's switch for communication statistics (cfg.communicator.verbose)."""
    return bool(_crypten.cfg.communicator.verbose)


class _Obj:
    """Wraps objects so a tensor sent as an object stays distinguishable from a tensor."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def payload(self) -> dict[str, Any]:
        return {"obj": self.obj}

    @staticmethod
    def unwrap(got: Any) -> Any:
        if not isinstance(got, dict) or set(got) != {"obj"}:
            raise ValueError("expected an object message, got a tensor (parties out of step)")
        return got["obj"]


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate a batch into one flat tensor: one message per peer per round."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        raise TypeError(f"batched tensors must share a dtype, got {dtypes}")
    return torch.cat([t.reshape(-1) for t in tensors])


def _unstack(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, at = [], 0
    for t in like:
        n = t.numel()
        out.append(flat[at : at + n].reshape(t.shape))
        at += n
    if at != flat.numel():
        raise ValueError(f"batched message has {flat.numel()} elements, expected {at}")
    return out
