"""Dealer corrections computed ahead: always the right ones, far fewer messages."""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import Any

import pytest
import torch

from parties.dealer import prefetch
from parties.dealer.server import Dealer
from parties.engine import correlated as cr

SEEDS = [bytes([11]) * 32, bytes([22]) * 32, bytes([33]) * 32]


def _requests(pattern: str, steps: int) -> list[tuple[str, dict[str, Any]]]:
    """A training-like sequence: the same few requests every step, then a short last step."""
    step = [
        (cr.ADDITIVE, {"size0": torch.Size([8, 3]), "size1": torch.Size([3, 1]),
                       "op": "matmul", "kwargs": {}}),
        (cr.WRAPS, {"size0": torch.Size([8, 1])}),
        (cr.LTZ, {"size0": torch.Size([16]), "digit_bits": 8}),
        (cr.BINARY, {"size0": torch.Size([2, 16]), "size1": torch.Size([2, 16])}),
        (cr.BINARY, {"size0": torch.Size([2, 16]), "size1": torch.Size([2, 16])}),
        (cr.BINARY, {"size0": torch.Size([16]), "size1": torch.Size([16])}),
        (cr.BIT_MUL, {"size0": torch.Size([2, 8, 1])}),
    ]
    out = step * steps
    if pattern == "irregular":
        rng = random.Random(5)
        for _ in range(10):  # splice in surprises: other shapes, other order
            at = rng.randrange(len(out))
            out.insert(at, (cr.SQUARE, {"size0": torch.Size([rng.randrange(1, 9)])}))
    last = (cr.ADDITIVE, {"size0": torch.Size([5, 3]), "size1": torch.Size([3, 1]),
                          "op": "matmul", "kwargs": {}})
    return [*out, last]


def _run(requests: list[tuple[str, dict[str, Any]]]
         ) -> tuple[prefetch.Prefetcher, Counter[str], Dealer]:
    served: Counter[str] = Counter()
    dealer = Dealer(SEEDS, "p0", served)
    inbox: deque[Any] = deque()

    def send(msg: Any) -> None:
        header, flat = dealer.answer(dict(msg))
        inbox.extend([header, flat])

    party0 = prefetch.Prefetcher(send, inbox.popleft)
    for counter, (kind, req) in enumerate(requests):
        descriptor = cr.describe(kind, req)
        gens = [cr.keyed_stream(s, counter, descriptor) for s in SEEDS]
        finish = party0.correction(counter, descriptor, kind, req)
        want = cr.correction(kind, gens, req)
        assert torch.equal(finish(), want), f"draw {counter} ({descriptor})"
    return party0, served, dealer


def test_a_repeating_sequence_is_served_ahead() -> None:
    requests = _requests("steady", 60)
    party0, served, dealer = _run(requests)
    assert party0.messages <= len(requests) // 10
    # the dealer keeps a bounded tail of the line, not the whole run
    assert len(dealer.line.line) <= prefetch.CONTEXT + prefetch.BATCH
    assert party0.hits >= len(requests) * 0.8
    assert sum(served.values()) <= len(requests) + 2 * prefetch.BATCH


def test_surprises_fall_back_to_asking() -> None:
    requests = _requests("irregular", 60)
    party0, _, _ = _run(requests)  # every correction checked inside
    assert party0.messages < len(requests) // 3


def test_keyed_draws_differ_by_counter_and_request() -> None:
    one, two = SEEDS[0], SEEDS[0][:-1] + b"\x00"  # seeds differing in their last byte only
    a = cr.ring(cr.keyed_stream(one, 0, "x"), [4])
    assert not torch.equal(a, cr.ring(cr.keyed_stream(one, 1, "x"), [4]))
    assert not torch.equal(a, cr.ring(cr.keyed_stream(one, 0, "y"), [4]))
    assert not torch.equal(a, cr.ring(cr.keyed_stream(two, 0, "x"), [4]))
    assert torch.equal(a, cr.ring(cr.keyed_stream(one, 0, "x"), [4]))


def test_large_requests_are_never_guessed() -> None:
    big = (cr.SQUARE, {"size0": torch.Size([prefetch.GUESS_LIMIT + 1])})
    small = _requests("steady", 1)[:-1]
    requests = [*small, big] * 12
    party0, served, _ = _run(requests)  # every correction checked inside
    assert served[cr.SQUARE] == 12  # computed only when asked for, never ahead
    assert party0.hits > 0  # the small ones still came ahead


def test_a_malformed_answer_is_named() -> None:
    answers = deque([{"first": 0, "descriptors": ["x"], "shapes": [[3]]},
                     torch.zeros(2, dtype=torch.long)])  # 2 elements, header says 3
    party0 = prefetch.Prefetcher(lambda msg: None, answers.popleft)
    finish = party0.correction(0, "x", cr.SQUARE, {"size0": torch.Size([3])})
    with pytest.raises(ValueError, match="malformed answer"):
        finish()
