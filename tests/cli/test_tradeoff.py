"""`smpc tradeoff`: --quick on the hospitals example writes a report with every technique and a
valid PNG; --quick on a cut-down digits copy (the neural network, 10 classes) gives every technique
a number or a reason; bad inputs are one-line errors before anything runs."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from parties.node import tradeoff
from tests.conftest import run_smpc
from tests.protocols.digits import digits_copy
from tests.support import HOSPITALS

CONSORTIUM = str(HOSPITALS / "consortium.toml")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `smpc tradeoff --quick` run (plaintext twins, 2 epsilons, 2 values of k)."""
    folder = tmp_path_factory.mktemp("tradeoff")
    proc = run_smpc(["tradeoff", CONSORTIUM, "--quick", "--json", str(folder / "t.json"),
                     "--plot", str(folder / "t.png")], folder, 300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"proc": proc, "report": json.loads((folder / "t.json").read_text()),
            "png": (folder / "t.png").read_bytes()}


def test_the_report_has_every_technique_with_numbers(quick: dict[str, Any]) -> None:
    report = quick["report"]
    keys = [t.key for t in tradeoff.TECHNIQUES]
    assert {r["technique"] for r in report["rows"]} == set(keys)
    assert [t["key"] for t in report["techniques"]] == keys
    per = {k: [r for r in report["rows"] if r["technique"] == k] for k in keys}
    assert [r["party"] for r in per["alone"]] == ["hospital-a", "hospital-b", "hospital-c"]
    for key in ("mpc-dp", "fedavg-dp", "synthetic"):
        assert len(per[key]) == 2
        for row, target in zip(sorted(per[key], key=lambda r: r["epsilon"]), (1.0, 8.0),
                               strict=True):
            assert 0.95 * target <= row["epsilon"] <= target  # spent, from the accountant
    assert sorted(r["k"] for r in per["k-anonymity"]) == [5, 50]
    for row in report["rows"]:
        assert 0.4 <= row["accuracy"] <= 1 and 0 <= row["auc"] <= 1, row
        assert -1 <= row["advantage"] <= 1 and row["seconds"] >= 0
    # the k-anonymized releases are k-anonymous; the twins say so
    for row in per["k-anonymity"]:
        assert row["details"]["release"]["k"] >= row["k"]
    assert all("twin" in r["how"] for k in ("mpc", "mpc-dp", "fedavg") for r in per[k])
    # pooling the rows beats the weakest party alone; MPC's twin equals pooling
    pooled = per["pooled"][0]["accuracy"]
    assert pooled > min(r["accuracy"] for r in per["alone"])
    assert per["mpc"][0]["accuracy"] == pytest.approx(pooled)
    assert report["settings"]["delta"] == 1e-5 and "every party's rows" in report["data"]


def test_the_terminal_table_and_progress(quick: dict[str, Any]) -> None:
    proc = quick["proc"]
    assert "a planning run: every party's data is read on this machine" in proc.stdout
    assert "k-anonymized pooling (Mondrian)" in proc.stdout and "MIA adv" in proc.stdout
    assert "12/12 done" in proc.stderr  # the progress bar over the 12 runs


def test_the_plot_is_a_png_of_plausible_size(quick: dict[str, Any]) -> None:
    png = quick["png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert 800 <= width <= 2000 and 300 <= height <= 1000
    assert 20_000 <= len(png) <= 1_000_000
    assert png.rstrip(b"\x00")[-8:-4] == b"IEND"


def test_digits_network_has_every_technique(tmp_path: Path) -> None:
    """The neural-network workload on 4 banks of 120 training rows: every technique has a
    numeric accuracy and macro-F1 (no AUC: 10 classes) or says why it is not available."""
    consortium = digits_copy(tmp_path, "consortium.toml", rows=120)
    proc = run_smpc(["tradeoff", str(consortium), "--quick", "--json",
                     str(tmp_path / "t.json")], tmp_path, 300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["protocol"] == "neural-network" and report["members"] == 480
    keys = [t.key for t in tradeoff.TECHNIQUES]
    assert {r["technique"] for r in report["rows"]} == set(keys)
    for row in report["rows"]:
        if row["accuracy"] is None:
            assert row["how"].startswith("not available"), row
            continue
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["f1"] <= 1 and row["auc"] is None, row
        assert -1 <= row["advantage"] <= 1, row
    per = {k: [r for r in report["rows"] if r["technique"] == k] for k in keys}
    for key in ("mpc-dp", "fedavg-dp", "synthetic"):  # the DP twins spend what was asked
        assert sorted(round(r["epsilon"]) for r in per[key]) == [1, 8], per[key]
    # ten classes: chance is 0.1; pooled rows train a network far above it, MPC's twin the same
    pooled = per["pooled"][0]["accuracy"]
    assert pooled > 0.6 and per["mpc"][0]["accuracy"] == pytest.approx(pooled)
    assert [r["party"] for r in per["alone"]] == ["bank-north", "bank-south", "bank-east",
                                                  "bank-west"]


def _refused(args: list[str], needle: str, folder: Path) -> None:
    proc: subprocess.CompletedProcess[str] = run_smpc(
        ["tradeoff", CONSORTIUM, "--json", str(folder / "t.json"), *args], folder, 120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "[#" not in proc.stderr and not (folder / "t.json").exists()  # nothing ran


@pytest.mark.parametrize(("args", "needle"), [
    (["--quasi-identifiers", "mean_radius,zip_code"],
     "quasi-identifier 'zip_code' is not a feature of table 'patients'"),
    (["--k", "5,500"], "k 500 is larger than party 'hospital-c''s 82 training rows"),
    (["--epsilons", "1,0"], "--epsilons '1,0': every value must be positive, got 0"),
    (["--epsilons", "-0.5"], "every value must be positive, got -0.5"),
    (["--epsilons", "1,x"], "'x' is not a number"),
    (["--plot", "no/such/folder/t.png"], "does not exist"),
    (["--plot", "t.svg"], "name a .png file"),
])
def test_bad_input_is_one_line_before_anything_runs(args: list[str], needle: str,
                                                    tmp_path: Path) -> None:
    _refused(args, needle, tmp_path)
