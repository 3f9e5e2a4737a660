"""`smpc selftest`, the dealer path, and one-line errors for bad settings."""

from __future__ import annotations

import filecmp
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from parties.node.launcher import launch, party_names

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n", [3, 4])
def test_selftest_exits_zero(smpc_cmd: list[str], n: int) -> None:
    proc = subprocess.run([*smpc_cmd, "selftest", "--parties", str(n)], capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for op in ("add", "mul", "matmul", "conv2d", "relu", "div (private)", "sigmoid",
               "softmax", "nn training step"):
        assert f" {op} " in proc.stdout
    assert "all operations within tolerance" in proc.stdout


def test_dealer_serves_the_randomness() -> None:
    parties = party_names(3)
    run = launch(parties, "selftest", timeout=240, extra=["--quiet"])
    assert run.ok
    served = run.nodes["dealer"].result["served"]
    assert served["additive"] > 0 and served["binary"] > 0 and served["wraps"] > 0
    stats = run.nodes["party0"].result["stats"]
    # every draw was served (some guesses ahead go unused); never more messages than draws
    assert sum(served.values()) >= stats["dealer_draws"] > 0
    assert 0 < stats["dealer_requests"] <= stats["dealer_draws"]


def test_port_in_use_is_one_line_and_nonzero(smpc_cmd: list[str]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        proc = subprocess.run(
            [*smpc_cmd, "party", "--name", "a", "--parties",
             f"a=127.0.0.1:{port},b=127.0.0.1:1", "--dealer", "127.0.0.1:2",
             "--session", "x", "--insecure"], capture_output=True, text=True, timeout=60)
    finally:
        sock.close()
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], proc.stderr


def test_unknown_peer_address_is_one_line(smpc_cmd: list[str]) -> None:
    proc = subprocess.run(
        [*smpc_cmd, "party", "--name", "a", "--parties", "a=127.0.0.1:0,b=127.0.0.1:9",
         "--dealer", "127.0.0.1:9", "--session", "x", "--connect-timeout", "1", "--insecure"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "party 'b': did not answer at 127.0.0.1:9 within 1 s" in proc.stderr


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "proto"),
                    f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", str(ROOT / "proto/parties/wire/wire.proto")],
                   check=True)
    for name in ("wire_pb2.py", "wire_pb2.pyi", "wire_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / "parties" / "wire" / name, ROOT / "parties" / "wire" / name,
                           shallow=False), (
            f"parties/wire/{name} differs from what proto/ generates: run `make protos`")


def test_plaintext_needs_insecure_and_loopback(smpc_cmd: list[str]) -> None:
    base = [*smpc_cmd, "party", "--name", "a", "--session", "x", "--dealer", "127.0.0.1:9"]
    proc = subprocess.run([*base, "--parties", "a=127.0.0.1:0,b=127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "plaintext links need --insecure" in proc.stderr
    # 192.0.2.0/24 is TEST-NET-1: refused before any connection is tried
    proc = subprocess.run([*base, "--parties", "a=127.0.0.1:0,b=192.0.2.7:9", "--insecure"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--insecure is allowed only when every address is on loopback" in proc.stderr
