"""A party's randomness: ChaCha20 streams for secrets, a coin-tossed seed for public draws.

* :func:`exchange_stream_keys`: every party draws a 256-bit key and sends it to
  its next neighbour, so each adjacent pair shares one key; with a private
  third key these give the "prev", "next" and "local" ChaCha20 streams CrypTen
  draws its pseudo-random zero sharings (PRZS) and local secrets from.
* :func:`random_bits`: uniform k-bit draws from such a stream.
* :func:`joint_seed`: a 256-bit public seed for the run from a commit-then-reveal
  coin toss among the parties [Blum81], for shuffles, dropout and sampling;
  :func:`public_generator` turns it into a torch generator (public: a Mersenne
  Twister is fine there).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from parties.engine.correlated import SEED_BYTES, Stream, bits, ring


class CoinTossError(RuntimeError):
    """A party's revealed coin does not match its commitment (or is malformed)."""


@dataclass
class PartyStreams:
    """The secret streams of one party: shared with the previous and next party, and its own."""

    prev: Stream
    next: Stream
    local: Stream


def exchange_stream_keys(communicator: Any) -> PartyStreams:
    """Send a fresh 256-bit key to the next party, receive the previous party's: one round.

    Party i's "next" stream and party i+1's "prev" stream share a key, so
    prev_i - next_i summed over all parties is zero: the pairwise zero sharing
    CrypTen's PRZS relies on. Keys come from `secrets`; "local" is this party's alone.
    """
    rank, n = communicator.get_rank(), communicator.get_world_size()
    mine = secrets.token_bytes(SEED_BYTES)
    if n < 2:
        prev = mine
    else:
        sent = communicator.isend(torch.frombuffer(bytearray(mine), dtype=torch.uint8),
                                  (rank + 1) % n)
        got = torch.zeros(SEED_BYTES, dtype=torch.uint8)
        pending = communicator.irecv(got, src=(rank - 1) % n)
        sent.wait()
        pending.wait()
        prev = got.numpy().tobytes()
    return PartyStreams(prev=Stream(prev), next=Stream(mine),
                        local=Stream(secrets.token_bytes(SEED_BYTES)))


def random_bits(stream: Stream, size: Sequence[int], bitlength: int) -> torch.Tensor:
    """Uniform `bitlength`-bit non-negative integers (int64) from `stream` (1 to 64 bits)."""
    if not 1 <= bitlength <= 64:
        raise ValueError(f"random draws have 1 to 64 bits, not {bitlength}")
    if bitlength == 64:
        return ring(stream, size)
    if bitlength == 1:
        return bits(stream, size)
    if bitlength <= 8:
        raw = stream.fill(torch.empty(tuple(size), dtype=torch.uint8))
        return (raw & ((1 << bitlength) - 1)).long()
    return ring(stream, size) & ((1 << bitlength) - 1)


def _party_name(communicator: Any, rank: int) -> str:
    parties = getattr(communicator, "parties", None)
    return f"party '{parties[rank]}'" if parties else f"the party of rank {rank}"


def joint_seed(communicator: Any) -> bytes:
    """A 32-byte public seed no party could choose: commit-then-reveal coin toss [Blum81].

    Each party draws 32 random bytes v_i, all parties all_gather the
    commitments sha256(v_i), then the values; a value that does not match its
    commitment is an error naming the party. The seed is sha256(v_0 || ... ||
    v_{n-1}) in rank order: uniform as long as one party's v_i is. Two rounds.
    """
    value = secrets.token_bytes(SEED_BYTES)
    commitments = communicator.all_gather(_as_tensor(hashlib.sha256(value).digest()))
    values = communicator.all_gather(_as_tensor(value))
    opened = []
    for rank, (commitment, v) in enumerate(zip(commitments, values, strict=True)):
        raw = _as_bytes(v)
        if raw is None or len(raw) != SEED_BYTES or _as_bytes(commitment) is None:
            raise CoinTossError(f"{_party_name(communicator, rank)} sent a malformed coin "
                                "for the joint seed")
        if hashlib.sha256(raw).digest() != _as_bytes(commitment):
            raise CoinTossError(f"{_party_name(communicator, rank)} revealed a coin that does "
                                "not match its commitment (joint seed)")
        opened.append(raw)
    return hashlib.sha256(b"".join(opened)).digest()


def public_generator(seed: bytes, purpose: str = "crypten-global") -> torch.Generator:
    """A torch generator every party seeds the same way from the joint seed and `purpose`."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ValueError(f"a joint seed is {SEED_BYTES} bytes")
    digest = hashlib.sha256(seed + b"|" + purpose.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _as_tensor(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _as_bytes(t: Any) -> bytes | None:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
        return None
    return t.numpy().tobytes()
