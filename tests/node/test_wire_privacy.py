"""What leaves a party: shares and declared outputs, never its data or its data's errors.

With TLS off on loopback every byte a node sends is recorded (SMPC_WIRE_LOG).
During a training run none of hospital-b's feature values may appear in what it
sends, neither raw nor scaled, as float32, float64 or CrypTen's 16-bit fixed
point. When its data fails its checks, the details (file, line, cell) stay in
its own log: its peers learn only that its data failed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from parties.consortium.config import load_consortium
from parties.consortium.data import load_table
from parties.wire import wire_pb2 as pb
from tests.support import PARTIES, copy_example, edit, node_commands, run_nodes

ROOT = Path(__file__).resolve().parents[2]


def _needles(values: list[float]) -> dict[str, np.ndarray]:
    """Each value as CrypTen fixed point (int64), float32 and float64."""
    v = np.array(values, dtype=np.float64)
    fixed = np.round(v * 2**16).astype(np.int64)
    return {
        "int64": fixed[np.abs(fixed) >= 2**12],  # tiny integers are also public counts
        "float32": v[(v != 0) & (np.abs(v) != 1)].astype(np.float32),
        "float64": v[(v != 0) & (np.abs(v) != 1)],
    }


def _payloads(log: bytes) -> list[pb.Frame]:
    frames, at = [], 0
    while at < len(log):
        size = int.from_bytes(log[at : at + 4], "little")
        env = pb.Envelope.FromString(log[at + 4 : at + 4 + size])
        at += 4 + size
        if env.WhichOneof("body") == "frame":
            frames.append(env.frame)
    return frames


def test_no_raw_input_on_the_wire(tmp_path: Path) -> None:
    example = copy_example(tmp_path)
    consortium = edit(example / "consortium.toml", ("epochs = 10", "epochs = 2"))
    prefix = tmp_path / "wire"
    proc = subprocess.run(
        [sys.executable, "-m", "parties.cli", "local", str(consortium), "--insecure"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
        env={**os.environ, "SMPC_WIRE_LOG": str(prefix)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sent = (tmp_path / "wire.hospital-b").read_bytes()
    assert len(sent) > 1_000_000  # a training run's worth of shares

    schema = load_consortium(consortium).tables["patients"]
    values: list[float] = []
    for split in ("train", "test"):
        path = example / "data" / f"hospital-b-{split}.csv"
        values += load_table(path, schema).features.reshape(-1).tolist()  # scaled
        with path.open() as f:
            values += [float(row[c]) for row in csv.DictReader(f) for c in schema.features]
    needles = _needles(values)
    assert len(needles["int64"]) > 5_000
    frames = _payloads(sent)
    assert frames
    # the check can fail: a frame carrying the inputs in fixed point is caught
    leak = pb.Frame(kind=pb.TENSOR, dtype=pb.INT64, data=needles["int64"][:10].tobytes())
    assert len(_leaks([leak], needles)) == 10
    found = _leaks(frames, needles)
    assert not found, f"{len(found)} input values appear on the wire, e.g. {found[:3]}"


def _leaks(frames: list[pb.Frame], needles: dict[str, np.ndarray]) -> list[str]:
    """Input values found in tensor payloads, read with the payload's own dtype."""
    views = {pb.INT64: ("<i8", "int64"), pb.FLOAT32: ("<f4", "float32"),
             pb.FLOAT64: ("<f8", "float64")}
    found = []
    for frame in frames:
        if frame.kind != pb.TENSOR or frame.dtype not in views:
            continue
        dtype, kind = views[frame.dtype]
        words = np.frombuffer(frame.data, dtype=dtype)
        found += [f"{kind} {h!r} (tag {frame.tag})" for h in words[np.isin(words, needles[kind])]]
    return found



def test_bad_data_is_detailed_locally_and_generic_to_peers(tmp_path: Path) -> None:
    example = copy_example(tmp_path)
    data = example / "data" / "hospital-b-train.csv"
    lines = data.read_text().splitlines()
    cells = lines[4].split(",")
    cells[2] = "14.5.2"  # mean_texture on line 5: a typo that reveals a value
    lines[4] = ",".join(cells)
    data.write_text("\n".join(lines) + "\n")
    consortium = example / "consortium.toml"
    prefix = tmp_path / "wire"
    commands = node_commands(dict.fromkeys([*PARTIES, "dealer"], consortium),
                             {p: example / "policies" / f"{p}.toml" for p in PARTIES},
                             ["--insecure"])
    run = run_nodes(commands, timeout=120, env={"SMPC_WIRE_LOG": str(prefix)})
    own = "\n".join(run.nodes["hospital-b"].lines)
    assert run.returncodes["hospital-b"] == 2
    assert f"{data}:5: column 'mean_texture': '14.5.2' is not a number" in own
    for node in ("hospital-a", "hospital-c", "dealer"):
        text = "\n".join(run.nodes[node].lines)
        assert run.returncodes[node] not in (0, None)
        assert "party 'hospital-b' refuses: its data failed its local validation" in text, text
        for secret in ("14.5.2", "hospital-b-train.csv", ":5:", "mean_texture"):
            assert secret not in text, f"{node} learned {secret!r}: {text}"
    for node in [*PARTIES, "dealer"]:
        log = (tmp_path / f"wire.{node}").read_bytes()
        assert log, node
        for secret in (b"14.5.2", b"hospital-b-train.csv"):  # column names are public
            assert secret not in log, f"{node} sent {secret!r}"


def test_bad_data_is_reported_before_connecting(tmp_path: Path) -> None:
    example = copy_example(tmp_path)
    data = example / "data" / "hospital-b-train.csv"
    data.write_text(data.read_text().replace("\n", "\nx\n", 1))  # line 2: one field
    # Its peers are not running: it can only have reported the error before connecting if
    # the line comes while it still waits (up to an hour) for them to tell them it failed.
    proc = subprocess.Popen(
        [sys.executable, "-m", "parties.cli", "party", "--consortium",
         str(example / "consortium.toml"), "--as", "hospital-b", "--policy",
         str(example / "policies" / "hospital-b.toml"), "--connect-timeout", "3600",
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        still_waiting = proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert still_waiting, first
    assert f"{data}:2:" in first and "error" in first, first
