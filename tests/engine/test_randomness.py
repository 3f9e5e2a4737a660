"""A party's randomness: ChaCha20 zero sharings, the coin-tossed public seed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from parties.engine import context, correlated, hooks, randomness, reveal
from parties.engine.communicator import GrpcCommunicator
from tests.engine.harness import close, meshes, names, run_parties, run_threads

CPU = torch.device("cpu")


def _przs(comm: GrpcCommunicator) -> dict[str, Any]:
    """This party's zero sharings, after seeding torch's global RNG with a constant."""
    import crypten
    from crypten.mpc.primitives import ArithmeticSharedTensor as AST
    from crypten.mpc.primitives import BinarySharedTensor as BST

    torch.manual_seed(0)  # every party, every run: must not matter
    before = torch.get_rng_state()
    arithmetic = AST.PRZS(torch.Size([1000])).share
    binary = BST.PRZS(torch.Size([1000])).share
    x = crypten.cryptensor(torch.arange(6.0), src=0)  # PRZS inside
    local = BST.rand(torch.Size([50])).share
    y = x * x  # dealer material
    untouched = torch.equal(torch.get_rng_state(), before)
    opened = reveal.open_to([y], [[0]])[0]
    streams = {k: crypten.generators[k][CPU] for k in ("prev", "next")}
    pair = {k: correlated.ring(s, (16,)) for k, s in streams.items()}  # next_i == prev_i+1
    return {"arithmetic": arithmetic, "binary": binary, "local": local, "pair": pair,
            "untouched": untouched, "opened": opened,
            "chacha": all(isinstance(s, correlated.Stream) for s in streams.values())}


@pytest.mark.parametrize("n", [2, 3, 4])
def test_zero_sharings_cancel_and_are_fresh_every_run(n: int) -> None:
    runs = [run_parties(n, _przs) for _ in range(2)]
    for got in runs:
        assert torch.equal(correlated.sum_shares([g["arithmetic"] for g in got]),
                           torch.zeros(1000, dtype=torch.long))
        assert torch.equal(correlated.xor_shares([g["binary"] for g in got]),
                           torch.zeros(1000, dtype=torch.long))
        assert all(g["untouched"] and g["chacha"] for g in got)  # torch's RNG never drawn
        assert torch.allclose(got[0]["opened"], torch.arange(6.0) ** 2, atol=1e-3)
        for i in range(n):  # each adjacent pair shares exactly one stream
            assert torch.equal(got[i]["pair"]["next"], got[(i + 1) % n]["pair"]["prev"])
            if n > 2:
                assert not torch.equal(got[i]["pair"]["prev"], got[i]["pair"]["next"])
    first, second = runs
    for a, b in zip(first, second, strict=True):  # same torch seed, different shares
        assert not torch.equal(a["arithmetic"], b["arithmetic"])
        assert not torch.equal(a["binary"], b["binary"])
        assert not torch.equal(a["local"], b["local"])


def test_every_crypten_module_draws_from_chacha() -> None:
    import crypten  # noqa: F401 - loaded by the engine
    from crypten.common import rng
    from crypten.mpc.primitives import arithmetic, binary
    from crypten.mpc.provider import tfp_provider, ttp_provider

    run_parties(2, lambda comm: None, dealer=False)  # installs the engine
    for module in (rng, arithmetic, binary, tfp_provider, ttp_provider):
        for name in ("generate_random_ring_element", "generate_kbit_random_tensor"):
            if hasattr(module, name):
                assert getattr(module, name) is getattr(hooks, name), (module, name)


def test_insecure_tfp_material_comes_from_chacha_too() -> None:
    def party(comm: GrpcCommunicator) -> tuple[bool, Any]:
        import crypten

        torch.manual_seed(0)
        before = torch.get_rng_state()
        x = crypten.cryptensor(torch.tensor([1.5, -2.0, 0.25]), src=0)
        y = (x * x).relu() + (x < 0)
        return torch.equal(torch.get_rng_state(), before), reveal.open_to([y], [[1]])[0]

    got = run_parties(3, party, dealer=False)
    assert all(untouched for untouched, _ in got)
    assert torch.allclose(got[1][1], torch.tensor([2.25, 5.0, 0.0625]), atol=1e-3)


def _communicators(n: int) -> tuple[dict[str, Any], dict[str, GrpcCommunicator]]:
    parties = names(n)
    mesh = meshes(parties)
    return mesh, {p: GrpcCommunicator(mesh[p], parties) for p in parties}


@pytest.mark.parametrize("n", [2, 3, 4])
def test_joint_seed_is_common_and_fresh(n: int) -> None:
    mesh, comms = _communicators(n)
    seeds = [run_threads({p: (lambda c=c: randomness.joint_seed(c)) for p, c in comms.items()})
             for _ in range(2)]
    close(mesh)
    for run in seeds:
        assert len(set(run.values())) == 1
        assert all(isinstance(s, bytes) and len(s) == 32 for s in run.values())
    assert seeds[0]["p0"] != seeds[1]["p0"]


class _Cheater:
    """A communicator that reveals a coin other than the one it committed to."""

    def __init__(self, comm: GrpcCommunicator) -> None:
        self.comm, self.calls = comm, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.comm, name)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        if self.calls == 2:  # the reveal
            tensor = tensor.clone()
            tensor[0] ^= 1
        return self.comm.all_gather(tensor)


def test_a_coin_that_does_not_match_its_commitment_names_the_party() -> None:
    mesh, comms = _communicators(3)
    comms["p1"] = _Cheater(comms["p1"])  # type: ignore[assignment]
    errors: dict[str, str] = {}

    def toss(p: str) -> None:
        try:
            randomness.joint_seed(comms[p])
        except randomness.CoinTossError as exc:
            errors[p] = str(exc)

    run_threads({p: (lambda p=p: toss(p)) for p in comms})
    close(mesh)
    assert set(errors) == {"p0", "p1", "p2"}  # every party refuses the run
    assert all("party 'p1' revealed a coin that does not match its commitment" in e
               for e in errors.values())


def test_public_generator_is_seeded_only_by_the_joint_seed() -> None:
    def party(comm: GrpcCommunicator) -> tuple[str, torch.Tensor, torch.Tensor]:
        import crypten

        try:
            crypten.generators["global"][CPU]
            unseeded = "usable"
        except context.NotStarted as exc:
            unseeded = str(exc)
        context.use_public_seed(randomness.joint_seed(comm))
        mask = torch.rand(8, generator=crypten.generators["global"][CPU])
        x = crypten.cryptensor(torch.ones(200), src=0, requires_grad=True)
        dropped = reveal.open_to([x.dropout(0.5)], [[0, 1, 2]])[0]
        return unseeded, mask, dropped

    got = run_parties(3, party)
    assert all("use_public_seed(joint_seed(communicator))" in u for u, _, _ in got)
    assert all(torch.equal(m, got[0][1]) for _, m, _ in got)  # the same public draws
    dropped = got[0][2]
    # the parties dropped the same elements: each opens to exactly 0 or 1 / (1 - p)
    assert torch.all((dropped.abs() < 1e-3) | ((dropped - 2).abs() < 1e-3))
    assert 40 < int((dropped > 1).sum()) < 160
