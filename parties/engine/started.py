"""The parties started in this process, and what CrypTen's globals give the calling thread.

A process normally runs one party; the in-process tests run several, one per
thread. `PARTIES` maps threads to their :class:`Party` (communicator,
provider, random streams, public generator); parties/engine/context.py points
CrypTen's globals at it, so `crypten.communicator.get()` and the rest return
the calling thread's (or the only) party's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from parties.engine.randomness import PartyStreams, public_generator


class NotStarted(RuntimeError):
    """CrypTen was used where no party is started."""


@dataclass
class Party:
    """One started party: what CrypTen's globals return while its thread runs."""

    communicator: Any
    provider: Any
    refuse_openings: bool
    streams: PartyStreams | None = None
    public: dict[torch.device, torch.Generator] = field(default_factory=dict)
    public_seed: bytes | None = None


class Parties:
    """The parties started in this process, by thread (one, except in the tests)."""

    def __init__(self) -> None:
        self._by_thread: dict[int, Party] = {}
        self._lock = threading.Lock()

    def add(self, party: Party) -> None:
        with self._lock:
            self._by_thread[threading.get_ident()] = party

    def remove(self) -> None:
        """Forget this thread's party (or the only one, when started in another thread)."""
        with self._lock:
            me = threading.get_ident()
            if me in self._by_thread:
                del self._by_thread[me]
            elif len(self._by_thread) == 1:
                self._by_thread.clear()

    def find(self) -> Party | None:
        """This thread's party, or the only party of the process, or None."""
        got = self._by_thread.get(threading.get_ident())
        if got is None and len(self._by_thread) == 1:
            got = next(iter(self._by_thread.values()), None)
        return got

    def current(self) -> Party:
        got = self.find()
        if got is not None:
            return got
        if not self._by_thread:
            raise NotStarted("no party is started in this process: call "
                             "parties.engine.context.start_party() first")
        raise NotStarted("several parties run in this process and this thread is none of them")

    def __bool__(self) -> bool:
        return bool(self._by_thread)


PARTIES = Parties()
"""The registry every CrypTen global installed by context.py reads."""


class SameForEveryDevice:
    """A generator mapping that gives one ChaCha20 stream for any device."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __getitem__(self, device: Any) -> Any:
        return self._stream


class PublicGenerators:
    """The party's public generators by device, seeded from the joint seed."""

    def __init__(self, party: Party) -> None:
        self._party = party

    def __getitem__(self, device: Any) -> torch.Generator:
        party = self._party
        if party.public_seed is None:
            raise NotStarted("CrypTen's public generator is not seeded: call "
                             "use_public_seed(joint_seed(communicator)) after start_party")
        device = torch.device("cpu" if device is None else device)
        if device not in party.public:
            g = public_generator(party.public_seed)
            party.public[device] = g if device.type == "cpu" else \
                torch.Generator(device=device).manual_seed(g.initial_seed())
        return party.public[device]


class Generators:
    """`crypten.generators` for the calling thread's party: prev, next, local (ChaCha20), global."""

    def keys(self) -> tuple[str, ...]:
        return ("prev", "next", "local", "global")

    def __getitem__(self, key: str) -> Any:
        party = PARTIES.current()
        if key == "global":
            return PublicGenerators(party)
        if party.streams is None:
            raise NotStarted("the party's random streams are not set up yet (start_party)")
        return SameForEveryDevice(getattr(party.streams, key))
