"""Every communicator call over gRPC between real party processes."""

from __future__ import annotations

import pytest

from parties.node.launcher import launch, party_names


def _rows_ok(run, parties):
    assert run.ok, {n: (rc, run.nodes[n].lines[-5:]) for n, rc in run.returncodes.items()}
    for p in parties:
        result = run.nodes[p].result
        assert result is not None, f"{p} printed no result"
        bad = [r["op"] for r in result["rows"] if not r["ok"]]
        assert not bad, f"{p}: {bad}"
    return {p: run.nodes[p].result for p in parties}


@pytest.mark.parametrize("n", [2, 3, 4])
def test_every_communicator_call(n: int) -> None:
    parties = party_names(n)
    run = launch(parties, "tests.party_checks:communicator", timeout=120,
                 extra=["--quiet", "--timeout", "30"])
    results = _rows_ok(run, parties)
    ops = {r["op"] for r in results[parties[0]]["rows"]}
    for op in ("send/recv", "isend/irecv", "scatter", "reduce BXOR", "all_reduce batched",
               "all_reduce BXOR batched", "all_reduce mixed ops", "gather", "all_gather",
               "broadcast batched", "barrier", "broadcast_obj",
               "stats count real bytes and rounds"):
        assert op in ops
    # the PRNG seed exchange (crypten._setup_prng) and the dealer's seeds used these links
    assert run.nodes["dealer"].result == {"served": {}}


def test_64_mib_tensor_intact() -> None:
    parties = party_names(2)
    run = launch(parties, "tests.party_checks:big_tensor", timeout=120,
                 extra=["--quiet", "--timeout", "60"])
    results = _rows_ok(run, parties)
    assert results["party0"]["rows"][0]["op"] == "64 MiB round trip"
    assert results["party0"]["stats"]["bytes_sent"] > 64 * 2**20
