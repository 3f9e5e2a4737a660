"""Checkpoints: each party stores only its own shares, and all resume from a common step.

A checkpoint file holds the manifest digest, the step and this party's shares
(int64 tensors: alone they look uniformly random). On `--resume` the parties
tell each other the newest step they have and continue from the newest one
they all have; the last two steps are kept, so a party killed while the others
were saving still finds a common step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

KEEP = 2


class Checkpoints:
    """One party's checkpoint folder for one manifest."""

    def __init__(self, folder: Path, digest: str, resume: bool) -> None:
        self.folder = folder
        self.digest = digest
        self.resume = resume
        folder.mkdir(parents=True, exist_ok=True)

    def _file(self, step: int) -> Path:
        return self.folder / f"step-{step:06d}.pt"

    def steps(self) -> list[int]:
        """Steps stored for this manifest, oldest first."""
        out = []
        for f in self.folder.glob("step-*.pt"):
            try:
                if torch.load(f, weights_only=True)["digest"] == self.digest:
                    out.append(int(f.stem.split("-")[1]))
            except (OSError, RuntimeError, KeyError, ValueError):
                continue  # a torn or foreign file is ignored
        return sorted(out)

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write this party's shares atomically, then drop all but the newest KEEP steps."""
        shares = {k: v.share.clone() for k, v in state.items()}
        tmp = self._file(step).with_suffix(".tmp")
        torch.save({"digest": self.digest, "step": step, "shares": shares}, tmp)
        os.replace(tmp, self._file(step))
        for old in self.steps()[:-KEEP]:
            self._file(old).unlink(missing_ok=True)

    def restore(self, communicator: Any) -> tuple[int, dict[str, Any]] | None:
        """Agree with every party on the newest common step and load it (None: start over)."""
        from crypten.mpc import MPCTensor

        mine = self.steps() if self.resume else []
        newest = torch.tensor([mine[-1] if mine else -1], dtype=torch.long)
        everyone = [int(t.item()) for t in communicator.all_gather(newest)]
        common = min(everyone)
        if common < 0:
            return None
        if common not in mine:
            raise RuntimeError(f"no checkpoint for step {common} in {self.folder} (have {mine})")
        data = torch.load(self._file(common), weights_only=True)
        return common, {k: MPCTensor.from_shares(v) for k, v in data["shares"].items()}
