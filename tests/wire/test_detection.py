"""How soon a frozen peer is named, and how soon the survivors exit (LinkOptions' formula).

A frozen process (SIGSTOP) is the hard case: its kernel still accepts TCP and
acknowledges what is sent, so only gRPC keepalive notices, and reconnect
attempts hang instead of being refused.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.wire.cluster import EXIT_S, Cluster, tls_paths

K, W = 1.0, 2.0  # keepalive_s, reconnect_window
SLACK = 3.0  # scheduling on two shared, noisy cores


def test_frozen_peer_is_named_within_two_keepalives_and_the_window(tmp_path: Path) -> None:
    """b streams to a and c over mutual TLS, then freezes. a dials b and c is dialed by b:
    both name b within 2k + w (+ slack), and exit promptly after."""
    names = ["a", "b", "c"]
    paths = tls_paths(names, tmp_path)
    scripts = {"a": [["loop", None, [["recv", "b"]]]],
               "b": [["loop", None, [["send", "a"], ["send", "c"], ["sleep", 0.02]]]],
               "c": [["loop", None, [["recv", "b"]]]]}
    options = {"keepalive_s": K, "reconnect_window": W, "recv_timeout": 120,
               "connect_timeout": 60}
    configs = {n: {"order": names, "script": scripts[n], "options": options, "tls": paths[n]}
               for n in names}
    bound = 2 * K + W
    with Cluster(configs) as nodes:
        time.sleep(1.0)
        os.kill(nodes["b"].pid, signal.SIGSTOP)
        frozen_at = time.time()
        failures = {n: nodes[n].failure(timeout=bound + SLACK + 5) for n in "ac"}
        exits = {n: nodes[n].exit(timeout=EXIT_S + 5) for n in "ac"}
    for n in "ac":
        f = failures[n]
        assert f is not None, f"{n} did not name b within {bound + SLACK + 5:g} s"
        assert f["peer"] == "b" and "not restored within 2 s" in f["what"], f
        assert f["t"] - frozen_at < bound + SLACK, (n, f["t"] - frozen_at)
        assert exits[n] is not None and exits[n] - f["t"] < EXIT_S, (n, exits[n], f["t"])
