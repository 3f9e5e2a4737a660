"""The Docker demo on a real Docker engine: its results, then faults on real containers.

Skips, saying why, when no engine is reachable (CI may have none). With one, it builds the image
(docker/demo.py: the local base from Debian packages where no registry answers), runs the
compose project of docker/compose.yaml under a name of its own, and checks:
- the hospitals' metrics agree and equal the plaintext twin for the run's joint seed, with the
  demo's ports held by another program on the host (none is published), each node's certificate
  volume holding only its own key;
- `docker kill` of a party, and of the dealer, at hospital-c's second epoch: every other node
  exits 3 naming it within the reconnect window; `--resume` on all then finishes with metrics
  equal to the twin's;
- `docker network disconnect` of a party for 3 s, then reconnect: the run finishes, same check;
- a party container given another party's certificate: refused, named;
- a hospital whose data folder lacks a file: `make docker-demo`'s script reports that hospital
  exiting 2 naming the file, and every other node stopping, naming the hospital.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.multihost.netns import Output

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
_spec = importlib.util.spec_from_file_location("smpc_docker_demo", DOCKER / "demo.py")
assert _spec is not None and _spec.loader is not None
demo = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = demo  # its dataclasses look their module up
_spec.loader.exec_module(demo)

HOSPITALS = demo.HOSPITALS
NODES = demo.NODES
KEEPALIVE, WINDOW = 1, 6
FAULT_FLAGS = ["--keepalive", str(KEEPALIVE), "--reconnect-window", str(WINDOW),
               "--timeout", "60"]
EXIT_LOST = 3
# a lost peer is declared after 2 x keepalive + the window; the rest is start-up noise on
# shared cores
DETECTION_BOUND = 2 * KEEPALIVE + WINDOW + 20


def _engine_problem() -> str | None:
    try:
        demo.compose_cli()
        why = demo.engine_problem()
    except demo.DemoError as exc:
        return str(exc)
    return None if why is None else f"no Docker engine reachable ({why})"


_why = _engine_problem()
if _why:
    print(f"test_docker_engine: skipped: {_why}")
# each test builds on the engine's shared cores (image cache checks) and runs up to two demo runs
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""), pytest.mark.timeout(1200)]

_count = itertools.count()
BASE = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]


@pytest.fixture(scope="module")
def built() -> float:
    """The image, built once for this module; the seconds the build took."""
    demo.ensure_base()
    return demo.Compose(project="smpctest").build()


class Project:
    """A compose project of docker/compose.yaml with an override file; torn down at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.name = f"smpct{os.getpid()}x{next(_count)}"
        self.override = tmp / "override.yaml"
        self.compose = demo.Compose(project=self.name, files=[self.override])
        self.docker = demo.docker_cli()

    def up(self, flags: list[str] | None = None, resume: bool = False,
           services: dict[str, dict[str, Any]] | None = None) -> None:
        """Every node, its command extended by `flags` (and --resume for the parties)."""
        spec: dict[str, Any] = {}
        for node in NODES:
            extra = [*(flags or []), *(["--resume"] if resume and node != "dealer" else [])]
            spec[node] = {"command": [*BASE[node]["command"], *extra],
                          **(services or {}).get(node, {})}
        self.override.write_text(yaml.safe_dump({"services": spec}))
        self.compose("up", "-d", "--no-build", timeout=300)

    def cid(self, service: str) -> str:
        cid = self.compose.container(service)
        assert cid, f"{service} has no container"
        return cid

    def wait_for(self, service: str, pattern: str, timeout: float = 240) -> None:
        """Return as soon as `service` prints a line matching `pattern` (its log followed)."""
        follow = subprocess.Popen([self.docker, "logs", "-f", self.cid(service)], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            if not Output(follow).wait_for(pattern, timeout):
                raise AssertionError(f"{service} never printed {pattern!r}: "
                                     f"{self.text(service)[-800:]}")
        finally:
            follow.kill()
            follow.wait(10)

    def finish(self, timeout: float = 300) -> dict[str, int | None]:
        return self.compose.wait(NODES, timeout)

    def text(self, service: str) -> str:
        return "\n".join(self.compose.logs(service))

    def result(self, party: str) -> dict[str, Any]:
        result = self.compose.result(party)
        assert result is not None, self.text(party)[-800:]
        return result

    def volume(self, name: str) -> list[str]:
        """The files in one of the project's volumes."""
        done = subprocess.run([self.docker, "run", "--rm", "--entrypoint", "ls", "-v",
                               f"{self.name}_{name}:/v:ro", "smpc:latest", "-A", "/v"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return sorted(done.stdout.split())

    def down(self) -> None:
        self.compose.down()


@pytest.fixture()
def project(built: float, tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    try:
        yield p
    finally:
        p.down()


def _all_agree_with_the_twin(p: Project) -> list[dict[str, Any]]:
    results = {h: p.result(h) for h in HOSPITALS}
    assert demo.check(results) == []
    return list(results.values())


@contextlib.contextmanager
def _ports_held(ports: list[int]) -> Iterator[list[int]]:
    """Listen on each of `ports` on the host (those already taken count as held)."""
    socks = []
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", port))
            s.listen()
            socks.append(s)
        except OSError:
            s.close()
    try:
        yield ports
    finally:
        for s in socks:
            s.close()


def test_demo_results_equal_the_plaintext_twin(project: Project, built: float) -> None:
    with _ports_held([7100, 7101, 7102, 7103]):  # nothing is published: no clash
        tic = time.monotonic()
        project.up()
        codes = project.finish()
        seconds = time.monotonic() - tic
    assert codes == dict.fromkeys(NODES, 0), {n: project.text(n)[-600:] for n in NODES}
    print(f"engine {demo.engine_version()}: build {built:.0f} s (cached layers count), "
          f"run {seconds:.0f} s")
    results = _all_agree_with_the_twin(project)
    assert [r["files"] for r in results] == [["/out/model.pt", "/out/model.json"], [], []]
    assert results[0]["revealed"]["weights"] is not None
    assert results[1]["revealed"]["weights"] is None
    for node in NODES:  # each node's certificate volume: the CA and only its own key
        assert project.volume(f"certs-{node}") == ["ca.pem", f"{node}.key", f"{node}.pem"]


def _stopped_naming(p: Project, codes: dict[str, int | None], lost: str) -> None:
    for node in [n for n in NODES if n != lost]:
        lines = p.compose.logs(node)
        last = next((ln for ln in reversed(lines) if "stopped" in ln), "\n".join(lines[-3:]))
        assert codes[node] == EXIT_LOST, f"{node} exited {codes[node]}: {last}"
        assert f"'{lost}'" in last, f"{node} did not name {lost}: {last}"


@pytest.mark.parametrize("victim", ["hospital-b", "dealer"])
def test_docker_kill_then_resume(project: Project, victim: str) -> None:
    project.up(FAULT_FLAGS)
    project.wait_for("hospital-c", r"^epoch: epoch=2 ")
    subprocess.run([project.docker, "kill", project.cid(victim)], check=True, timeout=60,
                   capture_output=True)
    tic = time.monotonic()
    codes = project.finish(120)
    took = time.monotonic() - tic
    assert codes[victim] == 137, project.text(victim)[-400:]  # SIGKILL
    _stopped_naming(project, codes, victim)
    assert took < DETECTION_BOUND, f"the others took {took:.0f} s to stop"
    print(f"docker kill {victim}: every other node stopped naming it within {took:.1f} s")

    project.up(FAULT_FLAGS, resume=True)  # checkpoints live in each results volume
    codes = project.finish()
    assert codes == dict.fromkeys(NODES, 0), {n: project.text(n)[-600:] for n in NODES}
    assert "resumed" in project.text("hospital-a")
    for result in _all_agree_with_the_twin(project):
        assert result["resumed_from"] >= 1


def test_network_disconnect_for_three_seconds_is_survived(project: Project) -> None:
    project.up(FAULT_FLAGS)
    project.wait_for("hospital-c", r"^epoch: epoch=2 ")
    network, cid = f"{project.name}_consortium", project.cid("hospital-c")
    subprocess.run([project.docker, "network", "disconnect", network, cid], check=True,
                   timeout=60, capture_output=True)
    time.sleep(3)
    subprocess.run([project.docker, "network", "connect", "--alias", "hospital-c", network,
                    cid], check=True, timeout=60, capture_output=True)
    codes = project.finish()
    assert codes == dict.fromkeys(NODES, 0), {n: project.text(n)[-600:] for n in NODES}
    restored = [n for n in NODES if "restored" in project.text(n)]
    assert restored, "no link dropped: the disconnect tested nothing"
    _all_agree_with_the_twin(project)


def test_party_with_another_partys_certificate_is_refused(project: Project) -> None:
    policy = (DOCKER / "policies" / "hospital-b.toml").read_text()
    forged = project.tmp / "hospital-b.toml"
    forged.write_text(policy.replace("/certs/hospital-b.", "/certs/hospital-a."))
    forged.chmod(0o644)
    assert forged.read_text() != policy
    target = "/app/docker/policies/hospital-b.toml"
    project.up(["--connect-timeout", "20"], services={"hospital-b": {"volumes": [
        {"type": "volume", "source": "certs-hospital-a", "target": "/certs", "read_only": True},
        {"type": "bind", "source": str(forged), "target": target, "read_only": True}]}})
    codes = project.finish(120)
    assert all(code not in (0, None) for code in codes.values()), codes
    claim = "a certificate naming ['hospital-a'] claims to be party 'hospital-b'"
    said = [n for n in NODES if claim in project.text(n)]
    assert said, {n: project.text(n)[-400:] for n in NODES}
    for node in NODES:
        last = demo.last_error(project.compose.logs(node))
        print(f"{node} exited {codes[node]}: {last}")
        if node != "hospital-b":
            assert "hospital-b" in last, node


def test_missing_data_file_is_named(built: float, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data-b"
    data.mkdir()
    shutil.copy(DOCKER / "data" / "hospital-b" / "train.csv", data / "train.csv")  # no test.csv
    data.chmod(0o755)
    (data / "train.csv").chmod(0o644)
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"services": {"hospital-b": {"volumes": [
        {"type": "bind", "source": str(data), "target": "/data", "read_only": True}]}}}))
    rc = demo.main(["-f", str(override), "--project", f"smpct{os.getpid()}data",
                    "--results", str(tmp_path / "out"), "--timeout", "180"])
    err = capsys.readouterr().err
    assert rc == demo.EXIT_NODE, err
    lines = {ln.split(" ", 1)[0]: ln for ln in err.splitlines() if " exited " in ln}
    assert lines["hospital-b"].startswith("hospital-b exited 2: ") and "/data/test.csv" in \
        lines["hospital-b"], err
    for node in ["dealer", "hospital-a", "hospital-c"]:
        assert "exited 0" not in lines[node] and "'hospital-b'" in lines[node], err
    assert json.dumps(sorted(lines)) == json.dumps(sorted(NODES))  # none left running
