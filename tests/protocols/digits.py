"""Shortened copies of the digits example for the DP and federated tests."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits"
BANKS = ["bank-north", "bank-south", "bank-east", "bank-west"]


def digits_copy(tmp: Path, consortium: str, banks: int = 4, rows: int | None = None) -> Path:
    """The digits example in tmp with only `consortium` (its first `banks` banks, each cut to
    `rows` training and rows // 3 test rows when given); the consortium file's path."""
    target = tmp / "digits"
    shutil.copytree(DIGITS, target, ignore=shutil.ignore_patterns(
        "certs", "out", "__pycache__", "checkpoints", "make_data.py", "consortium*.toml"))
    text = (DIGITS / consortium).read_text()
    for bank in BANKS[banks:]:
        port = 7201 + BANKS.index(bank)
        block = f'[[parties]]\nname = "{bank}"\naddress = "127.0.0.1:{port}"\n\n'
        assert block in text, (bank, consortium)
        text = text.replace(block, "").replace(f', "{bank}"', "")
    path = target / consortium
    path.write_text(text)
    for bank in BANKS[:banks]:
        for split, keep in (("train", rows), ("test", None if rows is None else rows // 3)):
            if keep is None:
                continue
            data = target / "data" / f"{bank}-{split}.csv"
            with data.open() as f:
                lines = f.readlines()[:keep + 1]
            data.write_text("".join(lines))
    return path
