"""The hospitals consortium end to end: results, refusals, bad data, separate parties."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from parties.consortium import certs
from parties.node.launcher import LocalRun, launch
from parties.node.runtime import PartySession
from protocols.session import RevealError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hospitals"
PARTIES = ["hospital-a", "hospital-b", "hospital-c"]


def test_local_run_matches_pooled_plaintext(local_result: dict[str, Any]) -> None:
    mpc = local_result["revealed"]["metrics"]
    pooled = local_result["baseline"]["pooled"]
    assert abs(mpc["accuracy"] - pooled["accuracy"]) <= 0.01
    assert abs(mpc["auc"] - pooled["auc"]) <= 0.01
    assert mpc["accuracy"] > 0.9
    assert set(local_result["baseline"]["alone"]) == set(PARTIES)
    for metric in ("accuracy", "precision", "recall", "f1", "auc", "confusion_matrix"):
        assert metric in mpc
    assert sum(map(sum, mpc["confusion_matrix"])) == pytest.approx(113, abs=0.5)
    by_party = local_result["revealed_by_party"]
    assert len(by_party["hospital-a"]["weights"]) == 31  # 30 features + bias
    assert by_party["hospital-b"]["weights"] is None and by_party["hospital-c"]["weights"] is None
    assert "MPC (smpc)" in local_result["stdout"] and "pooled plaintext" in local_result["stdout"]


def _copy_example(tmp: Path) -> Path:
    """The example in `tmp`, with freshly generated development certificates."""
    shutil.copytree(EXAMPLE, tmp / "hospitals",
                    ignore=shutil.ignore_patterns("*.py", "certs", "checkpoints"))
    certs.generate("hospitals", [*PARTIES, "dealer"], tmp / "hospitals" / "certs")
    return tmp / "hospitals"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _on_free_ports(tmp: Path) -> Path:
    """A copy of the example whose consortium file lists free loopback ports."""
    consortium = _copy_example(tmp) / "consortium.toml"
    text = consortium.read_text()
    for old, new in zip(["7100", "7101", "7102", "7103"], map(str, _free_ports(4)), strict=True):
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    consortium.write_text(text)
    return consortium


def _run(consortia: dict[str, Path], policies: dict[str, Path], timeout: float = 120,
         env: dict[str, dict[str, str]] | None = None) -> LocalRun:
    """Each node with its own copy of the consortium file, through the local launcher."""
    commands = {}
    for p in PARTIES:
        commands[p] = [sys.executable, "-m", "parties.cli", "party", "--consortium",
                       str(consortia[p]), "--as", p, "--policy", str(policies[p]),
                       "--listen", "127.0.0.1:0", "--control", "stdin", "--timeout", "60",
                       "--quiet"]
        if env and p in env:  # -P: let PYTHONPATH, not the working directory, decide imports
            commands[p] = ["env", *(f"{k}={v}" for k, v in env[p].items()), sys.executable,
                           "-P", *commands[p][1:]]
    commands["dealer"] = [sys.executable, "-m", "parties.cli", "dealer", "--consortium",
                          str(consortia["dealer"]), "--listen", "127.0.0.1:0",
                          "--control", "stdin", "--timeout", "60"]
    return launch(PARTIES, "", timeout=timeout, grace=20, commands=commands)


def _variant(tmp: Path, edit: tuple[str, str] | None = None) -> Path:
    base = _copy_example(tmp) if not (tmp / "hospitals").exists() else tmp / "hospitals"
    if edit is None:
        return base / "consortium.toml"
    other = base / "consortium-edited.toml"
    text = (base / "consortium.toml").read_text()
    assert edit[0] in text
    other.write_text(text.replace(*edit))
    return other


def _policies(base: Path) -> dict[str, Path]:
    return {p: base / "policies" / f"{p}.toml" for p in PARTIES}


def _all_refuse(run: LocalRun, *needles: str) -> None:
    for name, node in run.nodes.items():
        text = "\n".join(node.lines)
        assert run.returncodes[name] not in (0, None), f"{name} exited {run.returncodes[name]}"
        for needle in needles:
            assert needle in text, f"{name} did not say {needle!r}: {text[-400:]}"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("epochs = 10", "epochs = 3"), "field 'protocol.parameters.epochs'"),
        (('to = ["hospital-a"]', 'to = ["hospital-a", "hospital-c"]'), "field 'reveal"),
    ],
)
def test_manifest_difference_stops_every_party(tmp_path: Path, edit: tuple[str, str],
                                               field: str) -> None:
    same = _variant(tmp_path)
    other = _variant(tmp_path, edit)
    consortia = {"hospital-a": same, "hospital-b": same, "hospital-c": other, "dealer": same}
    run = _run(consortia, _policies(same.parent))
    _all_refuse(run, field)
    assert "party 'hospital-c'" in "\n".join(run.nodes["hospital-a"].lines)


def test_different_protocol_code_stops_every_party(tmp_path: Path) -> None:
    same = _variant(tmp_path)
    code = tmp_path / "code"
    shutil.copytree(ROOT / "protocols", code / "protocols")
    lr = code / "protocols" / "horizontal" / "logistic_regression.py"
    original = lr.read_text()
    changed = original.replace("predicted = scores > 0 ", "predicted = scores > 0.1 ")
    assert changed != original
    lr.write_text(changed)
    consortia = dict.fromkeys([*PARTIES, "dealer"], same)
    run = _run(consortia, _policies(same.parent),
               env={"hospital-b": {"PYTHONPATH": f"{code}:{ROOT}"}})
    _all_refuse(run, "field 'protocol.code_sha256'")


def test_policy_refusing_an_output_stops_every_party(tmp_path: Path) -> None:
    same = _variant(tmp_path)
    policies = _policies(same.parent)
    text = policies["hospital-b"].read_text()
    policies["hospital-b"].write_text(text.replace('reveal = ["metrics", "weights"]',
                                                   'reveal = ["metrics"]'))
    run = _run(dict.fromkeys([*PARTIES, "dealer"], same), policies)
    _all_refuse(run, "party 'hospital-b' refuses: its policy does not accept revealing 'weights'")


def test_bad_data_is_named_on_every_party(tmp_path: Path) -> None:
    same = _variant(tmp_path)
    data = same.parent / "data" / "hospital-c-train.csv"
    lines = data.read_text().splitlines()
    cells = lines[4].split(",")
    cells[3] = "n/a"
    lines[4] = ",".join(cells)
    data.write_text("\n".join(lines) + "\n")
    run = _run(dict.fromkeys([*PARTIES, "dealer"], same), _policies(same.parent))
    _all_refuse(run, "hospital-c-train.csv:5: column 'mean_perimeter': 'n/a' is not a number")


def test_reveal_refuses_undeclared_names() -> None:
    session = PartySession("a", 0, 2, ["a", "b"], 0, communicator=None,
                           reveal_to={"metrics": ["a", "b"]})
    with pytest.raises(RevealError, match="'weights' is not an output the manifest declares"):
        session.reveal("weights", torch.zeros(1))
    with pytest.raises(RevealError, match="not to \\['c'\\]"):
        session.reveal("metrics", torch.zeros(1), to=["c"])


def test_separate_party_processes_match_local(tmp_path: Path,
                                              local_result: dict[str, Any]) -> None:
    """Three `smpc party` commands and a dealer, as three organizations would run them."""
    consortium = _on_free_ports(tmp_path)
    base = consortium.parent
    procs = {"dealer": subprocess.Popen(
        [sys.executable, "-m", "parties.cli", "dealer", "--consortium", str(consortium)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)}
    outs = {p: tmp_path / f"{p}.json" for p in PARTIES}
    for p in PARTIES:
        procs[p] = subprocess.Popen(
            [sys.executable, "-m", "parties.cli", "party", "--consortium", str(consortium),
             "--as", p, "--policy", str(base / "policies" / f"{p}.toml"), "--json",
             str(outs[p]), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        for name, proc in procs.items():
            assert proc.wait(timeout=300) == 0, f"{name}: {proc.stdout.read()}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    got = json.loads(outs["hospital-b"].read_text())["revealed"]["metrics"]
    want = local_result["revealed"]["metrics"]
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-3)
    assert got["auc"] == pytest.approx(want["auc"], abs=2e-3)
    assert json.loads(outs["hospital-a"].read_text())["revealed"]["weights"] is not None
