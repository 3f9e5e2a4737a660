"""Accuracy against privacy on the hospitals data: MPC, MPC + DP, FedAvg, FedAvg + DP.

Each setting is the shipped example consortium (examples/hospitals/), edited as
listed below, run with `smpc local` in a scratch copy (3 hospitals + dealer on
loopback, mutual TLS). DP runs draw fresh noise, so they are repeated and the
table gives the mean accuracy with its range. The metrics are exact here (no
budget on 'metrics'): the table compares models, not noisy evaluations.

    .venv/bin/python -m benchmarks.dp_fl [--repeats 3] [--only mpc-dp-1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hospitals"
NO_METRICS_BUDGET = ('to = ["hospital-a", "hospital-b", "hospital-c"]\nepsilon = 1.0\n'
                     'delta = 0.0\n', 'to = ["hospital-a", "hospital-b", "hospital-c"]\n')
FEDERATED_DP = [("rounds = 10", "rounds = 20"), ("local_epochs = 2", "local_epochs = 1"),
                ("learning_rate = 1.0", "learning_rate = 1.4\nmax_grad_norm = 1.0"),
                ('to = ["hospital-a", "hospital-b", "hospital-c"]\n\n# The columns',
                 'to = ["hospital-a", "hospital-b", "hospital-c"]\nepsilon = EPS\n'
                 'delta = 1e-5\n\n# The columns')]

# name -> (consortium file, edits, noisy)
SETTINGS: dict[str, tuple[str, list[tuple[str, str]], bool]] = {
    "mpc": ("consortium.toml", [], False),
    "mpc-dp-1": ("consortium-dp.toml", [NO_METRICS_BUDGET], True),
    "mpc-dp-8": ("consortium-dp.toml", [NO_METRICS_BUDGET,
                                        ("epsilon = 1.0\ndelta = 1e-5", "epsilon = 8.0\n"
                                         "delta = 1e-5")], True),
    "fedavg": ("consortium-federated.toml", [], False),
    "fedavg-dp-1": ("consortium-federated.toml",
                    [*FEDERATED_DP[:-1], (FEDERATED_DP[-1][0],
                                          FEDERATED_DP[-1][1].replace("EPS", "1.0"))], True),
    "fedavg-dp-8": ("consortium-federated.toml",
                    [*FEDERATED_DP[:-1], (FEDERATED_DP[-1][0],
                                          FEDERATED_DP[-1][1].replace("EPS", "8.0"))], True),
}
LABELS = {"mpc": "MPC (logistic regression)", "mpc-dp-1": "MPC + DP-SGD, epsilon 1",
          "mpc-dp-8": "MPC + DP-SGD, epsilon 8", "fedavg": "FedAvg + secure aggregation",
          "fedavg-dp-1": "FedAvg + distributed DP, epsilon 1",
          "fedavg-dp-8": "FedAvg + distributed DP, epsilon 8"}


def prepare(folder: Path, name: str) -> Path:
    """A scratch copy of the example with `name`'s edits and fresh certificates."""
    from parties.consortium import certs

    target = folder / name
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(
        "*.py", "certs", "out", "checkpoints", "__pycache__"))
    file, edits, _ = SETTINGS[name]
    consortium = target / file
    text = consortium.read_text()
    for old, new in edits:
        if old not in text:
            raise SystemExit(f"{name}: {old!r} not in {file}")
        text = text.replace(old, new, 1)
    consortium.write_text(text)
    certs.generate("hospitals", ["hospital-a", "hospital-b", "hospital-c", "dealer"],
                   target / "certs")
    return consortium


def run_once(consortium: Path) -> dict[str, Any]:
    out = consortium.parent / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    tic = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "parties.cli", "local", str(consortium),
                           "--json", str(out)], capture_output=True, text=True,
                          cwd=consortium.parent, env=env, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{consortium}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    data = json.loads(out.read_text())
    data["wall"] = time.perf_counter() - tic
    return data


def summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [r["revealed"]["metrics"]["accuracy"] for r in runs]
    aucs = [r["revealed"]["metrics"]["auc"] for r in runs]
    weights = runs[0]["revealed"].get("weights") or {}
    privacy = weights.get("privacy") if isinstance(weights, dict) else None
    timing = next(iter(runs[0]["timings"].values()))
    return {"setting": LABELS[name], "runs": len(runs),
            "accuracy": statistics.mean(accuracies), "low": min(accuracies),
            "high": max(accuracies), "auc": statistics.mean(aucs),
            "epsilon": None if privacy is None else privacy["epsilon"],
            "epsilon_rdp": None if privacy is None else privacy["epsilon_rdp"],
            "seconds": statistics.mean(next(iter(r["timings"].values()))["protocol_seconds"]
                                       for r in runs),
            "rounds": timing["rounds"], "mib_sent": timing["bytes_sent"] / 2**20,
            "baseline": runs[0]["baseline"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each DP setting")
    ap.add_argument("--only", action="append", choices=list(SETTINGS), help="these settings")
    ap.add_argument("--json", help="write every summary here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="smpc-dp-fl-") as tmp:
        for name in args.only or list(SETTINGS):
            consortium = prepare(Path(tmp), name)
            runs = [run_once(consortium) for _ in range(args.repeats if SETTINGS[name][2]
                                                        else 1)]
            rows.append(summary(name, runs))
            print(f"{name}: done ({len(runs)} runs)", file=sys.stderr, flush=True)
    print("| setting | epsilon spent (PLD / RDP), delta 1e-5 | accuracy: mean (range) | "
          "AUC | s per party | rounds | MiB sent per party |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.3f} / {r['epsilon_rdp']:.3f}"
        spread = "" if r["runs"] == 1 else f" ({r['low']:.3f}-{r['high']:.3f}, {r['runs']} runs)"
        print(f"| {r['setting']} | {eps} | {r['accuracy']:.3f}{spread} | {r['auc']:.3f} | "
              f"{r['seconds']:.1f} | {r['rounds']} | {r['mib_sent']:.2f} |")
    for r in rows:
        if r["setting"] == LABELS["mpc"]:
            print(f"| pooled plaintext (no MPC, no DP) | - | "
                  f"{r['baseline']['pooled']['accuracy']:.3f} | "
                  f"{r['baseline']['pooled']['auc']:.3f} | | | |")
            for party, m in r["baseline"]["alone"].items():
                print(f"| {party} alone | - | {m['accuracy']:.3f} | {m['auc']:.3f} | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
