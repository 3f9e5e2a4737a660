"""A test protocol whose parties misbehave on purpose (`behaviour` parameter).

Run as `smpc local --parties 3 tests/node/behaviours.py --set behaviour="die"`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from protocols.api import Output, Param, Protocol


def run(session: Any) -> dict[str, Any]:
    import crypten

    p = session.params
    odd = session.rank == (p.party if p.party >= 0 else session.world_size - 1)
    x = crypten.cryptensor(torch.ones(4), src=0)
    y = x * x
    if p.behaviour == "die":
        if odd:
            os._exit(9)
        for _ in range(1000):
            y = y * x
    elif p.behaviour == "silent":
        if odd:
            time.sleep(120)
        y = y * x
    elif p.behaviour == "open":
        y.get_plain_text()  # not through session.reveal: refused by the engine
    elif p.behaviour == "leak":
        if odd:
            secret = float(torch.rand(1, generator=torch.Generator().manual_seed(os.getpid())))
            raise ValueError(f"private value {secret:.6f} in row 17 of /data/private.csv")
        y = y * x
    elif p.behaviour == "slow":  # a round a second, for longer than the receive timeout
        for step in range(p.steps):
            time.sleep(1.0)
            y = y * x
            session.progress("step", epoch=step + 1, of=p.steps)
    elif p.behaviour == "barrier":
        time.sleep(0.4 * session.rank)
        entered = time.time()
        crypten.communicator.get().barrier()
        left = time.time()
        return {"done": {"entered": entered, "left": left}}
    return {"done": session.reveal("done", y.sum())["done"]}


PROTOCOL = Protocol(
    name="behaviours",
    version="1",
    summary="parties that die, go silent, open secrets or fail on purpose (tests)",
    run=run,
    params=(Param("behaviour", str, "none", choices=("none", "die", "silent", "open", "leak",
                                                   "slow", "barrier")),
            Param("party", int, -1, "which rank misbehaves (-1: the last)"),
            Param("steps", int, 5, minimum=1)),
    outputs=(Output("done", "a sum, opened at the end"),),
)
