"""A party killed mid-training; every party restarts with --resume and finishes from the
newest common checkpoint, with the run's own joint seed (no root needed)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from protocols.horizontal import logistic_regression as lr
from tests.protocols.test_logistic_regression import _tables
from tests.support import PARTIES, copy_example, edit, on_free_ports, wait_for_line


def _start(consortium: Path, base: Path, tmp: Path, resume: bool) -> dict[str, subprocess.Popen]:
    flags = ["--resume"] if resume else []
    procs = {"dealer": subprocess.Popen(
        [sys.executable, "-m", "parties.cli", "dealer", "--consortium", str(consortium),
         "--reconnect-window", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp)}
    for p in PARTIES:
        procs[p] = subprocess.Popen(
            [sys.executable, "-m", "parties.cli", "party", "--consortium", str(consortium),
             "--as", p, "--policy", str(base / "policies" / f"{p}.toml"), "--json",
             str(tmp / f"{p}.json"), "--reconnect-window", "2", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp)
    return procs


def _finish(procs: dict[str, subprocess.Popen], timeout: float = 240) -> dict[str, tuple]:
    out = {}
    try:
        for name, proc in procs.items():
            text, _ = proc.communicate(timeout=timeout)
            out[name] = (proc.returncode, text)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return out


def test_kill_a_party_then_resume_all(tmp_path: Path) -> None:
    base = copy_example(tmp_path)
    consortium = on_free_ports(edit(base / "consortium.toml", ("epochs = 10", "epochs = 6")))
    procs = _start(consortium, base, tmp_path, resume=False)
    try:
        wait_for_line(procs["hospital-b"], "epoch=2 of=6", timeout=240)
        procs["hospital-b"].send_signal(signal.SIGKILL)
        first = _finish(procs, timeout=120)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for p in ("hospital-a", "hospital-c", "dealer"):
        rc, text = first[p]
        assert rc == 3 and "party 'hospital-b'" in text, f"{p}: {rc} {text[-400:]}"
    folder = tmp_path / "checkpoints" / "hospitals"
    assert all(list((folder / p).glob("step-*.pt")) for p in PARTIES)

    second = _finish(_start(consortium, base, tmp_path, resume=True))
    assert all(rc == 0 for rc, _ in second.values()), {k: v[1][-300:] for k, v in second.items()}
    results = {p: json.loads((tmp_path / f"{p}.json").read_text()) for p in PARTIES}
    resumed = {r["resumed_from"] for r in results.values()}
    # hospital-b was killed once it had kept epoch 2; the others may not have kept it yet, so
    # the newest common checkpoint is epoch 1 or 2
    assert len(resumed) == 1 and resumed.pop() >= 1
    seeds = {r["seed"] for r in results.values()}
    assert len(seeds) == 1
    stored = torch.load(sorted((folder / "hospital-a").glob("step-*.pt"))[-1],
                        weights_only=True)["seed"]
    assert bytes(stored.tolist()).hex() in seeds  # the run went on with its own seed
    _, tables, params = _tables(consortium)
    want = lr.plaintext(tables, params, bytes.fromhex(results["hospital-a"]["seed"]), None)
    got = results["hospital-a"]["revealed"]["metrics"]
    assert got["accuracy"] == pytest.approx(want["metrics"]["accuracy"], abs=0.01)
