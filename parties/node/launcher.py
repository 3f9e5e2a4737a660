"""Start N parties and a dealer as local processes on loopback.

Each node is a real OS process running `smpc node ...` and listening on port 0.
The launcher reads each node's port from its first output line, sends every
node the address book on stdin, forwards their output with a name prefix, and
collects the result line each party prints. Nothing is left running: on a
timeout or failure the launcher kills what remains.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from parties.node.runtime import DEALER, LISTENING

RESULT = "SMPC-RESULT"


@dataclass
class NodeRun:
    """One launched node: its process, output lines and result."""

    name: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    port: int | None = None


@dataclass
class LocalRun:
    """Outcome of a local launch."""

    nodes: dict[str, NodeRun]
    returncodes: dict[str, int | None]
    timed_out: bool

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(rc == 0 for rc in self.returncodes.values())

    def results(self) -> dict[str, dict[str, Any] | None]:
        return {n: r.result for n, r in self.nodes.items()}


def party_names(n: int) -> list[str]:
    """Default names of n local parties."""
    return [f"party{i}" for i in range(n)]


def node_command(name: str, parties: list[str], session_id: str, protocol: str, provider: str,
                 extra: list[str] | None = None) -> list[str]:
    """The command line of one local node (the same `smpc node` a user can run).

    Plaintext on loopback unless `extra` gives --tls-dir.
    """
    tls = extra is not None and "--tls-dir" in extra
    return [
        sys.executable, "-m", "parties.cli", "node", "--name", name,
        "--parties", ",".join(parties), "--session", session_id, "--listen", "127.0.0.1:0",
        "--control", "stdin", "--run", protocol, "--provider", provider, "--threads", "1",
        *([] if tls else ["--insecure"]), *(extra or []),
    ]


def _forward(node: NodeRun, echo: TextIO | None) -> None:
    assert node.proc.stdout is not None
    for raw in node.proc.stdout:
        line = raw.rstrip("\n")
        if line.startswith(RESULT + " "):
            node.result = json.loads(line[len(RESULT) + 1 :])
            continue
        node.lines.append(line)
        if echo is not None:
            print(f"[{node.name}] {line}", file=echo, flush=True)


def launch(
    parties: list[str],
    protocol: str,
    provider: str = "dealer",
    timeout: float = 300.0,
    extra: list[str] | None = None,
    echo: TextIO | None = None,
    env: dict[str, str] | None = None,
    commands: dict[str, list[str]] | None = None,
    grace: float = 15.0,
) -> LocalRun:
    """Run every party (and the dealer) of one session on loopback; bounded by `timeout`.

    `commands` maps a node name to its own command line (a consortium run gives
    every node's; tests give one that misbehaves); the others run `protocol`
    through `smpc node`. Once a node fails,
    the others get `grace` seconds to stop by themselves before being killed.
    """
    session_id = secrets.token_hex(8)
    names = [*parties, DEALER] if provider == "dealer" else list(parties)
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    nodes: dict[str, NodeRun] = {}
    deadline = time.monotonic() + timeout
    try:
        for name in names:
            cmd = (commands or {}).get(name) or node_command(
                name, parties, session_id, protocol, provider, extra)
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env=child_env, start_new_session=True,
            )
            nodes[name] = NodeRun(name, proc)
        book = _rendezvous(nodes, deadline)
        for node in nodes.values():
            assert node.proc.stdin is not None
            try:
                node.proc.stdin.write(json.dumps(book) + "\n")
                node.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        threads = [threading.Thread(target=_forward, args=(n, echo), daemon=True)
                   for n in nodes.values()]
        for t in threads:
            t.start()
        timed_out = _wait_all(nodes, deadline, grace)
        for t in threads:
            t.join(timeout=5)
    finally:
        _kill_all(nodes)
    return LocalRun(nodes, {n: r.proc.returncode for n, r in nodes.items()}, timed_out)


def _rendezvous(nodes: dict[str, NodeRun], deadline: float) -> dict[str, str]:
    """Read each node's LISTENING line (other early lines are kept as output)."""
    book: dict[str, str] = {}
    for node in nodes.values():
        assert node.proc.stdout is not None
        while node.port is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"node '{node.name}' did not start listening in time")
            line = node.proc.stdout.readline()
            if not line:
                break  # exited early; its output says why
            if line.startswith(LISTENING + " "):
                node.port = int(line.split()[1])
                book[node.name] = f"127.0.0.1:{node.port}"
            else:
                node.lines.append(line.rstrip("\n"))
    return book


def _wait_all(nodes: dict[str, NodeRun], deadline: float, grace: float) -> bool:
    """Wait for every node; after the first failure the rest get a grace period."""
    grace_end: float | None = None
    while True:
        codes = [n.proc.poll() for n in nodes.values()]
        if all(c is not None for c in codes):
            return False
        if grace_end is None and any(c not in (None, 0) for c in codes):
            grace_end = time.monotonic() + grace
        now = time.monotonic()
        if now > deadline or (grace_end is not None and now > grace_end):
            return now > deadline
        time.sleep(0.05)


def _kill_all(nodes: dict[str, NodeRun]) -> None:
    for node in nodes.values():
        if node.proc.poll() is None:
            try:
                os.killpg(node.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            node.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (node.proc.stdin, node.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
