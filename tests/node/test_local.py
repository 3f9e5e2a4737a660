"""`smpc local` settings: the receive timeout never bounds a whole run; policies by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parties.consortium.config import ConfigError, load_consortium
from parties.node import local
from tests.support import HOSPITALS


def test_the_receive_timeout_does_not_bound_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_launch(commands: dict[str, list[str]], timeout: float | None = None,
                    **kwargs: Any) -> Any:
        seen["timeout"], seen["commands"] = timeout, commands
        raise RuntimeError("stop here")

    monkeypatch.setattr(local, "launch", fake_launch)
    with pytest.raises(RuntimeError, match="stop here"):
        local.run_local(HOSPITALS / "consortium.toml", timeout=5, insecure=True)
    assert seen["timeout"] is None  # no limit unless --max-run-time
    party = seen["commands"]["hospital-a"]
    assert party[party.index("--timeout") + 1] == "5"
    with pytest.raises(RuntimeError):
        local.run_local(HOSPITALS / "consortium.toml", insecure=True, max_run_time=30)
    assert seen["timeout"] == 90 and "--max-run-time" in seen["commands"]["hospital-b"]


def test_policies_can_be_named(tmp_path: Path) -> None:
    c = load_consortium(HOSPITALS / "consortium.toml")
    paths = local.policy_paths(c, {"hospital-b": str(tmp_path / "b.toml")})
    assert paths["hospital-b"] == tmp_path / "b.toml"
    assert paths["hospital-a"] == HOSPITALS / "policies" / "hospital-a.toml"
    with pytest.raises(ConfigError, match="'hospital-z' is not a party"):
        local.policy_paths(c, {"hospital-z": "x.toml"})
