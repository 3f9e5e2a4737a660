"""Pooling the parties' tables into one secret table: by rows (shuffled with the joint seed,
exactly as the plaintext twin pools them) and by columns (vertical partitioning)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from protocols.api import PlainTable
from protocols.blocks.sharing import pool_plain
from tests.conftest import run_smpc

HERE = Path(__file__).resolve().parent
ROWS = {"north": [[1, 10, "a"], [2, 20, "b"], [3, 30, "a"]],
        "south": [[4, 40, "b"], [5, 50, "b"]],
        "east": [[6, 60, "a"], [7, 70, "a"], [8, 80, "b"], [9, 90, "a"]]}


def _consortium(tmp: Path, layout: str, rows: dict[str, list[list[object]]]) -> Path:
    names = list(rows)
    text = ['[consortium]', 'name = "pool"', 'ca = ""', ""]
    for n in names:
        text += ["[[parties]]", f'name = "{n}"', 'address = "127.0.0.1:0"', ""]
    text += ["[dealer]", 'address = "127.0.0.1:0"', "", "[protocol]", 'name = "pooling"',
             f"file = {json.dumps(str(HERE / 'pooling.py'))}", "", "[protocol.parameters]",
             f'layout = "{layout}"', "", "[[reveal]]", 'name = "pooled"',
             "to = [" + ", ".join(f'"{n}"' for n in names) + "]", "",
             "[tables.t]", 'features = ["x", "y", "kind"]', "[tables.t.types]",
             'kind = "categorical"', "[tables.t.categories]", 'kind = ["a", "b"]',
             "[tables.t.ranges]", "y = [0, 100]"]
    (tmp / "consortium.toml").write_text("\n".join(text) + "\n")
    (tmp / "policies").mkdir()
    for n in names:
        (tmp / f"{n}.csv").write_text("x,y,kind\n" + "".join(
            f"{a},{b},{c}\n" for a, b, c in rows[n]))
        (tmp / "policies" / f"{n}.toml").write_text(
            f'party = "{n}"\n[data]\ndata = "../{n}.csv"\n[accept]\nprotocols = ["pooling"]\n'
            'reveal = ["pooled"]\n')
    return tmp / "consortium.toml"


def _run(consortium: Path, tmp: Path) -> dict:
    proc = run_smpc(["local", str(consortium), "--insecure", "--json", str(tmp / "o.json")], tmp,
                    180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp / "o.json").read_text())


def _plain(rows: list[list[object]]) -> PlainTable:
    x = torch.tensor([[float(a), float(b) / 100, float(c == "a"), float(c == "b")]
                      for a, b, c in rows])
    return PlainTable(x, None, ("x", "y", "kind=a", "kind=b"))


def test_rows_are_pooled_and_shuffled_like_the_plaintext_twin(tmp_path: Path) -> None:
    out = _run(_consortium(tmp_path, "rows", ROWS), tmp_path)
    got = out["revealed"]["pooled"]
    assert got["counts"] == [3, 2, 4] and got["columns"] == ["x", "y", "kind=a", "kind=b"]
    want, _, origin = pool_plain([_plain(r) for r in ROWS.values()], bytes.fromhex(out["seed"]),
                                 "data")
    assert torch.tensor(got["features"]) == pytest.approx(want.float(), abs=1e-4)
    assert sorted(got["order"]) == list(range(9)) and got["order"] != list(range(9))
    ranks = [0] * 3 + [1] * 2 + [2] * 4
    assert origin.tolist() == [ranks[i] for i in got["order"]]


def test_columns_are_concatenated_for_aligned_rows(tmp_path: Path) -> None:
    rows = {"north": ROWS["north"], "south": [[4, 40, "b"], [5, 50, "b"], [6, 60, "a"]],
            "east": [[7, 70, "a"], [8, 80, "b"], [9, 90, "a"]]}
    out = _run(_consortium(tmp_path, "columns", rows), tmp_path)
    got = out["revealed"]["pooled"]
    want = torch.cat([_plain(r).features for r in rows.values()], dim=1)
    assert torch.tensor(got["features"]) == pytest.approx(want, abs=1e-4)
    assert got["columns"][:2] == ["north.x", "north.y"] and got["columns"][4] == "south.x"
    assert got["counts"] == [3, 3, 3]


def test_columns_of_unaligned_rows_are_refused(tmp_path: Path) -> None:
    proc = run_smpc(["local", str(_consortium(tmp_path, "columns", ROWS)), "--insecure"],
                    tmp_path, 180)
    assert proc.returncode != 0
    assert "vertical parties must hold the same rows" in proc.stderr
