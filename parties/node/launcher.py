"""Start every node of a run (parties and dealer) as local processes on loopback.

Each node is a real OS process running `smpc party ...` or `smpc dealer ...`
and listening on port 0.
The launcher reads each node's port from its first output line, sends every
node the address book on stdin, forwards their output with a name prefix, and
collects the result line each party prints. Nothing is left running: on a
timeout or failure the launcher kills what remains.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from parties.node.runtime import LISTENING

RESULT = "SMPC-RESULT"
STARTUP_LIMIT = 120.0  # seconds every node has to start listening


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
    commands: dict[str, list[str]],
    timeout: float | None = None,
    echo: TextIO | None = None,
    env: dict[str, str] | None = None,
    grace: float = 15.0,
) -> LocalRun:
    """Run every node's command (each listening on loopback port 0) until all have exited.

    Each command must print `SMPC-LISTENING <port>` and then read the address
    book from stdin (`smpc party/dealer ... --listen 127.0.0.1:0 --control
    stdin` do). Once a node fails, the others get `grace` seconds to stop by
    themselves before being killed. `timeout` (None: no limit) bounds the whole
    launch; a run that makes progress is otherwise never cut short.
    """
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    nodes: dict[str, NodeRun] = {}
    deadline = time.monotonic() + timeout if timeout is not None else float("inf")
    try:
        for name, cmd in commands.items():
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env=child_env, start_new_session=True,
            )
            nodes[name] = NodeRun(name, proc)
        book = _rendezvous(nodes, min(deadline, time.monotonic() + STARTUP_LIMIT))
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
