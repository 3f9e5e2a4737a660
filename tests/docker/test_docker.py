"""docker/: the compose file, its consortium and policies agree with each other and the example."""

from __future__ import annotations

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
        assert certs == [{"type": "volume", "source": "certs", "target": "/certs",
                          "read_only": True, "volume": {"subpath": name}}]
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
        binds = {v["target"]: v for v in _volumes(svc) if v["type"] == "bind"}
        assert set(policy.data) == {"train", "test"}
        assert set(binds) == {str(path) for path in policy.data.values()}
        for split, path in policy.data.items():
            target = str(path)
            source = DOCKER / binds[target]["source"]
            assert binds[target]["read_only"] and source.resolve() == (
                ROOT / f"examples/hospitals/data/{name}-{split}.csv").resolve()
        assert {"type": "volume", "source": f"results-{name}", "target": "/out"} in _volumes(svc)
        assert args.out == "/out" and args.json == "/out/result.json"


def test_certs_service_writes_one_folder_per_node(compose: dict[str, Any]) -> None:
    svc = compose["services"]["certs"]
    args = parser().parse_args(svc["command"])
    assert args.consortium == f"{IN_IMAGE}/consortium.toml"
    assert args.per_node and args.out == "/certs"
    assert _volumes(svc) == ["certs:/certs"]


def test_dockerfile_is_slim_non_root_and_pinned() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "torch==2.13.0" in text and "--no-deps crypten==0.4.1" in text
    assert "USER smpc" in text and 'ENTRYPOINT ["smpc"]' in text
    assert "COPY docker docker" in text  # IN_IMAGE
