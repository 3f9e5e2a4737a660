"""The `smpc` command: the self-test, commands that connect to nobody, and one-line errors
for every setting or flag combination that cannot work."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_smpc
from tests.support import HOSPITALS, copy_example, edit, on_free_ports

ROOT = Path(__file__).resolve().parents[2]


def test_selftest_checks_every_operation(selftest_result: dict[str, Any]) -> None:
    proc = selftest_result["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for op in ("add", "mul", "matmul", "conv2d", "relu", "div (private)", "sigmoid",
               "softmax", "nn training step"):
        assert f" {op} " in proc.stdout
    assert "all operations within tolerance" in proc.stdout and "mutual TLS" in proc.stdout
    rows = selftest_result["revealed"]["results"]
    assert all(r["ok"] and r["max_error"] <= r["tolerance"] for r in rows)


def test_the_dealer_serves_the_randomness(selftest_result: dict[str, Any]) -> None:
    served = selftest_result["dealer"]["served"]
    assert served["additive"] > 0 and served["binary"] > 0 and served["wraps"] > 0
    timings = selftest_result["timings"]["party0"]
    # every draw was served (some guesses ahead go unused); never more messages than draws
    assert sum(served.values()) >= timings["dealer_draws"] > 0
    assert 0 < timings["dealer_requests"] <= timings["dealer_draws"]
    assert selftest_result["timings"]["party1"]["dealer_requests"] == 0  # only party 0 asks


def _one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and needle in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["local", str(HOSPITALS / "consortium.toml"), "--parties", "3"],
         "--parties and --set go with a protocol name"),
        (["local", "selftest"], "'selftest' is not a consortium file (.toml)"),
        (["local", str(HOSPITALS / "consortium.toml"), "--policy", "hospital-a"],
         "--policy 'hospital-a': write PARTY=PATH"),
        (["local", str(HOSPITALS / "consortium.toml"), "--policy", "nobody=x.toml"],
         "'nobody' is not a party"),
        (["local", "selftest", "--parties", "3", "--policy", "a=b"],
         "--policy and --max-run-time go with a consortium file"),
        (["local", "selftest", "--parties", "9"], "--parties 9: smpc runs 2 to 8 parties"),
        (["local", "logistic-regression", "--parties", "3"],
         "protocol logistic-regression needs data (input 'train')"),
        (["local", "no-such-protocol", "--parties", "3"], "unknown protocol 'no-such-protocol'"),
    ],
)
def test_flag_combinations_that_cannot_work(tmp_path: Path, args: list[str], needle: str) -> None:
    _one_line_error(run_smpc(args, tmp_path, 60), needle)


def test_check_connects_to_nobody_and_prints_the_digest(tmp_path: Path) -> None:
    base = copy_example(tmp_path)
    args = ["check", "--consortium", str(base / "consortium.toml"), "--as", "hospital-a",
            "--policy", str(base / "policies" / "hospital-a.toml")]
    proc = run_smpc(args, tmp_path, 60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "input train:" in proc.stdout and "228 rows" in proc.stdout
    assert "ignoring columns not in the schema: patient_id" in proc.stdout
    shown = run_smpc(["manifest", str(base / "consortium.toml")], tmp_path, 60)
    digest = shown.stdout.strip().splitlines()[-1]
    assert digest.startswith("manifest digest ") and digest in proc.stdout
    data = base / "data" / "hospital-a-train.csv"
    data.write_text(data.read_text().replace(",0\n", ",2\n", 1))
    bad = run_smpc(args, tmp_path, 60)
    assert bad.returncode == 2 and f"{data}:" in bad.stdout and "'malignant'" in bad.stdout


def test_protocols_are_listed(tmp_path: Path) -> None:
    proc = run_smpc(["protocols"], tmp_path, 60)
    assert "logistic-regression v2" in proc.stdout and "selftest v2" in proc.stdout
    one = run_smpc(["protocols", "logistic-regression"], tmp_path, 60)
    assert "parameter epochs: an integer >= 1, default 10" in one.stdout
    assert "output weights (optional)" in one.stdout


def _party(base: Path, consortium: Path, name: str, *extra: str) -> list[str]:
    return ["party", "--consortium", str(consortium), "--as", name, "--policy",
            str(base / "policies" / f"{name}.toml"), *extra]


def test_port_in_use_is_one_line_and_nonzero(tmp_path: Path) -> None:
    base = copy_example(tmp_path)
    consortium = on_free_ports(base / "consortium.toml")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        proc = run_smpc(_party(base, consortium, "hospital-a", "--listen", f"127.0.0.1:{port}"),
                        tmp_path, 60)
    finally:
        sock.close()
    _one_line_error(proc, f"cannot listen on 127.0.0.1:{port}")


def test_a_peer_that_does_not_answer_is_named(tmp_path: Path) -> None:
    base = copy_example(tmp_path)
    consortium = on_free_ports(base / "consortium.toml")
    proc = run_smpc(_party(base, consortium, "hospital-a", "--connect-timeout", "1"), tmp_path,
                    60)
    assert proc.returncode == 2
    assert "party 'hospital-b': did not answer at 127.0.0.1:" in proc.stderr
    assert "within 1 s" in proc.stderr


def test_plaintext_needs_insecure_and_loopback(tmp_path: Path) -> None:
    base = copy_example(tmp_path)
    no_ca = edit(base / "consortium.toml", ('ca = "certs/ca.pem"', 'ca = ""'),
                 to=base / "no-ca.toml")
    _one_line_error(run_smpc(_party(base, no_ca, "hospital-a"), tmp_path, 60),
                    "the consortium names no CA")
    # 192.0.2.0/24 is TEST-NET-1: refused before any connection is tried
    far = edit(base / "consortium.toml", ("127.0.0.1:7102", "192.0.2.7:7102"),
               to=base / "far.toml")
    _one_line_error(run_smpc(_party(base, far, "hospital-a", "--insecure"), tmp_path, 60),
                    "--insecure is allowed only when every address in")
