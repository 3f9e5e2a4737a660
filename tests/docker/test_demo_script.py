"""docker/demo.py (`make docker-demo`) stops before any container, saying why: no Docker, no
engine (no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "docker" / "demo.py"


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)


def test_without_docker_it_says_what_to_install(tmp_path: Path) -> None:
    done = _demo({**os.environ, "PATH": str(tmp_path)})  # a PATH with no docker on it
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "demo: error: Docker is not installed: install the Docker engine and Compose "
        "(Debian/Ubuntu: apt-get install docker.io docker-compose; elsewhere: Docker Engine "
        "from docs.docker.com/engine/install)"]
    assert done.stdout == ""


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker command installed")
def test_an_engine_that_does_not_answer_is_named_with_how_to_start_it(tmp_path: Path) -> None:
    """DOCKER_HOST names a socket nobody serves: the script must not start an engine of its
    own for it, only say how."""
    socket = tmp_path / "nobody.sock"
    done = _demo({**os.environ, "DOCKER_HOST": f"unix://{socket}"})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    if "Compose is not installed" in lines[0]:
        pytest.skip("docker is installed without Compose")
    assert lines[0].startswith(f"demo: error: the Docker engine at unix://{socket} is not "
                               "running ("), lines
    assert "start it (" in lines[0]
    assert "dockerd" in lines[0] or "systemctl start docker" in lines[0]
    assert not socket.exists()
