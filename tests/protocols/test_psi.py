"""Private set intersection (protocols/blocks/psi.py): the group operations as pure functions,
and the N-party flow over real gRPC meshes (parties in threads, tests/engine/harness.py)
and, for up to 8 parties, over in-memory queues.

Every run checks that each party finds exactly its identifiers of the intersection, that
all parties rank them in the same order, and that nothing a party received holds another
party's identifier, raw or hashed but unblinded.
"""

from __future__ import annotations

import queue
import random
import threading
from typing import Any

import numpy as np
import pytest
import torch

from parties.engine.communicator import GrpcCommunicator
from parties.node.session import PartySession
from protocols.api import Params
from protocols.blocks import psi
from tests.engine import harness

SALT = bytes(range(32))


def _sets(n: int, size: int, common: int, seed: int) -> tuple[list[list[str]], set[str]]:
    """n sets of `size` identifiers sharing exactly `common` (and pairs sharing more)."""
    rng = random.Random(seed)
    shared = [f"both-{seed}-{k}" for k in range(common)]
    pairwise = [f"pair-{seed}-{k}" for k in range(size)]  # each set takes some of these
    sets = []
    for i in range(n):
        own = [f"own-{seed}-{i}-{k}" for k in range(size)]
        extra = rng.sample(pairwise, (size - common) // 2) if n > 2 and i < 2 else []
        mine = shared + extra + own[:size - common - len(extra)]
        rng.shuffle(mine)
        sets.append(mine)
    return sets, set(shared)


def _check(sets: list[list[str]], ranks: list[np.ndarray], common: set[str]) -> None:
    orders = []
    for ids, r in zip(sets, ranks, strict=True):
        assert r.shape == (len(ids),)
        assert {x for x, k in zip(ids, r, strict=True) if k >= 0} == common
        assert sorted(k for k in r.tolist() if k >= 0) == list(range(len(common)))
        orders.append([x for _, x in sorted((k, x) for x, k in zip(ids, r, strict=True)
                                            if k >= 0)])
    assert all(o == orders[0] for o in orders), "the parties' common orders differ"


def _leaks(received: list[torch.Tensor], others: list[str]) -> list[str]:
    """Another party's identifiers in what a party received: raw UTF-8 or H(x)."""
    blob = b"".join(t.contiguous().numpy().tobytes() for t in received)
    hashed = psi.hash_to_group(others, SALT)
    found = [x for x in others if x.encode() in blob]
    words = {blob[i:i + 32] for i in range(0, len(blob) - 31, 32)}
    return found + [x for x, h in zip(others, hashed, strict=True) if h in words]


# ---------------------------------------------------------------- pure functions

def test_blinding_commutes_and_inverts_nothing_it_should_not() -> None:
    points = psi.hash_to_group(["alice", "bob"], SALT)
    a, b = psi.new_key(), psi.new_key()
    assert psi.blind(psi.blind(points, a), b) == psi.blind(psi.blind(points, b), a)
    assert psi.blind(points, a) != psi.blind(points, b)
    assert psi.blind(points, a)[0] != points[0]


def test_hash_to_group_depends_on_identifier_and_salt() -> None:
    one = psi.hash_to_group(["alice", "alice", "bob"], SALT)
    assert one[0] == one[1] != one[2]
    assert psi.hash_to_group(["alice"], bytes(32))[0] != one[0]
    assert all(len(p) == psi.POINT_BYTES for p in one)


def test_keys_and_salts_are_fresh() -> None:
    assert len({psi.new_key() for _ in range(20)}) == 20
    assert psi.salt_for(b"seed-1", "psi:train") != psi.salt_for(b"seed-2", "psi:train")
    assert psi.salt_for(b"seed-1", "psi:train") != psi.salt_for(b"seed-1", "psi:test")


def test_invalid_elements_and_messages_are_refused() -> None:
    with pytest.raises(psi.PsiError, match="not a valid ristretto255 element"):
        psi.blind([b"\xff" * 32], psi.new_key())
    good = psi.pack(psi.hash_to_group(["a", "b"], SALT))
    assert psi.unpack(good, 2, "bank") == psi.hash_to_group(["a", "b"], SALT)
    with pytest.raises(psi.PsiError, match=r"party 'bank' sent .* not 3 blinded"):
        psi.unpack(good, 3, "bank")
    with pytest.raises(psi.PsiError, match="party 'bank' sent a dict"):
        psi.unpack({"x": 1}, 2, "bank")  # type: ignore[arg-type]


def test_secret_permutation_is_a_permutation() -> None:
    p, q = psi.secret_permutation(1000), psi.secret_permutation(1000)
    assert sorted(p.tolist()) == list(range(1000))
    assert p.tolist() != q.tolist()  # equal with probability 1/1000!
    assert psi.secret_permutation(0).tolist() == []


def test_ranks_follow_the_sorted_intersection() -> None:
    sets = [[b"c", b"a", b"x"], [b"a", b"y", b"c"], [b"c", b"a"]]
    ranks = psi.ranks_in_intersection(sets)
    assert [r.tolist() for r in ranks] == [[1, 0, -1], [0, -1, 1], [1, 0]]


@pytest.mark.parametrize("n", range(2, 9))
def test_every_link_carries_messages_in_the_order_they_are_read(n: int) -> None:
    parties = [f"p{i}" for i in range(n)]
    for leader in (parties[0], parties[-1]):
        plan = psi.Plan(tuple(parties), leader)
        sent: dict[tuple[str, str], list[str]] = {}
        read: dict[tuple[str, str], list[str]] = {}
        for me in parties:
            for hop, owner in plan.jobs(me):
                chain = plan.chain(owner)
                if hop > 0:
                    read.setdefault((chain[hop - 1], me), []).append(owner)
                if hop < len(chain) - 1:
                    sent.setdefault((me, chain[hop + 1]), []).append(owner)
        assert sent == read
        assert {owner for owner in parties} == {o for v in sent.values() for o in v}


# ---------------------------------------------------------------- the N-party flow

def _over_queues(sets: list[list[str]], leader: int, chunk: int
                 ) -> tuple[list[np.ndarray], list[list[torch.Tensor]]]:
    names = [f"p{i}" for i in range(len(sets))]
    links = {(a, b): queue.Queue() for a in names for b in names if a != b}
    received: list[list[torch.Tensor]] = [[] for _ in names]
    out: dict[int, Any] = {}

    def party(i: int) -> None:
        me = names[i]

        def exchange(outgoing: dict[str, torch.Tensor], sources: list[str]
                     ) -> dict[str, torch.Tensor]:
            for peer, t in outgoing.items():
                links[(me, peer)].put(t.clone())
            got = {s: links[(s, me)].get(timeout=60) for s in sources}
            received[i] += got.values()
            return got

        try:
            out[i] = psi.intersect(exchange, names, me, sets[i], SALT, names[leader],
                                   chunk=chunk)
        except BaseException as exc:  # reported by the assertion below
            out[i] = exc

    threads = [threading.Thread(target=party, args=(i,), daemon=True) for i in range(len(sets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(out.get(i), np.ndarray) for i in range(len(sets))), out
    return [out[i] for i in range(len(sets))], received


@pytest.mark.parametrize("n", [5, 8])
def test_psi_of_many_parties_in_memory(n: int) -> None:
    sets, common = _sets(n, 60, 17, seed=n)
    ranks, received = _over_queues(sets, leader=n // 2, chunk=16)
    _check(sets, ranks, common)
    for i in range(n):
        others = [x for j, s in enumerate(sets) if j != i for x in s if x not in sets[i]]
        assert not _leaks(received[i], others)


def _over_meshes(sets: list[list[str]], leader: int, chunk: int
                 ) -> tuple[list[np.ndarray], list[list[torch.Tensor]], list[psi.Counts]]:
    names = harness.names(len(sets))
    meshes = harness.meshes(names)
    received: list[list[torch.Tensor]] = [[] for _ in names]
    counts = [psi.Counts() for _ in names]

    def party(i: int) -> np.ndarray:
        comm = GrpcCommunicator(meshes[names[i]], names)
        session = PartySession(names[i], i, names, Params({}), b"seed", comm)

        def exchange(outgoing: dict[str, torch.Tensor], sources: list[str]
                     ) -> dict[str, torch.Tensor]:
            got = session.exchange(outgoing, sources)
            received[i] += got.values()
            return got

        return psi.intersect(exchange, names, names[i], sets[i], SALT, names[leader],
                             counts[i], chunk)

    try:
        done = harness.run_threads({n: (lambda i=i: party(i)) for i, n in enumerate(names)},
                                   timeout=120)
    finally:
        harness.close(meshes)
    return [done[n] for n in names], received, counts


@pytest.mark.parametrize(("n", "common", "leader"), [
    (2, 40, 0), (2, 0, 1), (2, 100, 0),    # some, empty and full overlap
    (3, 25, 2), (3, 0, 0), (3, 100, 1),
    (4, 30, 3), (4, 0, 2), (4, 100, 0),
])
def test_psi_over_the_mesh(n: int, common: int, leader: int) -> None:
    sets, truth = _sets(n, 100, common, seed=10 * n + common)
    ranks, received, counts = _over_meshes(sets, leader, chunk=32)
    _check(sets, ranks, truth)
    total = sum(len(s) for s in sets)
    for i in range(n):
        assert counts[i].hashes == len(sets[i]) and counts[i].multiplications == total
        others = [x for j, s in enumerate(sets) if j != i for x in s if x not in sets[i]]
        assert not _leaks(received[i], others), f"party {i} received another's identifier"
    # the check can fail: a received H(x) of another party's identifier is caught
    planted = psi.pack(psi.hash_to_group(sets[1][:1], SALT))
    assert _leaks([planted], sets[1][:1]) == sets[1][:1]


def test_sizes_may_differ_and_a_set_may_be_empty() -> None:
    sets = [["a", "b", "c", "d"], ["d", "b"], []]
    ranks, _, _ = _over_meshes(sets, leader=0, chunk=2)
    assert [r.tolist() for r in ranks] == [[-1, -1, -1, -1], [-1, -1], []]
    sets = [["a", "b", "c", "d"], ["d", "b"], ["b", "x", "d", "y", "z"]]
    ranks, _, _ = _over_meshes(sets, leader=1, chunk=2)
    _check(sets, ranks, {"b", "d"})
