"""Parties that die, never start, go silent, fail or open secrets: every other node stops in
time, names the party, and learns nothing private from the failure."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from parties.node.launcher import LocalRun, launch
from parties.node.local import write_generated
from tests.support import node_commands

ROOT = Path(__file__).resolve().parents[2]
BEHAVIOURS = str(ROOT / "tests" / "node" / "behaviours.py")
NAMES = ["party0", "party1", "party2"]


def _run(tmp_path: Path, behaviour: str, extra: list[str] | None = None, timeout: float = 90,
         grace: float = 20, commands: dict[str, list[str]] | None = None,
         **params: Any) -> LocalRun:
    consortium = write_generated(BEHAVIOURS, 3, tmp_path / "c", insecure=True,
                                 parameters={"behaviour": behaviour, **params})
    policies = {p: consortium.parent / "policies" / f"{p}.toml" for p in NAMES}
    cmds = node_commands(dict.fromkeys([*NAMES, "dealer"], consortium), policies,
                         ["--insecure", *(extra or [])])
    return launch({**cmds, **(commands or {})}, timeout=timeout, grace=grace)


def _all_name(run: LocalRun, name: str, survivors: list[str]) -> None:
    for p in survivors:
        rc = run.returncodes[p]
        text = "\n".join(run.nodes[p].lines)
        assert rc not in (0, None), f"{p} exited {rc}"
        assert f"party '{name}'" in text, f"{p} did not name {name}: {text[-500:]}"
    assert all(rc is not None for rc in run.returncodes.values()), "a process was left running"


def test_party_that_dies_is_named_by_all(tmp_path: Path) -> None:
    tic = time.monotonic()
    run = _run(tmp_path, "die", ["--timeout", "20"])
    assert time.monotonic() - tic < 80
    assert run.returncodes["party2"] == 9
    _all_name(run, "party2", ["party0", "party1", "dealer"])


def test_party_that_never_starts_is_named_by_all(tmp_path: Path) -> None:
    fake = [sys.executable, "-c", "import time; print('SMPC-LISTENING 9', flush=True); "
            "time.sleep(300)"]
    tic = time.monotonic()
    run = _run(tmp_path, "none", ["--connect-timeout", "5"], grace=10,
               commands={"party2": fake}, timeout=120)
    assert time.monotonic() - tic < 100  # not the 300 s the fake party would sit there
    _all_name(run, "party2", ["party0", "party1", "dealer"])
    assert any("within 5 s" in line for line in run.nodes["party0"].lines)


def test_silent_party_hits_the_receive_deadline(tmp_path: Path) -> None:
    tic = time.monotonic()
    run = _run(tmp_path, "silent", ["--timeout", "5"], grace=5)
    assert time.monotonic() - tic < 45
    for p in ("party0", "party1"):
        assert run.returncodes[p] not in (0, None)
    assert "party 'party2'" in "\n".join(run.nodes["party0"].lines + run.nodes["party1"].lines)


def test_a_failing_party_tells_its_peers_only_the_kind_of_error(tmp_path: Path) -> None:
    run = _run(tmp_path, "leak")
    own = "\n".join(run.nodes["party2"].lines)
    assert "private value" in own  # the party's own log keeps the details
    for p in ("party0", "party1", "dealer"):
        text = "\n".join(run.nodes[p].lines)
        assert run.returncodes[p] == 3, text
        assert "stopped by party 'party2'" in text and "internal error (ValueError)" in text
        assert "private value" not in text and "private.csv" not in text and "row 17" not in text


def test_opening_a_secret_outside_reveal_is_refused_naming_the_line(tmp_path: Path) -> None:
    run = _run(tmp_path, "open")
    line = next(i for i, text in enumerate(Path(BEHAVIOURS).read_text().splitlines(), 1)
                if "y.get_plain_text()" in text)
    for p in NAMES:
        text = "\n".join(run.nodes[p].lines)
        assert run.returncodes[p] not in (0, None), text
        assert "RevealError" in text and f"behaviours.py:{line}" in text, text[-600:]
        assert "session.reveal" in text


def test_max_run_time_stops_every_node_cleanly(tmp_path: Path) -> None:
    # 600 one-second steps: without the limit the launcher's 150 s bound would kill the nodes
    # (exit -9); with it every party stops on its own with exit 3
    run = _run(tmp_path, "slow", ["--max-run-time", "4"], steps=600, timeout=150)
    for p in NAMES:
        text = "\n".join(run.nodes[p].lines)
        assert run.returncodes[p] == 3, text[-400:]
        assert "--max-run-time 4 s" in text


def test_barrier_waits_for_every_party(tmp_path: Path) -> None:
    run = _run(tmp_path, "barrier")
    assert run.ok, {n: node.lines[-3:] for n, node in run.nodes.items()}
    times = [run.nodes[p].result["revealed"]["done"] for p in NAMES]
    last_in = max(t["entered"] for t in times)
    assert last_in - min(t["entered"] for t in times) > 0.6  # they really arrived apart
    assert all(t["left"] >= last_in for t in times)
