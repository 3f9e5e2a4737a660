"""The Docker demo's nodes as separate hosts (network namespaces), with mutual TLS, and faults.

Each node runs in its own namespace the command its container runs in
docker/compose.yaml (paths mapped by tests/multihost/netns.py), resolving the others by
service name. A fault is injected when hospital-c reports its second epoch.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from protocols.horizontal import logistic_regression as lr
from tests.multihost.netns import ROOT, ComposeNodes, ComposeRun, Network, unavailable
from tests.protocols.test_logistic_regression import _tables

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]
NODES = ["dealer", *HOSPITALS]
PORTS = {"dealer": 7100, "hospital-a": 7101, "hospital-b": 7102, "hospital-c": 7103}
FAULT_FLAGS = ["--keepalive", "1", "--reconnect-window", "6", "--timeout", "60"]
EXIT_LOST = 3

_why = unavailable()
if _why:
    print(f"test_multihost: skipped: {_why}")
pytestmark = pytest.mark.skipif(_why is not None, reason=f"no network namespaces: {_why}")


@pytest.fixture()
def consortium(tmp_path: Path) -> Any:
    with Network(NODES, PORTS) as net:
        yield ComposeRun(tmp_path, net)


def _twin(result: dict[str, Any], **params: Any) -> None:
    """The run's metrics equal its plaintext twin's (same data, parameters and joint seed)."""
    _, tables, defaults = _tables(ROOT / "examples" / "hospitals" / "consortium.toml")
    want = lr.plaintext(tables, defaults.__class__({**defaults, **params}),
                        bytes.fromhex(result["seed"]), None)["metrics"]
    got = result["revealed"]["metrics"]
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=0.01)
    assert got["auc"] == pytest.approx(want["auc"], abs=0.01)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose commands across four namespaced hosts with mutual TLS, undisturbed."""
    with Network(NODES, PORTS) as net:
        c = ComposeRun(tmp_path_factory.mktemp("multihost"), net)
        c.start()
        codes = c.finish(300)
        assert codes == dict.fromkeys(NODES, 0), {n: o.text[-600:] for n, o in c.out.items()}
        return {"results": {p: c.result(p) for p in HOSPITALS}, "nodes": c.nodes,
                "text": {n: o.text for n, o in c.out.items()}}


def test_namespaced_hosts_compute_the_plaintext_twin(uninterrupted: dict[str, Any]) -> None:
    for party in HOSPITALS:
        _twin(uninterrupted["results"][party])
    assert len({r["seed"] for r in uninterrupted["results"].values()}) == 1
    nodes: ComposeNodes = uninterrupted["nodes"]
    assert (nodes.volume("results-hospital-a") / "model.pt").is_file()
    assert not (nodes.volume("results-hospital-b") / "model.pt").exists()
    # every link was TLS: no node was told to run without it
    assert not any("--insecure" in t for t in uninterrupted["text"].values())


def _stopped_naming(c: ComposeRun, codes: dict[str, int | None], lost: str,
                    survivors: list[str]) -> None:
    for node in survivors:
        text = c.out[node].text
        last = next((ln for ln in reversed(c.out[node].lines) if "stopped" in ln), text[-300:])
        assert codes[node] == EXIT_LOST, f"{node} exited {codes[node]}: {text[-600:]}"
        assert f"'{lost}'" in last, f"{node} did not name {lost}: {last}"
        assert ("after epoch" in last) if node != "dealer" else ("after serving" in last), last
    assert all(rc is not None for rc in codes.values()), f"left running: {codes}"


def test_link_cut_and_kept_down(consortium: ComposeRun) -> None:
    consortium.start(FAULT_FLAGS)
    consortium.wait_for_epoch("hospital-c", 2)
    consortium.net.set_link("hospital-c", up=False)
    tic = time.monotonic()
    codes = consortium.finish(90)
    assert time.monotonic() - tic < 60, codes
    _stopped_naming(consortium, codes, "hospital-c", ["hospital-a", "hospital-b", "dealer"])
    assert codes["hospital-c"] == EXIT_LOST, consortium.out["hospital-c"].text[-400:]


@pytest.mark.parametrize("victim", ["hospital-b", "dealer"])
def test_kill_then_resume(consortium: ComposeRun, victim: str) -> None:
    consortium.start(FAULT_FLAGS)
    consortium.wait_for_epoch("hospital-c", 2)
    os.kill(consortium.out[victim].proc.pid, signal.SIGKILL)
    tic = time.monotonic()
    codes = consortium.finish(90)
    assert time.monotonic() - tic < 60, codes
    assert codes[victim] == -signal.SIGKILL
    _stopped_naming(consortium, codes, victim, [n for n in NODES if n != victim])

    consortium.start(FAULT_FLAGS, resume=True)  # the dealer keeps no state to resume
    codes = consortium.finish(300)
    assert codes == dict.fromkeys(NODES, 0), {n: o.text[-600:] for n, o in consortium.out.items()}
    assert "resumed" in consortium.out["hospital-a"].text
    for party in HOSPITALS:
        result = consortium.result(party)
        assert result["resumed_from"] >= 1  # hospital-c was at epoch 2; the victim may not
        _twin(result)


def test_two_second_link_flap_is_survived(consortium: ComposeRun) -> None:
    consortium.start(FAULT_FLAGS)
    consortium.wait_for_epoch("hospital-c", 2)
    consortium.net.set_link("hospital-c", up=False)
    time.sleep(2.0)
    consortium.net.set_link("hospital-c", up=True)
    codes = consortium.finish(300)
    assert codes == dict.fromkeys(NODES, 0), {n: o.text[-600:] for n, o in consortium.out.items()}
    restored = [ln for o in consortium.out.values() for ln in o.lines if "restored" in ln]
    assert restored, "the links never dropped: the flap tested nothing"
    for party in HOSPITALS:
        _twin(consortium.result(party))


def test_training_completes_over_a_slow_network(tmp_path: Path) -> None:
    """20 ms round trips between every pair of hosts (a delaying relay; no netem here)."""
    with Network(NODES, PORTS, delay=0.010) as net:
        c = ComposeRun(tmp_path, net, edits={"epochs = 10": "epochs = 1"})
        c.start()
        codes = c.finish(300)
        assert codes == dict.fromkeys(NODES, 0), {n: o.text[-600:] for n, o in c.out.items()}
        result = c.result("hospital-a")
    _twin(result, epochs=1)
    timings = result["timings"]
    # each round waits at least one 10 ms one-way trip: the delay was on the path
    assert timings["protocol_seconds"] >= 0.8 * 0.010 * timings["rounds"], timings
