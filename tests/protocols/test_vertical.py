"""Vertical partitioning end to end: examples/bank-insurer-retailer under `smpc local`.

One run (every party a process, the mesh recorded with SMPC_WIRE_LOG) shows: logistic
regression on the joined columns matches the plaintext join within 1 pp and beats the bank
on its own columns; the intersection size reaches every party; no byte any node sent
holds an identifier, raw, hashed or mapped into the group without a key. A second, small
run with no common customer stops every party before training.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocols.blocks import psi
from tests.conftest import run_smpc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bank-insurer-retailer"
PARTIES = {"bank": "customer_id", "insurer": "client_ref", "retailer": "loyalty_id"}


def _identifiers(folder: Path) -> dict[str, list[str]]:
    out = {}
    for party, column in PARTIES.items():
        with (folder / "data" / f"{party}.csv").open() as f:
            out[party] = [row[column] for row in csv.DictReader(f)]
    return out


@pytest.fixture(scope="module")
def vertical(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example on loopback, once per module, every node's sent bytes recorded."""
    folder = tmp_path_factory.mktemp("vertical")
    proc = run_smpc(["local", str(EXAMPLE / "consortium.toml"), "--insecure", "--json",
                     str(folder / "out.json")], folder, 400,
                    env={"SMPC_WIRE_LOG": str(folder / "wire")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((folder / "out.json").read_text())
    out["stdout"], out["folder"] = proc.stdout, folder
    return out


def test_training_on_joined_columns_matches_the_plaintext_join(vertical: dict[str, Any]
                                                               ) -> None:
    mpc = vertical["revealed"]["metrics"]["accuracy"]
    joined = vertical["baseline"]["joined"]["accuracy"]
    bank = vertical["baseline"]["alone"]["bank"]["accuracy"]
    assert abs(mpc - joined) <= 0.01, (mpc, joined)
    assert mpc > bank, (mpc, bank)
    assert set(vertical["baseline"]["alone"]) == {"bank"}  # the others hold no labels
    for row in ("MPC (smpc)", "plaintext join", "bank alone"):
        assert row in vertical["stdout"]


def test_the_intersection_size_reaches_every_party_and_the_model_the_bank(
        vertical: dict[str, Any]) -> None:
    ids = _identifiers(EXAMPLE)
    common = set(ids["bank"]) & set(ids["insurer"]) & set(ids["retailer"])
    by_party = vertical["revealed_by_party"]
    for party in PARTIES:
        assert by_party[party]["intersection_size"] == {"train": len(common)}
        assert by_party[party]["metrics"]["accuracy"] == vertical["revealed"]["metrics"][
            "accuracy"]
    assert len(by_party["bank"]["weights"]) == 21  # 20 columns and the intercept
    assert by_party["insurer"]["weights"] is None and by_party["retailer"]["weights"] is None


def _prefixes(values: list[bytes]) -> np.ndarray:
    return np.array([int.from_bytes(v[:8], "little") for v in values], dtype=np.uint64)


def _hits(blob: bytes, needles: np.ndarray) -> int:
    """How many 8-byte words of `blob`, at any offset, are among `needles` (a table of
    their top 24 bits picks the candidates; isin confirms them)."""
    table = np.zeros(1 << 24, dtype=bool)
    table[needles >> np.uint64(40)] = True
    found = 0
    for offset in range(8):
        usable = (len(blob) - offset) // 8 * 8
        words = np.frombuffer(blob, dtype="<u8", count=usable // 8, offset=offset)
        candidates = words[table[words >> np.uint64(40)]]
        found += int(np.isin(candidates, needles).sum())
    return found


def test_no_identifier_leaves_a_party_raw_hashed_or_unblinded(vertical: dict[str, Any]
                                                               ) -> None:
    """Every 8-byte window of every node's sent bytes against the first 8 bytes of each
    identifier's SHA-512 input hash and group element (false alarm: about 3e4 needles x
    2e9 windows / 2**64, under 1e-5)."""
    ids = [x for xs in _identifiers(EXAMPLE).values() for x in xs]
    salt = psi.salt_for(bytes.fromhex(vertical["seed"]), "psi:train")
    prefix = hashlib.sha512(psi.DOMAIN + b"|id|" + salt)
    digests = []
    for x in ids:
        h = prefix.copy()
        h.update(x.encode())
        digests.append(h.digest())
    points = psi.hash_to_group(ids, salt)
    unsalted = psi.hash_to_group(ids, b"")
    needles = {"SHA-512": _prefixes(digests), "H(x)": _prefixes(points),
               "unsalted H(x)": _prefixes(unsalted)}
    raw = re.compile(rb"cust-[0-9a-f]{12}")
    logs = {n: (vertical["folder"] / f"wire.{n}").read_bytes() for n in [*PARTIES, "dealer"]}
    for party in PARTIES:  # each sent at least its own blinded set
        assert len(logs[party]) > 32 * len(_identifiers(EXAMPLE)[party])
    every = np.concatenate(list(needles.values()))
    for node, log in logs.items():
        assert not raw.search(log), f"{node} sent a raw identifier"
        if _hits(log, every):
            for what, values in needles.items():
                assert _hits(log, values) == 0, f"{node} sent an identifier's {what}"
    # the check can fail: one H(x) at an odd offset inside other bytes is found
    planted = logs["bank"][:1001] + points[7] + logs["bank"][1001:2000]
    assert _hits(planted, needles["H(x)"]) == 1


def test_an_empty_intersection_stops_every_party_before_training(tmp_path: Path) -> None:
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("*.py", "certs"))
    for party in PARTIES:  # 200 customers each; the retailer's are nobody else's
        data = folder / "data" / f"{party}.csv"
        lines = data.read_text().splitlines()[:201]
        if party == "retailer":
            lines = [lines[0], *(ln.replace("cust-", "shop-", 1) for ln in lines[1:])]
        data.write_text("\n".join(lines) + "\n")
    proc = run_smpc(["local", str(folder / "consortium.toml"), "--insecure", "--json",
                     str(tmp_path / "out.json")], tmp_path, 300)
    assert proc.returncode != 0
    failures = [ln for ln in proc.stderr.splitlines() if "exit" in ln]
    assert len(failures) == 4, proc.stderr  # three parties and the dealer
    for line in failures:
        assert "the private set intersection is empty" in line, line
    assert not (tmp_path / "out.json").exists()
    assert "accuracy" not in proc.stdout + proc.stderr
