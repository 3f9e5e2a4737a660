"""Private set intersection of 2 to 8 parties: N-party Diffie-Hellman PSI over ristretto255.

The construction is Meadows' and Huberman-Franklin-Hogg's [Meadows86, HFH99]: an identifier x
becomes the group element H(x) = ristretto255_from_hash(SHA-512(salt || x)); each party
i raises every element it handles to its own secret scalar k_i; scalar multiplication
commutes, so x ends, whoever held it, as the same fully blinded F(x) = k_1 ... k_N H(x),
and equal F values are equal identifiers. Without every k_i, F(x) looks random to every
party (decisional Diffie-Hellman in the prime-order group ristretto255 [Hamburg15]).

The N-party flow (`intersect`) adds who sees what:

1. Every party hashes its identifiers in a secret order (a permutation from `secrets`),
   blinds them with its key and passes them along a chain: first the other non-leaders,
   then the **leader**, who applies the last key. Every party thus multiplies every
   set once: |S_own| hashes and sum_j |S_j| scalar multiplications per party.
2. The leader's own set goes along the non-leaders; the last of them permutes the fully
   blinded values (a secret permutation) before returning them, so the leader holds
   F of every set but cannot map its own F values back to its own rows.
3. The leader intersects the F sets, sorts the intersection (the order of the blinded
   identifiers) and tells each party, for each element it sent, its rank in that order
   or -1; the last non-leader un-permutes the leader's ranks.

What each party learns: every set's size, which of its own rows are in the intersection
and their rank in the order of the blinded identifiers. Non-leaders see no fully blinded
value of their own. The leader also sees every set's fully blinded values (unlinked to any
row), hence the size of every partial intersection (as SecretFlow's three-party ECDH-PSI
tells its parties the size of the first two sets' intersection). Semi-honest parties that
do not collude; a party that colludes with the leader learns partial intersections.

Group operations are pure functions on bytes (libsodium through `rbcl`); the flow talks
through an `exchange(outgoing, sources)` callable for public (here: blinded) tensors, so
it runs on a Session (`session.exchange`) or on any in-memory stand-in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rbcl
import torch

POINT_BYTES = 32  # a ristretto255 element, encoded
CHUNK = 1 << 12  # elements per message on the wire (128 KiB): sets stream through the chain
DOMAIN = b"smpc/psi/v1"

Exchange = Callable[[dict[str, torch.Tensor], list[str]], dict[str, torch.Tensor]]


class PsiError(RuntimeError):
    """A peer sent something that is not a blinded set of the agreed size."""


# ---------------------------------------------------------------- group operations

def new_key() -> bytes:
    """A party's secret scalar: 64 bytes from `secrets`, reduced mod the group order
    (uniform, and never 0 in practice: probability 2**-252)."""
    return rbcl.crypto_core_ristretto255_scalar_reduce(secrets.token_bytes(64))


def salt_for(seed: bytes, purpose: str) -> bytes:
    """The run's identifier salt: SHA-256 of the joint seed and a purpose. The seed is the
    parties' coin toss, fresh per run and consortium, so two consortia (or two runs) hash
    the same identifier to unrelated elements and cannot link their outputs."""
    return hashlib.sha256(DOMAIN + b"|salt|" + seed + b"|" + purpose.encode()).digest()


def hash_to_group(identifiers: Sequence[str], salt: bytes) -> list[bytes]:
    """H(x) = ristretto255_from_hash(SHA-512(domain || salt || x)) for each identifier
    (libsodium's Elligator 2 map of a 64-byte hash [RFC 9496 section 4.3.4])."""
    prefix = hashlib.sha512(DOMAIN + b"|id|" + salt)
    from_hash = rbcl.crypto_core_ristretto255_from_hash
    out = []
    for x in identifiers:
        h = prefix.copy()
        h.update(x.encode())
        out.append(from_hash(h.digest()))
    return out


def blind(points: Sequence[bytes], key: bytes) -> list[bytes]:
    """key * P for each point P: one scalar multiplication each [Meadows86]. Raises PsiError
    for bytes that are not a valid encoded element."""
    mult = rbcl.crypto_scalarmult_ristretto255
    try:
        return [mult(key, p) for p in points]
    except (RuntimeError, ValueError, TypeError):
        raise PsiError("not a valid ristretto255 element") from None


def pack(points: Sequence[bytes]) -> torch.Tensor:
    """Points as one uint8 tensor (n, 32), for the wire."""
    if not points:
        return torch.empty(0, POINT_BYTES, dtype=torch.uint8)
    flat = np.frombuffer(b"".join(points), dtype=np.uint8)
    return torch.from_numpy(flat.copy()).reshape(-1, POINT_BYTES)


def unpack(tensor: torch.Tensor, count: int, sender: str) -> list[bytes]:
    """The points of a received (count, 32) uint8 tensor; PsiError names the sender."""
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8 \
            or tuple(tensor.shape) != (count, POINT_BYTES):
        raise PsiError(f"party '{sender}' sent {_what(tensor)}, not {count} blinded "
                       "identifiers")
    raw = tensor.contiguous().numpy().tobytes()
    return [raw[i:i + POINT_BYTES] for i in range(0, len(raw), POINT_BYTES)]


def secret_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) drawn from `secrets` (sorting 64-bit keys
    from the OS generator; ties, probability n**2 / 2**65, only bias it negligibly)."""
    keys = np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64) if n else np.empty(0)
    return np.argsort(keys, kind="stable")


def ranks_in_intersection(sets: Sequence[Sequence[bytes]]) -> list[np.ndarray]:
    """For each set, each element's rank in the sorted intersection of all sets, or -1."""
    common = set(sets[0])
    for s in sets[1:]:
        common.intersection_update(s)
    rank = {v: i for i, v in enumerate(sorted(common))}
    return [np.fromiter((rank.get(v, -1) for v in s), dtype=np.int64, count=len(s))
            for s in sets]


def chunks(count: int, size: int = CHUNK) -> Iterator[slice]:
    """[start, end) slices of a set of `count` elements, as it is streamed."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


# ---------------------------------------------------------------- the N-party flow

@dataclass(frozen=True)
class Plan:
    """Who blinds which set in which order: public, derived from the party list."""

    parties: tuple[str, ...]
    leader: str

    @property
    def helpers(self) -> list[str]:
        """The non-leaders, in rank order."""
        return [p for p in self.parties if p != self.leader]

    def chain(self, owner: str) -> list[str]:
        """The parties that blind `owner`'s set, in order: the owner, then the other
        non-leaders cyclically, then the leader (a non-leader's set); the leader, then
        every non-leader (the leader's set)."""
        helpers = self.helpers
        if owner == self.leader:
            return [self.leader, *helpers]
        at = helpers.index(owner)
        return [*helpers[at:], *helpers[:at], self.leader]

    def jobs(self, me: str) -> list[tuple[int, str]]:
        """(hop, owner) of every blinding `me` does, in the order every party agrees on
        (by hop, then owner rank): each link then carries its messages in the order its
        receiver reads them, and a party never waits on a step that waits on it."""
        out = []
        for owner in self.parties:
            for hop, party in enumerate(self.chain(owner)):
                if party == me:
                    out.append((hop, owner))
        rank = {p: i for i, p in enumerate(self.parties)}
        return sorted(out, key=lambda j: (j[0], rank[j[1]]))


@dataclass
class Counts:
    """Group operations this party did (the benchmark's denominator)."""

    hashes: int = 0
    multiplications: int = 0


def intersect(exchange: Exchange, parties: Sequence[str], me: str, identifiers: Sequence[str],
              salt: bytes, leader: str, counts: Counts | None = None,
              chunk: int = CHUNK) -> np.ndarray:
    """Run the N-party PSI; return, for each of `identifiers` (in their order), its rank in
    the order of the blinded intersection, or -1 when some party lacks it.

    `exchange(outgoing, sources)` sends `outgoing[party]` to each party and returns one
    tensor from each of `sources`; every party calls `intersect` with the same `parties`,
    `salt` and `leader`. Identifiers must be distinct (the caller checks).
    """
    counts = counts if counts is not None else Counts()
    plan = Plan(tuple(parties), leader)
    if leader not in parties or me not in parties or len(plan.helpers) == 0:
        raise PsiError(f"PSI needs at least two parties, among them '{me}' and the leader "
                       f"'{leader}' (parties: {', '.join(parties)})")
    others = [p for p in parties if p != me]
    sizes = {me: len(identifiers)}
    sizes.update({p: int(t.item()) for p, t in exchange(  # set sizes are public
        {p: torch.tensor([len(identifiers)], dtype=torch.int64) for p in others},
        others).items()})
    key = new_key()
    order = secret_permutation(len(identifiers))  # the order this party sends its set in
    finals: dict[str, list[bytes]] = {}  # the leader: each non-leader's set, fully blinded
    hidden = np.empty(0, dtype=np.int64)  # the last non-leader: how it permuted the leader's
    for hop, owner in plan.jobs(me):
        chain = plan.chain(owner)
        last = hop == len(chain) - 1
        out: list[bytes] = []
        for part in chunks(sizes[owner], chunk):
            if hop == 0:
                points = hash_to_group([identifiers[i] for i in order[part]], salt)
                counts.hashes += len(points)
            else:
                src = chain[hop - 1]
                points = unpack(exchange({}, [src])[src], part.stop - part.start, src)
            blinded = blind(points, key)  # k_me * (k_... H(x))  [HFH99]
            counts.multiplications += len(blinded)
            if last:
                out += blinded
            else:
                exchange({chain[hop + 1]: pack(blinded)}, [])
        if last and me == leader:
            finals[owner] = out  # the leader, at the end of a non-leader's chain
        elif last:  # the last non-leader: hide the leader's order, then return its set
            hidden = secret_permutation(len(out))
            shuffled = [out[i] for i in hidden]
            for part in chunks(len(shuffled), chunk):
                exchange({leader: pack(shuffled[part])}, [])
    if me == leader:
        return _lead(exchange, plan, sizes, finals, order, chunk)
    return _follow(exchange, plan, me, sizes, order, hidden)


def _lead(exchange: Exchange, plan: Plan, sizes: dict[str, int],
          finals: dict[str, list[bytes]], order: np.ndarray, chunk: int) -> np.ndarray:
    """The leader: receive its own set (permuted), rank the intersection, tell each party."""
    last = plan.helpers[-1]
    own: list[bytes] = []
    for part in chunks(sizes[plan.leader], chunk):
        own += unpack(exchange({}, [last])[last], part.stop - part.start, last)
    helpers = plan.helpers
    ranks = ranks_in_intersection([own, *(finals[p] for p in helpers)])
    exchange({p: torch.from_numpy(r) for p, r in zip(helpers, ranks[1:], strict=True)}, [])
    exchange({last: torch.from_numpy(ranks[0])}, [])  # in the last helper's permuted order
    mine = _ranks(exchange({}, [last])[last], sizes[plan.leader], last)
    return _unpermute(mine, order)


def _follow(exchange: Exchange, plan: Plan, me: str, sizes: dict[str, int],
            order: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """A non-leader: its ranks from the leader; the last one also un-permutes the leader's."""
    leader = plan.leader
    mine = _ranks(exchange({}, [leader])[leader], sizes[me], leader)
    if me == plan.helpers[-1]:
        theirs = _ranks(exchange({}, [leader])[leader], sizes[leader], leader)
        exchange({leader: torch.from_numpy(_unpermute(theirs, hidden))}, [])
    return _unpermute(mine, order)


def _ranks(tensor: torch.Tensor, count: int, sender: str) -> np.ndarray:
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.int64 \
            or tuple(tensor.shape) != (count,):
        raise PsiError(f"party '{sender}' sent {_what(tensor)}, not {count} ranks")
    return tensor.numpy().copy()


def _what(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _unpermute(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """values[k] belongs to element order[k]: put it back at order[k]."""
    out = np.empty_like(values)
    out[order] = values
    return out
