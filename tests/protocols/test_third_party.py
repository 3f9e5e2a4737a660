"""A protocol from a separately installed package (examples/column-statistics, registered by
its entry point) runs through `smpc local` with manifest agreement and reveal enforcement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_smpc
from tests.support import copy_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "column-statistics"
CLINICS = ["clinic-north", "clinic-south", "clinic-east"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed (with its entry point) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    source = build / "pkg"
    import shutil

    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("data", "policies", "certs"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return target


def test_unregistered_protocol_is_refused_listing_the_registered(tmp_path: Path) -> None:
    proc = run_smpc(["manifest", str(EXAMPLE / "consortium.toml")], tmp_path, 60)
    assert proc.returncode == 2
    assert "unknown protocol 'column-statistics'" in proc.stderr
    assert "logistic-regression" in proc.stderr and "consortium.toml:" in proc.stderr


def test_installed_package_runs_through_smpc_local(installed: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(installed)}
    listed = run_smpc(["protocols"], tmp_path, 60, env)
    assert "column-statistics v1 (smpc_column_stats:PROTOCOL)" in listed.stdout
    shown = run_smpc(["manifest", str(EXAMPLE / "consortium.toml")], tmp_path, 60, env)
    assert shown.returncode == 0, shown.stderr
    assert "1 of the protocol's own" in shown.stdout
    base = copy_example(tmp_path, EXAMPLE, CLINICS)
    proc = run_smpc(["local", str(base / "consortium.toml"), "--json", str(tmp_path / "o.json")],
                    tmp_path, 300, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((tmp_path / "o.json").read_text())
    stats = out["revealed"]["statistics"]
    want = out["baseline"]["pooled"]  # the package's plaintext twin, run by smpc local
    assert set(stats) == {"age", "bmi", "systolic_bp", "smoker=never", "smoker=former",
                          "smoker=current"}
    for column, got in stats.items():
        assert got["count"] == 350
        assert got["mean"] == pytest.approx(want[column]["mean"], abs=1e-3)
        assert got["variance"] == pytest.approx(want[column]["variance"], abs=5e-3)
        assert got["histogram"] == want[column]["histogram"]
    # every party learned the same statistics (declared: to all three)
    learned = [out["revealed_by_party"][c]["statistics"] for c in CLINICS]
    assert learned[0] == learned[1] == learned[2]

