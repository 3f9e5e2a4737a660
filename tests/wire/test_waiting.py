"""Waiting notices: every survivor names the party that is actually silent, and cycles end."""

from __future__ import annotations

import os
import signal
import threading
import time

from parties.wire import waiting
from parties.wire.transport import LinkOptions, Mesh, PeerTimeout
from tests.wire.cluster import EXIT_S, Cluster
from tests.wire.test_transport import _connect


def test_follow_cuts_the_chain_at_this_node_and_at_repeats() -> None:
    theirs = {"a": ("c", "d"), "b": ("a", "me", "x"), "c": ("c",)}
    assert waiting.follow("me", "a", theirs) == ("a", "c", "d")
    assert waiting.follow("me", "b", theirs) == ("b", "a")  # comes back to me: a cycle
    assert waiting.follow("me", "c", theirs) == ("c",)
    assert waiting.follow("me", "z", theirs) == ("z",)


def test_malformed_chains_are_named() -> None:
    names = ["a", "b", "c", "d"]
    assert waiting.check("a", ["b", "c"], names) is None
    assert "unknown" in (waiting.check("a", ["b", "mallory"], names) or "")
    assert "repeats" in (waiting.check("a", ["b", "a"], names) or "")
    assert "repeats" in (waiting.check("a", ["b", "b"], names) or "")
    assert "chain of 4" in (waiting.check("a", ["b", "c", "d", "b"], names) or "")


def test_story_reads_from_the_silent_end() -> None:
    assert waiting.story(("a", "c")) == "'a' was waiting on it"
    assert waiting.story(("a", "x", "c")) == "'x' was waiting on it, 'a' on 'x'"


def test_board_tells_only_changes_and_clears() -> None:
    told: list[tuple[str, ...]] = []
    board = waiting.WaitBoard("b", 0.0, told.append)
    board.begin("a")
    board.tick(time.monotonic())
    board.heard("a", ["c"])
    board.heard("a", ["c"])  # the same again: nothing new to tell
    board.heard("x", ["y"])  # not waited on: nothing to tell
    board.end("a")
    assert told == [("a",), ("a", "c"), ()]
    assert board.chain("a") == ("a", "c")


def _mesh3(names: list[str], **opts: float) -> dict[str, Mesh]:
    options = LinkOptions(**{"connect_timeout": 10.0, **opts})
    return {n: Mesh(n, [p for p in names if p != n], names, "s", options) for n in names}


def test_a_cycle_of_waits_ends_and_does_not_loop() -> None:
    """a waits on b, b on c, c on a (a deadlock): each receive times out once, naming a
    party of the cycle, and each node tells only a few notices."""
    names = ["a", "b", "c"]
    # notices every 0.2 s, receives give up after 6 s: ample time for the chain to go round
    # even on loaded cores (with 2 s it once did not)
    meshes = _mesh3(names, recv_timeout=6.0, notice_after=0.2)
    assert set(_connect(meshes).values()) == {None}
    errors: dict[str, PeerTimeout] = {}
    took: dict[str, float] = {}

    def wait(me: str, on: str) -> None:
        tic = time.monotonic()
        try:
            meshes[me].recv(on)
        except PeerTimeout as exc:
            errors[me] = exc
        took[me] = time.monotonic() - tic

    threads = [threading.Thread(target=wait, args=(m, o))
               for m, o in (("a", "b"), ("b", "c"), ("c", "a"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert set(errors) == set(names)
    assert all(e.peer in names for e in errors.values()), errors
    # the node whose notices arrive last may time out before the chain reaches it again; at
    # least one node sees the whole loop and says so
    assert any("cycle" in e.what for e in errors.values()), errors
    assert all(t < 9.0 for t in took.values()), took
    # the chain grows to the whole cycle and stops: a few notices each, then the clear
    assert all(m.board.notices <= 4 for m in meshes.values()), [
        m.board.notices for m in meshes.values()]
    for m in meshes.values():
        m.abort("test over")


def _chain_configs(timeouts: dict[str, float]) -> dict[str, dict]:
    """c streams to a; a forwards each message to b and d. b and d wait on a, a waits on c."""
    scripts = {
        "a": [["loop", None, [["recv", "c"], ["send", "b"], ["send", "d"]]]],
        "b": [["loop", None, [["recv", "a"]]]],
        "c": [["loop", None, [["send", "a"], ["sleep", 0.05]]]],
        "d": [["loop", None, [["recv", "a"]]]],
    }
    order = ["a", "b", "c", "d"]
    return {n: {"order": order, "script": scripts[n],
                "options": {"recv_timeout": timeouts[n], "connect_timeout": 60}}
            for n in order}


def test_every_survivor_names_the_frozen_party() -> None:
    """SIGSTOP c while a waits on c and b, d wait on a. b and d time out before a (a
    shorter receive timeout), yet all three name c; each exits promptly after its verdict."""
    configs = _chain_configs({"a": 8.0, "b": 5.0, "c": 60.0, "d": 5.0})
    with Cluster(configs) as nodes:
        time.sleep(1.0)
        os.kill(nodes["c"].pid, signal.SIGSTOP)
        failures = {n: nodes[n].failure(timeout=30) for n in "abd"}
        exits = {n: nodes[n].exit(timeout=30) for n in "abd"}
        texts = {n: nodes[n].text()[-1500:] for n in "abd"}
    for n in "abd":
        f = failures[n]
        assert f is not None, f"{n} did not fail: {texts[n]}"
        assert (f["type"], f["peer"]) == ("PeerTimeout", "c"), f"{n} named: {f}"
    assert "'a' was waiting on it" in failures["b"]["what"]
    assert "this node was waiting on 'a'" in failures["d"]["what"]
    for n in "abd":
        assert exits[n] is not None and exits[n] - failures[n]["t"] < EXIT_S, (n, exits, failures)


def test_a_frozen_party_that_waited_on_nobody_is_named_itself() -> None:
    """b and d wait on a, which is frozen while it waits on nobody: they name a, not c."""
    configs = _chain_configs({"a": 30.0, "b": 4.0, "c": 60.0, "d": 4.0})
    with Cluster(configs) as nodes:
        time.sleep(1.0)
        os.kill(nodes["a"].pid, signal.SIGSTOP)
        failures = {n: nodes[n].failure(timeout=30) for n in "bd"}
    for n in "bd":
        assert failures[n] is not None and failures[n]["peer"] == "a", failures
