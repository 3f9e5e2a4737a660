"""The committed gRPC stubs are what proto/ generates (regenerate: `make protos`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ["wire_pb2.py", "wire_pb2.pyi", "wire_pb2_grpc.py"]


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", "proto", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}",
         "proto/parties/wire/wire.proto"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    stale = [name for name in STUBS
             if (tmp_path / "parties" / "wire" / name).read_bytes()
             != (ROOT / "parties" / "wire" / name).read_bytes()]
    assert not stale, f"{stale} differ from proto/parties/wire/wire.proto: run `make protos`"
