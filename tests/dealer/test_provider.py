"""The party's end of the dealer: its 256-bit seed (a short one is refused)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import torch

from parties.dealer import server
from parties.dealer.provider import make_provider
from parties.wire.transport import PeerError
from tests.engine.harness import close, meshes, names, run_threads


def test_dealer_seeds_are_256_bits_and_a_short_one_is_refused() -> None:
    parties = names(2)
    mesh = meshes([*parties, "dealer"])
    dealer = threading.Thread(target=server.serve, args=(mesh["dealer"], parties, Counter(), 30),
                              daemon=True)
    dealer.start()
    got = run_threads({p: (lambda p=p, i=i: make_provider(mesh[p], i, "dealer").source.seed)
                       for i, p in enumerate(parties)})
    assert all(isinstance(s, bytes) and len(s) == 32 for s in got.values())
    assert got["p0"] != got["p1"]
    close({p: mesh[p] for p in parties})
    dealer.join(30)

    mesh = meshes(["p0", "dealer"])
    mesh["dealer"].send("p0", torch.tensor(2**62, dtype=torch.long))  # a 63-bit seed
    with pytest.raises(PeerError, match="party 'dealer': sent a malformed seed"):
        make_provider(mesh["p0"], 0, "dealer")
    close(mesh)
