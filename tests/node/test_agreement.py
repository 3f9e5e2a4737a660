"""Manifest agreement between real party processes: a node running other code, or whose
policy refuses an output, stops every node before any data is shared, naming itself and why.
(Field-by-field differences are covered in-process by tests/consortium/test_manifest.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support import PARTIES, all_stop_naming, copy_example, edit, node_commands, run_nodes

ROOT = Path(__file__).resolve().parents[2]


def _policies(base: Path) -> dict[str, Path]:
    return {p: base / "policies" / f"{p}.toml" for p in PARTIES}


def test_different_code_stops_every_party_naming_the_file(tmp_path: Path) -> None:
    base = copy_example(tmp_path)
    consortium = base / "consortium.toml"
    code = tmp_path / "code"
    shutil.copytree(ROOT / "protocols", code / "protocols",
                    ignore=shutil.ignore_patterns("__pycache__"))
    edit(code / "protocols" / "blocks" / "metrics.py",
         ("predicted = scores > 0  #", "predicted = scores > 0.1  #"))
    commands = node_commands(dict.fromkeys([*PARTIES, "dealer"], consortium), _policies(base),
                             env={"hospital-b": {"PYTHONPATH": f"{code}:{ROOT}"}})
    run = run_nodes(commands, timeout=120)
    all_stop_naming(run, "runs different code: file protocols/blocks/metrics.py differs")
    assert "party 'hospital-b'" in "\n".join(run.nodes["hospital-a"].lines)


def test_policy_refusing_an_output_stops_every_party(tmp_path: Path) -> None:
    base = copy_example(tmp_path)
    policies = _policies(base)
    edit(policies["hospital-b"],
         ('reveal = ["metrics", "weights", "marginals"]', 'reveal = ["metrics"]'))
    run = run_nodes(node_commands(dict.fromkeys([*PARTIES, "dealer"], base / "consortium.toml"),
                                  policies), timeout=120)
    all_stop_naming(run, "party 'hospital-b' refuses: its policy does not accept revealing "
                         "'weights'")
