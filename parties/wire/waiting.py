"""Waiting notices: who waits on whom, so that every survivor names the party actually silent.

When a receive has waited `LinkOptions.notice_delay` seconds, the node tells
every peer "I wait on X, who waits on Y, ..." (a `Waiting` envelope carrying
that chain; an empty chain when the wait is over). A node reads the notices of
the peer it is itself waiting on (they arrive on the link it is reading), so
the chain grows backwards along the waits: if B waits on A and A waits on C,
A's notice says (C), B's says (A, C). When B's receive from A times out, B
names C, the end of A's chain, instead of A.

The chain this node tells is the peer it has waited on longest, followed by
that peer's own chain, cut where it would come back to this node or repeat a
name: a cycle of waits (a deadlock, not a silent party) ends at the direct
peer and stops changing, so notices never loop. A notice is sent only when
the chain changes. Notices carry party names only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence


def follow(me: str, peer: str, theirs: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Whom this node `me` waits on through `peer`: `peer` then `peer`'s told chain, cut
    before it reaches `me` or repeats a name."""
    chain = [peer]
    for name in theirs.get(peer, ()):
        if name == me or name in chain:
            break
        chain.append(name)
    return tuple(chain)


def check(sender: str, chain: Sequence[str], names: Sequence[str]) -> str | None:
    """Why a peer's waiting chain is malformed, or None."""
    if len(chain) >= len(names):
        return f"a waiting chain of {len(chain)} names among {len(names)} nodes"
    unknown = [n for n in chain if n not in names]
    if unknown:
        return f"a waiting chain naming unknown nodes {unknown[:3]}"
    if sender in chain or len(set(chain)) != len(chain):
        return "a waiting chain that repeats a name"
    return None


def story(chain: Sequence[str]) -> str:
    """'x' was waiting on it, 'a' on 'x' — who waited on the end of `chain` (len >= 2)."""
    parts = [f"'{chain[-2]}' was waiting on it"]
    parts += [f"'{chain[i]}' on '{chain[i + 1]}'" for i in range(len(chain) - 3, -1, -1)]
    return ", ".join(parts)


class WaitBoard:
    """This node's waits and its peers' notices; tells the peers when its chain changes.

    `tell(chain)` sends one Waiting notice to every peer; it is called with the
    board's lock held, so notices leave in the order they were decided.
    """

    def __init__(self, me: str, delay: float, tell: Callable[[tuple[str, ...]], None]) -> None:
        self.me = me
        self.delay = delay
        self._tell = tell
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}  # peer -> when the receive waiting on it began
        self._noticed: set[str] = set()  # waits long enough to be told
        self._theirs: dict[str, tuple[str, ...]] = {}  # peer -> the chain it told us
        self.told: tuple[str, ...] = ()
        self.notices = 0

    def begin(self, peer: str) -> None:
        """A receive from `peer` starts waiting."""
        with self._lock:
            self._since.setdefault(peer, time.monotonic())

    def end(self, peer: str) -> None:
        """The receive from `peer` is over (a payload, or an error)."""
        with self._lock:
            self._since.pop(peer, None)
            if peer in self._noticed:
                self._noticed.discard(peer)
                self._update()

    def tick(self, now: float) -> None:
        """Notice the waits that have lasted `delay` (called by the mesh's watchdog)."""
        with self._lock:
            due = [p for p, t in self._since.items()
                   if now - t >= self.delay and p not in self._noticed]
            if due:
                self._noticed.update(due)
                self._update()

    def heard(self, peer: str, chain: Sequence[str]) -> None:
        """`peer` told us whom it waits on (empty: nobody)."""
        with self._lock:
            self._theirs[peer] = tuple(chain)
            if peer in self._noticed:
                self._update()

    def forget(self, peer: str) -> None:
        """`peer`'s link was re-established: what it told before may be out of date."""
        with self._lock:
            self._theirs.pop(peer, None)

    def chain(self, peer: str) -> tuple[str, ...]:
        """Whom this node waits on through `peer` (at least `peer` itself)."""
        with self._lock:
            return follow(self.me, peer, self._theirs)

    def cyclic(self, peer: str) -> bool:
        """Whether `peer` told us it waits (through others) on this node: a cycle."""
        with self._lock:
            return self.me in self._theirs.get(peer, ())

    def _update(self) -> None:
        waits = sorted((t, p) for p, t in self._since.items() if p in self._noticed)
        mine = follow(self.me, waits[0][1], self._theirs) if waits else ()
        if mine != self.told:
            self.told = mine
            self.notices += 1
            self._tell(mine)
