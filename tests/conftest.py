"""Shared fixtures: the `smpc` command, one hospitals run and one self-test per test session."""

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


def run_smpc(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """`smpc ARGS` in `cwd` with this checkout first on the path, bounded by `timeout`."""
    path = os.pathsep.join([*(env or {}).get("PYTHONPATH", "").split(os.pathsep), str(ROOT)])
    return subprocess.run([sys.executable, "-m", "parties.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {}), "PYTHONPATH": path.strip(os.pathsep)})


@pytest.fixture(scope="session")
def local_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The hospitals example on loopback (10 epochs), once per test session; run in a scratch
    folder, which then holds its out/ and checkpoints/ (key "folder")."""
    folder = tmp_path_factory.mktemp("hospitals")
    consortium = ROOT / "examples" / "hospitals" / "consortium.toml"
    proc = run_smpc(["local", str(consortium), "--json", str(folder / "out.json")], folder, 400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((folder / "out.json").read_text())
    data["stdout"], data["folder"] = proc.stdout, folder
    return data


@pytest.fixture(scope="session")
def selftest_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`smpc selftest --parties 3`, once per test session."""
    folder = tmp_path_factory.mktemp("selftest")
    proc = run_smpc(["selftest", "--parties", "3", "--json", str(folder / "out.json")], folder,
                    300)
    data = json.loads((folder / "out.json").read_text()) if proc.returncode in (0, 1) else {}
    return {"proc": proc, **data}
