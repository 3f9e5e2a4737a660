"""Serving: `smpc serve` keeps hospital-a's model shared while `smpc predict` queries come
and go (mutual TLS); a second query re-uses the shares; an owner that dies mid-query gives
the data owner a clear error within its deadline, and after a restart the next query works;
a party that is not in the consortium is refused."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from parties.consortium import certs
from tests.conftest import run_smpc
from tests.protocols.test_inference import copy_inference, twin
from tests.support import edit, on_free_ports, wait_for_line

ROOT = Path(__file__).resolve().parents[2]
STALLING = ROOT / "tests" / "node" / "stalling_inference.py"
LINK = ["--timeout", "20", "--reconnect-window", "2"]


def _serve(base: Path, name: str, cwd: Path) -> subprocess.Popen[str]:
    policy = ["--policy", str(base / "policies" / f"{name}.toml")] if name != "dealer" else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "parties.cli", "serve", "--consortium",
         str(base / "consortium.toml"), "--as", name, *policy, *LINK],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def _predict(base: Path, cwd: Path, out: str) -> subprocess.CompletedProcess[str]:
    return run_smpc(["predict", "--consortium", str(base / "consortium.toml"), "--as",
                     "clinic-d", "--input", str(base / "data" / "clinic-d.csv"), "--out",
                     str(cwd / out), *LINK], cwd, 180)


def _classes(path: Path) -> list[str]:
    return [row[1] for row in list(csv.reader(path.open()))[1:]]


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_queries_on_a_model_shared_once_survive_a_dead_owner(tmp_path: Path) -> None:
    base = copy_inference(tmp_path)
    edit(base / "consortium.toml", ('name = "inference"\nversion = "1"',
                                    f'name = "stalling-inference"\nfile = "{STALLING}"'))
    on_free_ports(base / "consortium.toml")
    # clinic-x holds a certificate of the consortium's CA but is not in the consortium
    certs.generate("inference", ["hospital-a", "clinic-d", "clinic-x", "dealer"],
                   base / "certs")
    edit(base / "policies" / "hospital-a.toml", ('protocols = ["inference"]',
                                                 'protocols = ["stalling-inference"]'))
    want = twin(base / "consortium.toml")["predictions"][1]["class"]
    dealer, owner = _serve(base, "dealer", tmp_path), _serve(base, "hospital-a", tmp_path)
    procs = [dealer, owner]
    try:
        wait_for_line(owner, "model shared once", 120)
        first, second = _predict(base, tmp_path, "p1.csv"), _predict(base, tmp_path, "p2.csv")
        for proc, name in ((first, "p1.csv"), (second, "p2.csv")):
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert _classes(tmp_path / name) == want
        log = tmp_path / "out" / "inference" / "hospital-a" / "queries.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(r["party"], r["rows"], r["outcome"]) for r in records] == [
            ("clinic-d", 40, "ok"), ("clinic-d", 40, "ok")]
        assert "clinic-d-" not in log.read_text()  # no row, no identifier, no prediction

        # the third query: the owner stalls in it and is killed there
        third = subprocess.Popen(
            [sys.executable, "-m", "parties.cli", "predict", "--consortium",
             str(base / "consortium.toml"), "--as", "clinic-d", "--input",
             str(base / "data" / "clinic-d.csv"), "--out", str(tmp_path / "p3.csv"), *LINK],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        procs.append(third)
        seen: list[str] = []
        while sum("query from clinic-d started" in line for line in seen) < 3:
            seen += wait_for_line(owner, "query from clinic-d started", 120)
        shared = sum("model shared once" in line for line in seen)
        time.sleep(1.0)
        os.killpg(owner.pid, signal.SIGKILL)
        killed = time.monotonic()
        text, _ = third.communicate(timeout=60)
        assert time.monotonic() - killed < 20, "not within the data owner's --timeout"
        assert third.returncode == 3, text
        assert "lost party 'hospital-a'" in text and len(text.strip().splitlines()) == 1, text
        assert not (tmp_path / "p3.csv").exists()
        assert shared == 0  # the model was shared once for all three queries

        owner = _serve(base, "hospital-a", tmp_path)  # restarted: shares the model again
        procs.append(owner)
        wait_for_line(owner, "model shared once", 120)
        fourth = _predict(base, tmp_path, "p4.csv")
        assert fourth.returncode == 0, fourth.stdout + fourth.stderr
        assert _classes(tmp_path / "p4.csv") == want
        dealt = (tmp_path / "out" / "inference" / "dealer" / "queries.jsonl").read_text()
        outcomes = [json.loads(line)["outcome"] for line in dealt.splitlines()]
        assert outcomes[:2] == ["ok", "ok"] and outcomes[-1] == "ok"
        assert any(o.startswith("failed: lost party 'hospital-a'") for o in outcomes[2:-1])

        stranger = run_smpc(["predict", "--consortium", str(base / "consortium.toml"), "--as",
                             "clinic-x", "--input", str(base / "data" / "clinic-d.csv")],
                            tmp_path, 60)
        assert stranger.returncode == 2
        assert "no party named 'clinic-x' (parties: hospital-a, clinic-d)" in stranger.stderr
        # with a consortium file of its own that lists it, the serving owner refuses it
        own = edit(base / "consortium.toml", ('[dealer]', '[[parties]]\nname = "clinic-x"\n'
                                              'address = "127.0.0.1:9"\n\n[dealer]'),
                   ('to = ["clinic-d"]', 'to = ["clinic-d", "clinic-x"]'),
                   to=base / "stranger.toml")
        stranger = run_smpc(["predict", "--consortium", str(own), "--as", "clinic-x",
                             "--input", str(base / "data" / "clinic-d.csv"), *LINK],
                            tmp_path, 90)
        assert stranger.returncode == 2, stranger.stderr
        assert "party 'clinic-x' is not a peer of 'hospital-a'" in stranger.stderr
    finally:
        _stop(procs)
