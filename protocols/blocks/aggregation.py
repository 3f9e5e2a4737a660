"""Secure aggregation: the sum of one tensor from every party, as shares only.

Each party secret-shares its own tensor (CrypTen's `cryptensor(x, src=i)` adds x to
party i's share of a pseudo-random sharing of zero: no messages) and the shares
are added locally. The sum is opened only by `session.reveal`, so no party's
tensor appears anywhere but in its owner's memory [Bonawitz et al. 2017 reach
the same with pairwise masks; here the masks are CrypTen's zero sharings].
"""

from __future__ import annotations

from typing import Any

import torch


def secure_sum(mine: torch.Tensor) -> Any:
    """sum over parties of each party's `mine` (same shape everywhere), as a CrypTen tensor."""
    import crypten

    comm = crypten.communicator.get()
    rank = comm.get_rank()
    total = None
    for src in range(comm.get_world_size()):
        part = crypten.cryptensor(mine.float() if src == rank else torch.zeros(mine.shape),
                                  src=src)
        total = part if total is None else total + part
    return total
