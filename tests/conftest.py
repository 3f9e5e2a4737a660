"""Shared helpers: launching real party processes with bounded time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smpc_cmd() -> list[str]:
    """The `smpc` command of this checkout."""
    return [sys.executable, "-m", "parties.cli"]


@pytest.fixture(autouse=True)
def _in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="session")
def local_result(  # the hospitals example on loopback, once per test run
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("local") / "out.json"
    consortium = ROOT / "examples" / "hospitals" / "consortium.toml"
    proc = subprocess.run([sys.executable, "-m", "parties.cli", "local", str(consortium),
                           "--json", str(out)], capture_output=True, text=True, timeout=400,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    data["stdout"] = proc.stdout
    return data
