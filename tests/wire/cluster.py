"""Start mesh nodes (tests/wire/node.py) as real processes, so that SIGSTOP and kill -9 are real.

    with Cluster({"a": config_a, "b": config_b}) as nodes:
        os.kill(nodes["b"].pid, signal.SIGSTOP)
        failure = nodes["a"].failure(timeout=20)

Every wait is bounded; leaving the block kills (SIGCONT, then SIGKILL) every
node still running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# A node exits this soon after its verdict: abort takes ~0.5 s, then the interpreter's own
# exit (a process that imported torch needs ~0.3 s to exit on an idle core, over 1 s on our
# two shared, busy ones). Before the fix, nodes with accepted links took 10 s more.
EXIT_S = 5.0


def tls_paths(names: list[str], folder: Path) -> dict[str, dict[str, str]]:
    """Development certificates for `names` in `folder`, as node configs' `tls` entries."""
    from parties.consortium import certs

    certs.generate("test", names, folder)
    return {n: {"ca": str(folder / "ca.pem"), "key": str(folder / f"{n}.key"),
                "cert": str(folder / f"{n}.pem")} for n in names}


class Node:
    """One node process: its output lines (read by a thread) and when it exited."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.wire.node", json.dumps({"me": name, **config})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.exited_at: float | None = None
        self._new = threading.Condition()
        threading.Thread(target=self._read, daemon=True, name=f"read-{name}").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._new:
                self.lines.append(raw.rstrip("\n"))
                self._new.notify_all()
        self.proc.wait()
        with self._new:
            self.exited_at = time.time()
            self._new.notify_all()

    def line(self, prefix: str, timeout: float) -> str | None:
        """The first output line starting with `prefix` (waits up to `timeout`), or None."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for ln in self.lines:
                    if ln.startswith(prefix):
                        return ln
                left = deadline - time.monotonic()
                if left <= 0 or self.exited_at is not None:
                    return None
                self._new.wait(left)

    def failure(self, timeout: float) -> dict[str, Any] | None:
        """The PeerError this node stopped on: type, peer, what, t (wall clock)."""
        ln = self.line("FAILED ", timeout)
        return json.loads(ln.split(" ", 1)[1]) if ln else None

    def exit(self, timeout: float) -> float | None:
        """When the process exited (wall clock), waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._new:
            while self.exited_at is None and time.monotonic() < deadline:
                self._new.wait(deadline - time.monotonic())
            return self.exited_at

    def text(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)


class Cluster:
    """Nodes started together: each reports its port, gets the address book, connects."""

    def __init__(self, configs: dict[str, dict[str, Any]], start_timeout: float = 60.0) -> None:
        self.configs = configs
        self.start_timeout = start_timeout
        self.nodes: dict[str, Node] = {}

    def __enter__(self) -> dict[str, Node]:
        try:
            self.nodes = {n: Node(n, c) for n, c in self.configs.items()}
            book = {}
            for name, node in self.nodes.items():
                ln = node.line("PORT ", self.start_timeout)
                assert ln, f"{name} did not start: {node.text()[-2000:]}"
                book[name] = f"127.0.0.1:{ln.split()[1]}"
            for node in self.nodes.values():
                assert node.proc.stdin is not None
                node.proc.stdin.write(json.dumps(book) + "\n")
                node.proc.stdin.flush()
            for name, node in self.nodes.items():
                assert node.line("UP", self.start_timeout), f"{name}: {node.text()[-2000:]}"
        except BaseException:
            self.__exit__()
            raise
        return self.nodes

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes.values():
            node.kill()
