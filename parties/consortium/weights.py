"""A party's own model weights: a PyTorch state_dict file its policy names.

The file is read with ``torch.load(weights_only=True)``, which restores tensors
and plain containers only (no code runs while loading). It must hold a mapping
of names to tensors, as ``torch.save(model.state_dict(), "model.pt")`` writes
(the ``model.pt`` that smpc's logistic-regression and neural-network exports
write is one). Errors name the file; they are for the party's own operator.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from parties.consortium.data import DataError


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict file, by name (float ones as float32); DataError if not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model file not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError,
            ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a PyTorch state_dict file (torch.load with "
                        f"weights_only=True: {first[:200]})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(loaded, dict) or not loaded:
        raise DataError(f"{path}: holds a {type(loaded).__name__}, not a state_dict (save "
                        "one with torch.save(model.state_dict(), path))")
    out = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DataError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor "
                            "(save a state_dict: torch.save(model.state_dict(), path))")
        out[key] = value.float() if value.is_floating_point() else value
    return out
