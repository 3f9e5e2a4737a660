"""Accuracy against privacy on the hospitals or the digits data: MPC, MPC + DP, FedAvg,
FedAvg + DP.

Each setting is the shipped example consortium (examples/hospitals/: logistic
regression; examples/digits/: the MLP 64-32-10), edited as listed below, run with
`smpc local` in a scratch copy (every party + dealer on loopback, mutual TLS).
DP runs draw fresh noise, so they are repeated and the table gives the mean
accuracy with its range. The metrics are exact here (no budget on 'metrics'):
the table compares models, not noisy evaluations.

    .venv/bin/python -m benchmarks.dp_fl [--example digits] [--repeats 3] [--only mpc-dp-1]
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

# the digits (examples/digits/, four banks, the MLP): MPC is neural-network, MPC + DP is
# dp-neural-network (consortium-dp.toml declares epsilon 8), FedAvg + DP clips each bank's
# update to norm 1 (2 rounds of 5 local epochs: the fewer rounds, the less noise each)
BANKS_TO = 'to = ["bank-north", "bank-south", "bank-east", "bank-west"]\n\n# 64 pixel'
DIGITS_FEDERATED_DP = [("rounds = 10", "rounds = 2"), ("local_epochs = 2", "local_epochs = 5"),
                       ("momentum = 0.9", "momentum = 0.9\nclipping_norm = 1.0"),
                       (BANKS_TO, BANKS_TO.replace("\n\n", "\nepsilon = EPS\ndelta = 1e-5\n\n"))]
DIGITS_SETTINGS: dict[str, tuple[str, list[tuple[str, str]], bool]] = {
    "mpc": ("consortium.toml", [], False),
    "mpc-dp-1": ("consortium-dp.toml", [("epsilon = 8.0", "epsilon = 1.0")], True),
    "mpc-dp-8": ("consortium-dp.toml", [], True),
    "fedavg": ("consortium-federated.toml", [], False),
    "fedavg-dp-1": ("consortium-federated.toml",
                    [*DIGITS_FEDERATED_DP[:-1], (DIGITS_FEDERATED_DP[-1][0],
                                                 DIGITS_FEDERATED_DP[-1][1].replace("EPS",
                                                                                    "1.0"))],
                    True),
    "fedavg-dp-8": ("consortium-federated.toml",
                    [*DIGITS_FEDERATED_DP[:-1], (DIGITS_FEDERATED_DP[-1][0],
                                                 DIGITS_FEDERATED_DP[-1][1].replace("EPS",
                                                                                    "8.0"))],
                    True),
}
DIGITS_LABELS = {**LABELS, "mpc": "MPC (MLP, neural-network)",
                 "mpc-dp-1": "MPC + DP-SGD (dp-neural-network), epsilon 1",
                 "mpc-dp-8": "MPC + DP-SGD (dp-neural-network), epsilon 8"}
EXAMPLES = {
    "hospitals": (ROOT / "examples" / "hospitals", SETTINGS, LABELS,
                  ["hospital-a", "hospital-b", "hospital-c"], "auc"),
    "digits": (ROOT / "examples" / "digits", DIGITS_SETTINGS, DIGITS_LABELS,
               ["bank-north", "bank-south", "bank-east", "bank-west"], "macro_f1"),
}


def prepare(folder: Path, name: str, example: str = "hospitals") -> Path:
    """A scratch copy of the example with `name`'s edits and fresh certificates."""
    from parties.consortium import certs

    source, settings, _, parties, _ = EXAMPLES[example]
    target = folder / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(
        "make_data.py", "certs", "out", "checkpoints", "__pycache__"))
    file, edits, _ = settings[name]
    consortium = target / file
    text = consortium.read_text()
    for old, new in edits:
        if old not in text:
            raise SystemExit(f"{name}: {old!r} not in {file}")
        text = text.replace(old, new, 1)
    consortium.write_text(text)
    certs.generate(example, [*parties, "dealer"], target / "certs")
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


def summary(name: str, runs: list[dict[str, Any]], example: str = "hospitals"
            ) -> dict[str, Any]:
    _, _, labels, _, second = EXAMPLES[example]
    accuracies = [r["revealed"]["metrics"]["accuracy"] for r in runs]
    aucs = [r["revealed"]["metrics"][second] for r in runs]
    revealed = runs[0]["revealed"]
    weights = revealed.get("weights") or revealed.get("model") or {}
    privacy = weights.get("privacy") if isinstance(weights, dict) else None
    timing = next(iter(runs[0]["timings"].values()))
    return {"setting": labels[name], "runs": len(runs),
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
    ap.add_argument("--example", choices=list(EXAMPLES), default="hospitals")
    ap.add_argument("--only", action="append", choices=list(SETTINGS), help="these settings")
    ap.add_argument("--json", help="write every summary here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="smpc-dp-fl-") as tmp:
        settings, labels, second = (EXAMPLES[args.example][i] for i in (1, 2, 4))
        for name in args.only or list(settings):
            consortium = prepare(Path(tmp), name, args.example)
            runs = [run_once(consortium) for _ in range(args.repeats if settings[name][2]
                                                        else 1)]
            rows.append(summary(name, runs, args.example))
            print(f"{name}: done ({len(runs)} runs)", file=sys.stderr, flush=True)
    column = "AUC" if second == "auc" else "macro-F1"
    print(f"| setting | epsilon spent (PLD / RDP), delta 1e-5 | accuracy: mean (range) | "
          f"{column} | s per party | rounds | MiB sent per party |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.3f} / {r['epsilon_rdp']:.3f}"
        spread = "" if r["runs"] == 1 else f" ({r['low']:.3f}-{r['high']:.3f}, {r['runs']} runs)"
        print(f"| {r['setting']} | {eps} | {r['accuracy']:.3f}{spread} | {r['auc']:.3f} | "
              f"{r['seconds']:.1f} | {r['rounds']} | {r['mib_sent']:.2f} |")
    for r in rows:
        if r["setting"] == labels["mpc"]:
            print(f"| pooled plaintext (no MPC, no DP) | - | "
                  f"{r['baseline']['pooled']['accuracy']:.3f} | "
                  f"{r['baseline']['pooled'][second]:.3f} | | | |")
            for party, m in r["baseline"]["alone"].items():
                print(f"| {party} alone | - | {m['accuracy']:.3f} | {m[second]:.3f} | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
