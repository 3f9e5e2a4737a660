"""docker/: the compose file, its consortium, policies and data agree with each other and the
example, and use nothing Compose 1.29 / Engine 20.10 lack (no engine needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from parties.cli.main import parser
from parties.consortium.config import load_consortium, load_policy

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
IN_IMAGE = "/app/docker"  # the Dockerfile copies docker/ there


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("volumes", [])


def test_consortium_matches_the_example_but_addresses() -> None:
    docker = load_consortium(DOCKER / "consortium.toml")
    example = load_consortium(ROOT / "examples/hospitals/consortium.toml")
    for field in ("name", "protocol", "protocol_version", "protocol_file", "parameters",
                  "inputs", "tables", "reveal", "party_names"):
        assert getattr(docker, field) == getattr(example, field), field
    assert [p.roles for p in docker.parties] == [p.roles for p in example.parties]
    assert docker.ca == "/certs/ca.pem"


def test_every_node_runs_the_smpc_command_with_its_own_files(compose: dict[str, Any]) -> None:
    consortium = load_consortium(DOCKER / "consortium.toml")
    services = compose["services"]
    assert set(services) == {"certs", "dealer", *consortium.party_names}
    nodes = {"dealer": consortium.dealer, **{p.name: p.address for p in consortium.parties}}
    for name, address in nodes.items():
        svc = services[name]
        host, _, port = address.rpartition(":")
        assert svc["hostname"] == host and svc["expose"] == [port]
        args = parser().parse_args(svc["command"])  # the flags exist and parse
        assert args.consortium == f"{IN_IMAGE}/consortium.toml"
        certs = [v for v in _volumes(svc) if v["target"] == "/certs"]
        assert certs == [{"type": "volume", "source": f"certs-{name}", "target": "/certs",
                          "read_only": True}]
        others = [n for n in nodes if n != name]
        for vol in _volumes(svc):
            assert not any(o in str(vol["source"]) for o in others), (name, vol)
        if name == "dealer":
            assert svc["command"][0] == "dealer"
            continue
        assert svc["command"][:2] == ["party", "--consortium"] and args.as_ == name
        policy = load_policy(DOCKER / "policies" / f"{name}.toml")
        assert args.policy == f"{IN_IMAGE}/policies/{name}.toml" and policy.party == name
        assert (policy.key, policy.cert) == (Path(f"/certs/{name}.key"), Path(f"/certs/{name}.pem"))
        binds = [v for v in _volumes(svc) if v["type"] == "bind"]
        assert binds == [{"type": "bind", "source": f"./data/{name}", "target": "/data",
                          "read_only": True}]
        assert set(policy.data) == {"train", "test"}
        for split, path in policy.data.items():
            assert path == Path(f"/data/{split}.csv")
            mounted = (DOCKER / "data" / name / f"{split}.csv").read_bytes()
            assert mounted == (ROOT / f"examples/hospitals/data/{name}-{split}.csv").read_bytes()
        assert {"type": "volume", "source": f"results-{name}", "target": "/out"} in _volumes(svc)
        assert args.out == "/out" and args.json == "/out/result.json"


def test_certs_service_writes_each_nodes_own_volume(compose: dict[str, Any]) -> None:
    svc = compose["services"]["certs"]
    args = parser().parse_args(svc["command"])
    assert args.command == "certs" and args.consortium == f"{IN_IMAGE}/consortium.toml"
    assert args.per_node and args.out == "/certs"
    nodes = ["dealer", *load_consortium(DOCKER / "consortium.toml").party_names]
    assert _volumes(svc) == [f"certs-{n}:/certs/{n}" for n in nodes]
    assert svc["entrypoint"] == ["sh", f"{IN_IMAGE}/certs.sh"] and svc["user"] == "root"
    script = (DOCKER / "certs.sh").read_text()
    assert 'smpc "$@"' in script and "chown -R smpc:smpc /certs" in script


def test_compose_file_needs_nothing_compose_1_29_lacks(compose: dict[str, Any]) -> None:
    """Compose 1.29 rejects a top-level `name` and volume `subpath` (Engine 26+, Compose
    2.23+); `version` is obsolete in Compose v2."""
    assert not {"name", "version"} & set(compose)
    for name, svc in compose["services"].items():
        assert svc.get("ports") is None, f"{name} publishes a port on the host"
        assert svc["image"] == "smpc:latest" and svc["build"]["dockerfile"] == "docker/Dockerfile"
        for vol in _volumes(svc):
            assert isinstance(vol, str) or "subpath" not in vol.get("volume", {}), (name, vol)
            source = vol.split(":")[0] if isinstance(vol, str) else vol["source"]
            assert source in compose["volumes"] or (DOCKER / source).is_dir(), (name, vol)


@pytest.mark.skipif(shutil.which("docker-compose") is None and shutil.which("docker") is None,
                    reason="no docker-compose or docker command to validate the file with")
def test_compose_accepts_the_file() -> None:
    """`config` validates without an engine; Compose 1.29 where installed, else v2."""
    cli = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    done = subprocess.run([*cli, "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    if done.returncode != 0 and cli[0] == "docker" and "compose" in done.stderr \
            and "unknown" in done.stderr:
        pytest.skip("docker has no compose plugin")
    assert done.returncode == 0, done.stderr


def test_dockerfile_takes_a_base_a_ca_bundle_and_local_wheels() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim" in text and text.count("FROM ${BASE}") == 2
    assert "torch==2.13.0" in text and "--no-deps crypten==0.4.1" in text
    assert "ARG PIP_CERT" in text and "ARG TORCH_FROM" in text
    assert "--index-url $TORCH_CPU_INDEX" in text  # never PyPI's CUDA build by default
    assert "USER smpc" in text and 'ENTRYPOINT ["smpc"]' in text
    final = text[text.rindex("FROM ${BASE}"):]
    assert "/local" not in final  # the CA bundle and wheels stay in the build stage
    assert "COPY docker/consortium.toml docker/certs.sh docker/" in final  # IN_IMAGE
    assert "COPY docker/policies docker/policies" in final
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*" and "!docker/local" in ignore  # the context holds only what's used


def test_build_arguments_reach_the_build(compose: dict[str, Any]) -> None:
    args = compose["x-build"]["args"]
    assert args == {"BASE": "${SMPC_BASE:-python:3.11-slim}", "TORCH_FROM": "${SMPC_TORCH_FROM:-}",
                    "PIP_CERT": "${SMPC_PIP_CERT:-}"}
