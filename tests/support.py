"""Helpers for tests that run consortia: copies of examples, free ports, separate node processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from parties.consortium import certs
from parties.node.launcher import LocalRun, launch

ROOT = Path(__file__).resolve().parents[1]
HOSPITALS = ROOT / "examples" / "hospitals"
PARTIES = ["hospital-a", "hospital-b", "hospital-c"]


def copy_example(tmp: Path, source: Path = HOSPITALS, nodes: list[str] | None = None) -> Path:
    """The example in `tmp`, with freshly generated development certificates; its folder."""
    target = tmp / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.py", "certs", "checkpoints",
                                                                  "out", "__pycache__"))
    certs.generate(source.name, [*(nodes or PARTIES), "dealer"], target / "certs")
    return target


def edit(path: Path, *changes: tuple[str, str], to: Path | None = None) -> Path:
    """A copy of `path` (or `path` itself) with each (old, new) replaced once; asserts each hit."""
    text = path.read_text()
    for old, new in changes:
        assert old in text, f"{old!r} not in {path}"
        text = text.replace(old, new, 1)
    target = to or path
    target.write_text(text)
    return target


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def on_free_ports(consortium: Path) -> Path:
    """Rewrite the consortium's 127.0.0.1:PORT addresses to free ports (in place)."""
    text = consortium.read_text()
    old = sorted(set(text.split("127.0.0.1:")[1:]), key=str)
    ports = [p.split('"')[0] for p in old]
    for port, new in zip(ports, free_ports(len(ports)), strict=True):
        text = text.replace(f"127.0.0.1:{port}\"", f"127.0.0.1:{new}\"")
    consortium.write_text(text)
    return consortium


def node_commands(consortia: dict[str, Path], policies: dict[str, Path],
                  extra: list[str] | None = None, env: dict[str, dict[str, str]] | None = None
                  ) -> dict[str, list[str]]:
    """`smpc party` for each party and `smpc dealer`, each with its own consortium copy, under
    the local launcher. `env` may give one node its own environment (e.g. other code)."""
    flags = ["--listen", "127.0.0.1:0", "--control", "stdin", "--timeout", "60",
             *(extra or [])]
    commands = {}
    for p, policy in policies.items():
        commands[p] = [sys.executable, "-m", "parties.cli", "party", "--consortium",
                       str(consortia[p]), "--as", p, "--policy", str(policy), "--quiet", *flags]
    commands["dealer"] = [sys.executable, "-m", "parties.cli", "dealer", "--consortium",
                          str(consortia["dealer"]), *flags]
    for node, variables in (env or {}).items():  # -P: PYTHONPATH, not the cwd, decides imports
        commands[node] = ["env", *(f"{k}={v}" for k, v in variables.items()), sys.executable,
                          "-P", *commands[node][1:]]
    return commands


def run_nodes(commands: dict[str, list[str]], timeout: float = 180, grace: float = 20,
              env: dict[str, str] | None = None) -> LocalRun:
    return launch(commands, timeout=timeout, grace=grace, env=env)


def all_stop_naming(run: LocalRun, *needles: str) -> None:
    """Every node exited non-zero and said every needle."""
    for name, node in run.nodes.items():
        text = "\n".join(node.lines)
        assert run.returncodes[name] not in (0, None), f"{name} exited {run.returncodes[name]}"
        for needle in needles:
            assert needle in text, f"{name} did not say {needle!r}: {text[-600:]}"


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Read `proc`'s stdout until a line contains `needle`; the lines read."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no line with {needle!r} within {timeout} s: {''.join(lines)[-800:]}")
