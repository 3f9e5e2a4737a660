"""Dealer corrections sent ahead of need: training repeats the same requests every step.

Every draw of correlated randomness has a counter k (its position in the run,
the same on every party) and a descriptor d (kind and shapes). Each party's
shares for draw k come from a generator keyed by (its seed, k, d)
(`correlated.keyed_stream`), so a correction computed for a guess (k, d')
that turns out wrong is simply never used: it does not disturb any other draw.

The dealer keeps the line of requests party 0 made, learns which request
followed each run of `CONTEXT` requests, and when the line repeats it computes
the next `BATCH` corrections ahead and sends them in one message
(:class:`Predictor`). Party 0 (:class:`Prefetcher`) uses a prefetched
correction when its descriptor matches the request, asks for more while a
quarter of a batch is still unused, and falls back to asking for the one
request (with the dealer's next guesses attached) when nothing matches. A
training epoch then costs party 0 about one dealer message per `BATCH`
operations instead of one per operation, and no round waits for the dealer's
round trip.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import torch

BATCH = 64
"""Corrections the dealer computes ahead per message."""

GUESS_LIMIT = 1 << 16
"""Only requests this small (elements of input) are guessed. A large request
costs far more to compute than the dealer's round trip, and a wrong guess of
one would waste that work in the answer party 0 is waiting for."""

BUDGET = 1 << 20
"""At most this many input elements of guesses per answer."""

CONTEXT = 6
"""Requests of history that identify a position in a repeating sequence."""

CONTEXTS = 1 << 16
"""Contexts remembered before the dealer forgets and learns again."""


Entry = tuple[str, str, dict[str, Any]]  # (descriptor, kind, request)


class Predictor:
    """The dealer's line of requests: the last confirmed ones, then guesses.

    Memory stays bounded over any run: only the last `CONTEXT` confirmed
    requests are kept, and what followed each context (at most `CONTEXTS` of them).
    """

    def __init__(self) -> None:
        self.base = 0  # counter of line[0]
        self.line: list[Entry] = []
        self.confirmed = 0  # counters below this are what party 0 really asked for
        self.next_of: dict[tuple[str, ...], tuple[Entry, int]] = {}  # -> (next, times seen)

    @property
    def end(self) -> int:
        """The counter after the last request in the line (confirmed or guessed)."""
        return self.base + len(self.line)

    def entry(self, counter: int) -> Entry:
        return self.line[counter - self.base]

    def truncate(self, end: int) -> None:
        """Drop the guesses from counter `end` on."""
        del self.line[max(end, self.confirmed) - self.base:]

    def confirm(self, counter: int, entry: Entry) -> None:
        """Party 0 asked for `entry` at `counter`: guesses from there on are dropped."""
        if counter < self.confirmed or counter > self.end:
            raise ValueError(f"request {counter} out of order (confirmed up to "
                             f"{self.confirmed}, line up to {self.end})")
        del self.line[counter - self.base:]
        self.line.append(entry)
        if len(self.next_of) > CONTEXTS:
            self.next_of.clear()
        for i in range(max(self.confirmed, self.base + CONTEXT), counter + 1):
            context, nxt = self._context(i), self.entry(i)
            seen = self.next_of.get(context)
            times = seen[1] + 1 if seen is not None and seen[0][0] == nxt[0] else 1
            self.next_of[context] = (nxt, times)
        self.confirmed = counter + 1
        drop = len(self.line) - CONTEXT
        if drop > 0:
            del self.line[:drop]
            self.base += drop

    def _context(self, end: int) -> tuple[str, ...]:
        return tuple(d for d, _, _ in self.line[end - CONTEXT - self.base:end - self.base])

    def extend(self, count: int) -> list[int]:
        """Append up to `count` guesses to the line; return their counters."""
        out: list[int] = []
        while len(out) < count and len(self.line) >= CONTEXT:
            seen = self.next_of.get(self._context(self.end))
            if seen is None or seen[1] < 2:  # guess only what followed twice the same way
                break
            out.append(self.end)
            self.line.append(seen[0])
        return out


class Prefetcher:
    """Party 0's end: prefetched corrections by counter, and the messages to the dealer.

    `send(obj)` sends to the dealer; `recv()` receives the dealer's next message.
    """

    def __init__(self, send: Callable[[Any], None], recv: Callable[[], Any]) -> None:
        self.send, self.recv = send, recv
        self.ready: dict[int, tuple[str, torch.Tensor]] = {}
        self.pending: deque[bool] = deque()  # one per unanswered message: True for a refill
        self.end = 0  # counters below this are ready or promised by a pending answer
        self.streaming = False  # the dealer's last answer was a full batch of guesses
        self.messages = 0
        self.hits = 0

    def correction(self, counter: int, descriptor: str, kind: str, req: dict[str, Any]
                   ) -> Callable[[], torch.Tensor]:
        """Party 0's missing share for draw `counter`; the returned function delivers it."""
        for k in [k for k in self.ready if k < counter]:
            del self.ready[k]
        got = self.ready.pop(counter, None)
        if got is not None and got[0] == descriptor:
            self.hits += 1
            out = got[1]
            finish: Callable[[], torch.Tensor] = lambda: out  # noqa: E731
        else:
            if got is not None or counter >= self.end or not self.pending:
                self._ask(counter, kind, req)  # answered while the opening is on the wire
            finish = lambda: self._collect(counter, descriptor, kind, req)  # noqa: E731
        if self.streaming and not self.pending and self.end - counter < BATCH * 3 // 4:
            self.send({"refill": self.end})
            self.messages += 1
            self.pending.append(True)
            self.end += BATCH
        return finish

    def _ask(self, counter: int, kind: str, req: dict[str, Any]) -> None:
        self.send({"kind": kind, "counter": counter, **req})
        self.messages += 1
        self.pending.append(False)
        self.end = max(self.end, counter + 1)

    def _collect(self, counter: int, descriptor: str, kind: str, req: dict[str, Any]
                 ) -> torch.Tensor:
        while True:
            got = self.ready.pop(counter, None)
            if got is not None and got[0] == descriptor:
                return got[1]
            if not self.pending:  # a refill was promised but the dealer guessed otherwise
                self._ask(counter, kind, req)
            self._read_answer()

    def _read_answer(self) -> None:
        header, flat = self.recv(), self.recv()
        first, descriptors, shapes = _check_answer(header, flat)
        refill = self.pending.popleft()
        if not refill:  # the dealer restarted its line at `first`: older guesses are void
            for k in [k for k in self.ready if k >= first]:
                del self.ready[k]
        at = 0
        for i, (d, shape) in enumerate(zip(descriptors, shapes, strict=True)):
            n = torch.Size(shape).numel()
            self.ready[first + i] = (d, flat[at:at + n].reshape(shape))
            at += n
        self.streaming = len(descriptors) - (0 if refill else 1) == BATCH
        if not self.pending:
            self.end = max(self.ready, default=-1) + 1


def _check_answer(header: Any, flat: Any) -> tuple[int, list[str], list[list[int]]]:
    """The parts of a dealer's answer, or ValueError naming what is wrong with it."""
    try:
        first, descriptors, shapes = header["first"], header["descriptors"], header["shapes"]
        ok = (isinstance(first, int) and first >= 0 and isinstance(flat, torch.Tensor)
              and flat.dtype == torch.long and len(descriptors) == len(shapes)
              and all(isinstance(d, str) for d in descriptors)
              and sum(torch.Size(s).numel() for s in shapes) == flat.numel())
    except (TypeError, KeyError, ValueError, IndexError):
        ok = False
    if not ok:
        raise ValueError("the dealer sent a malformed answer (header and material disagree)")
    return first, descriptors, shapes


def pack_answer(first: int, items: list[tuple[str, torch.Tensor]]) -> tuple[dict[str, Any],
                                                                           torch.Tensor]:
    """The dealer's answer: a header naming each correction, then all of them in one tensor."""
    header = {"first": first, "descriptors": [d for d, _ in items],
              "shapes": [list(t.shape) for _, t in items]}
    flat = torch.cat([t.reshape(-1) for _, t in items]) if items else \
        torch.zeros(0, dtype=torch.long)
    return header, flat
