"""A party that dies, never starts, or goes silent: every other party names it, in time."""

from __future__ import annotations

import sys
import time

from parties.node.launcher import launch, party_names


def _failed_naming(run, name: str, survivors: list[str]) -> None:
    for p in survivors:
        rc = run.returncodes[p]
        text = "\n".join(run.nodes[p].lines)
        assert rc not in (0, None), f"{p} exited {rc}"
        assert f"party '{name}'" in text, f"{p} did not name {name}: {text[-500:]}"
    assert all(rc is not None for rc in run.returncodes.values()), "a process was left running"


def test_party_that_dies_is_named_by_all() -> None:
    parties = party_names(3)
    tic = time.monotonic()
    run = launch(parties, "tests.party_checks:die_midway", timeout=90, grace=20,
                 extra=["--quiet", "--timeout", "20"])
    assert time.monotonic() - tic < 80
    assert run.returncodes["party2"] == 9
    _failed_naming(run, "party2", ["party0", "party1"])


def test_party_that_never_starts_is_named_by_all() -> None:
    parties = party_names(3)
    fake = [sys.executable, "-c", "import time; print('SMPC-LISTENING 9', flush=True); "
            "time.sleep(60)"]
    tic = time.monotonic()
    run = launch(parties, "selftest", timeout=90, grace=10, commands={"party2": fake},
                 extra=["--quiet", "--connect-timeout", "5"])
    assert time.monotonic() - tic < 40
    _failed_naming(run, "party2", ["party0", "party1", "dealer"])
    assert any("within 5 s" in line for line in run.nodes["party0"].lines)


def test_silent_party_hits_the_receive_deadline() -> None:
    parties = party_names(3)
    tic = time.monotonic()
    run = launch(parties, "tests.party_checks:silent", timeout=90, grace=5,
                 extra=["--quiet", "--timeout", "5"])
    assert time.monotonic() - tic < 45
    for p in ("party0", "party1"):
        assert run.returncodes[p] not in (0, None)
    text = "\n".join(run.nodes["party0"].lines + run.nodes["party1"].lines)
    assert "party 'party2'" in text
