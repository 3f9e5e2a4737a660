"""The trade-off's figure: accuracy against epsilon per technique, and against k (matplotlib).

Left panel: accuracy vs the epsilon spent (log scale) for MPC + DP, FedAvg + DP and DP
synthetic data, with horizontal lines for each party alone, pooled plaintext, MPC and
FedAvg without DP. Right panel: accuracy vs k for k-anonymized pooling, with the same
pooled and MPC lines. Written with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CURVES = {"mpc-dp": ("MPC + DP-SGD", "o-"), "fedavg-dp": ("FedAvg + DP", "s-"),
          "synthetic": ("DP synthetic data", "^-")}
LINES = {"pooled": ("pooled plaintext", "black", "-"), "mpc": ("MPC (exact)", "tab:green", "--"),
         "fedavg": ("FedAvg, no DP", "tab:purple", ":")}


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Write the two-panel PNG of a trade-off report to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["accuracy"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110,
                                      gridspec_kw={"width_ratios": [3, 2]})
    for key, (label, style) in CURVES.items():
        points = sorted((r["epsilon"], r["accuracy"]) for r in rows
                        if r["technique"] == key and r["epsilon"])
        if points:
            left.plot(*zip(*points, strict=True), style, label=label)
    for axis in (left, right):
        for key, (label, colour, dash) in LINES.items():
            for r in rows:
                if r["technique"] == key:
                    axis.axhline(r["accuracy"], color=colour, linestyle=dash, linewidth=1,
                                 label=label)
        for i, r in enumerate(r for r in rows if r["technique"] == "alone"):
            axis.axhline(r["accuracy"], color="tab:gray", linestyle="-.", linewidth=0.8,
                         alpha=0.7, label="each party alone" if i == 0 else None)
    _log_ticks(left, sorted(report["settings"]["epsilons"]))  # the grid (spent: <= it)
    left.set_xlabel(f"epsilon spent (delta {report['settings']['delta']:.0e})")
    left.set_ylabel("test accuracy")
    left.set_title("differential privacy")
    left.legend(fontsize=7, loc="lower right")
    points = sorted((r["k"], r["accuracy"]) for r in rows if r["technique"] == "k-anonymity")
    if points:
        right.plot(*zip(*points, strict=True), "d-", color="tab:red",
                   label="k-anonymized pooling")
    _log_ticks(right, sorted(report["settings"]["ks"]))
    right.set_xlabel(f"k (Mondrian over {len(report['settings']['quasi_identifiers'])} "
                     "quasi-identifiers)")
    right.set_title("k-anonymity")
    right.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{report['consortium']}: accuracy against privacy ({report['protocol']})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _log_ticks(axis: Any, values: list[float]) -> None:
    """A log x axis labelled at the grid's values only."""
    from matplotlib.ticker import FixedLocator, NullLocator

    axis.set_xscale("log")
    if values:
        axis.xaxis.set_major_locator(FixedLocator(values))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticklabels([f"{v:g}" if v >= 1 else f"{v:.2g}" for v in values])
