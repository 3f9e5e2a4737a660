"""Checkpoints: each party stores only its own shares, and all resume from a common step.

A checkpoint file holds the manifest digest, the step, the run's joint seed and
this party's part of the protocol's state: its shares of secret tensors
(int64: alone they look uniformly random), plain tensors and plain values. On
`--resume` the parties tell each other the newest step they have and continue
from the newest one they all have (the last two steps are kept, so a party
killed while the others were saving still finds a common step); the run then
uses the joint seed stored with it, so shuffles and splits are the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

KEEP = 2


class CheckpointError(RuntimeError):
    """The parties' checkpoints cannot be resumed together."""


class Checkpoints:
    """One party's checkpoint folder for one manifest."""

    def __init__(self, folder: Path, digest: str, resume: bool) -> None:
        self.folder = folder
        self.digest = digest
        self.resume = resume

    def _file(self, step: int) -> Path:
        return self.folder / f"step-{step:06d}.pt"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = torch.load(path, weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError):
            return None  # a torn or foreign file is ignored
        return data if isinstance(data, dict) and data.get("digest") == self.digest else None

    def steps(self) -> list[int]:
        """Steps stored for this manifest, oldest first."""
        out = []
        for f in self.folder.glob("step-*.pt") if self.folder.is_dir() else []:
            if self._read(f) is not None:
                try:
                    out.append(int(f.stem.split("-")[1]))
                except ValueError:
                    continue
        return sorted(out)

    def save(self, step: int, state: dict[str, Any], seed: bytes) -> None:
        """Write this party's part of `state` atomically, then keep only the newest KEEP steps."""
        data = {"digest": self.digest, "step": step, "seed": torch.tensor(list(seed),
                                                                         dtype=torch.uint8),
                **_encode(state)}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._file(step).with_suffix(".tmp")
        torch.save(data, tmp)
        os.replace(tmp, self._file(step))
        for old in self.steps()[:-KEEP]:
            self._file(old).unlink(missing_ok=True)

    def agree(self, communicator: Any) -> tuple[int, dict[str, Any], bytes] | None:
        """With --resume: the newest step every party has, its state and the run's seed.

        Every party takes part (one all_gather, and one more when resuming), so
        all reach the same decision; None means start from the beginning.
        """
        mine = self.steps() if self.resume else []
        newest = torch.tensor([mine[-1] if mine else -1], dtype=torch.long)
        common = min(int(t.item()) for t in communicator.all_gather(newest))
        if common < 0:
            return None
        if common not in mine:
            raise CheckpointError(f"no checkpoint for step {common} in {self.folder} "
                                  f"(have {mine})")
        data = self._read(self._file(common))
        assert data is not None
        seed = bytes(data["seed"].tolist())
        digest = torch.tensor(list(hashlib.sha256(seed).digest()), dtype=torch.uint8)
        if any(not torch.equal(d, digest) for d in communicator.all_gather(digest)):
            raise CheckpointError(f"the parties' checkpoints of step {common} come from "
                                  "different runs (their joint seeds differ)")
        return common, _decode(data), seed


def _encode(state: dict[str, Any]) -> dict[str, Any]:
    secret, tensors, plain = {}, {}, {}
    for key, value in state.items():
        if hasattr(value, "_tensor") and hasattr(value, "encoder"):  # an MPCTensor
            share = value._tensor.share.clone()
            secret[key] = {"share": share, "bits": int(value.encoder._precision_bits),
                           "binary": value.ptype.name == "binary"}
        elif isinstance(value, torch.Tensor):
            tensors[key] = value.detach().clone()
        else:
            plain[key] = value
    return {"secret": secret, "tensors": tensors, "plain": json.dumps(plain)}


def _decode(data: dict[str, Any]) -> dict[str, Any]:
    from crypten.mpc import MPCTensor
    from crypten.mpc.ptype import ptype

    state: dict[str, Any] = dict(json.loads(data["plain"]))
    state.update(data["tensors"])
    for key, item in data["secret"].items():
        kind = ptype.binary if item["binary"] else ptype.arithmetic
        state[key] = MPCTensor.from_shares(item["share"], precision=item["bits"], ptype=kind)
    return state
