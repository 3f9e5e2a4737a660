"""Running one node: a party (CrypTen over the mesh, running a protocol) or the dealer.

A node binds its listening address, learns where the others are (from its
settings, or from the local launcher over stdin when it listened on port 0)
and connects the mesh. A party then starts the engine, agrees with the others
on where to start (a common checkpoint, with its joint seed, or a fresh joint
seed from a coin toss), and runs the protocol with a Session. Any failure is
sent to the peers as an Abort before the node exits, so every party stops with
a message naming who failed. What goes into that Abort is public by design: a
protocol's or peer's own error text, or just the kind of internal error; the
details (which may hold private data) stay in this node's own log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from parties.consortium.config import RANDOMNESS
from parties.node.checkpoint import CheckpointError, Checkpoints
from parties.node.session import PartySession
from parties.wire.transport import LinkOptions, Mesh, PeerError
from protocols.api import (
    Budget,
    ParameterError,
    Params,
    PlainState,
    PlainTable,
    Protocol,
    ProtocolError,
    RevealError,
)

log = logging.getLogger("smpc.runtime")

DEALER = "dealer"
LISTENING = "SMPC-LISTENING"


class RunInterrupted(RuntimeError):
    """The run stopped because a peer was lost or failed: names the peer and where the run was."""

    def __init__(self, peer: str, what: str, stage: str) -> None:
        if what.startswith("aborted: "):  # the peer stopped on its own error, maybe a loss
            text = f"stopped by party '{peer}' {stage}: {what.removeprefix('aborted: ')}"
        else:
            text = f"lost party '{peer}' {stage}: {what}"
        super().__init__(text)
        self.peer, self.what, self.stage = peer, what, stage


class RunTimeLimit(RuntimeError):
    """The run reached its --max-run-time; checkpoints already written are kept."""


@dataclass
class NodeSpec:
    """Who this node is and who the others are."""

    name: str
    parties: list[str]
    session_id: str
    listen: str
    addresses: dict[str, str] = field(default_factory=dict)
    provider: str = "dealer"
    options: LinkOptions = field(default_factory=LinkOptions)
    torch_threads: int = 0  # 0: torch's default; the local launcher uses 1 (many nodes, few cores)
    tls: Any = None  # parties.wire.transport.TlsIdentity, or None for plaintext

    @property
    def uses_dealer(self) -> bool:
        return self.provider == "dealer"

    @property
    def order(self) -> list[str]:
        return [*self.parties, DEALER] if self.uses_dealer else list(self.parties)

    @property
    def peers(self) -> list[str]:
        return [n for n in self.order if n != self.name]


@dataclass
class PartyJob:
    """What a party runs once the manifest is agreed: the protocol and this party's inputs."""

    protocol: Protocol
    params: Params
    tables: dict[str, PlainTable]
    providers: dict[str, list[str]]
    reveal_to: dict[str, list[str]]
    checkpoints: Checkpoints | None = None
    budgets: dict[str, Budget] = field(default_factory=dict)  # the manifest's DP budgets
    min_group_size: int = 1  # the manifest's: smaller groups' statistics are suppressed
    states: dict[str, PlainState] = field(default_factory=dict)  # own weights (STATE_DICT)


@dataclass
class PartyRun:
    """What a party's run gave: the protocol's result, time and communication."""

    result: dict[str, Any]
    revealed: dict[str, Any]
    seconds: float
    stats: dict[str, Any]
    seed: bytes
    resumed_from: int | None


def _validate(spec: NodeSpec) -> None:
    if spec.provider not in RANDOMNESS:
        raise ValueError(f"randomness {spec.provider!r} is not one of {', '.join(RANDOMNESS)}")
    if not 2 <= len(spec.parties) <= 8:
        raise ValueError(f"{len(spec.parties)} parties: smpc runs 2 to 8")
    if len(set(spec.parties)) != len(spec.parties) or DEALER in spec.parties:
        raise ValueError(f"party names must be distinct and not '{DEALER}': {spec.parties}")
    if spec.name not in spec.order:
        raise ValueError(f"'{spec.name}' is not one of {spec.order}")


def open_mesh(spec: NodeSpec, control_in: TextIO | None = None) -> Mesh:
    """Bind, rendezvous (when listening on port 0 under the launcher) and connect."""
    _validate(spec)
    if spec.torch_threads:
        import torch

        torch.set_num_threads(spec.torch_threads)
    mesh = Mesh(spec.name, spec.peers, spec.order, spec.session_id, spec.options, spec.tls)
    wire_log = os.environ.get("SMPC_WIRE_LOG")  # audit: record every byte this node sends
    if wire_log:
        mesh.wire_log = open(f"{wire_log}.{spec.name}", "wb")  # noqa: SIM115
    port = mesh.bind(spec.listen)
    addresses = dict(spec.addresses)
    if control_in is not None:
        print(f"{LISTENING} {port}", flush=True)
        line = control_in.readline()
        if not line:
            raise RuntimeError("the launcher closed the control channel before the address book")
        addresses.update(json.loads(line))
    mesh.connect(addresses)
    return mesh


def run_dealer(spec: NodeSpec, mesh: Mesh) -> dict[str, int]:
    """Serve correlated randomness until the parties are done; return what was served."""
    from parties.dealer import server

    served: Counter[str] = Counter()
    try:
        _profiled(lambda: server.serve(mesh, spec.parties, served), DEALER)
    except PeerError as exc:
        lost = RunInterrupted(exc.peer, exc.what,
                              f"after serving {sum(served.values())} requests")
        mesh.abort(str(lost))
        raise lost from None
    except BaseException as exc:
        mesh.abort(public_reason(exc, "the dealer"))
        raise
    mesh.close()
    return dict(served)


def public_reason(exc: BaseException, what: str) -> str:
    """The Abort reason peers get for `exc`: errors written to be public pass; for any other,
    only its kind (its text may hold private values: a cell, a path, a tensor)."""
    if isinstance(exc, ProtocolError | RevealError | ParameterError | RunTimeLimit):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, CheckpointError):
        return "its checkpoints cannot be resumed with the others' (details in its log)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"internal error ({type(exc).__name__}) in {what} (details in its log)"


def run_party(spec: NodeSpec, mesh: Mesh, job: PartyJob,
              on_progress: Callable[[str, dict[str, Any]], None] | None = None) -> PartyRun:
    """Start the engine on the mesh, agree on a seed, run the protocol, close (or abort all)."""
    from parties.engine import context
    from parties.engine.communicator import GrpcCommunicator
    from parties.engine.randomness import joint_seed

    session: PartySession | None = None
    provider = None
    try:
        comm = GrpcCommunicator(mesh, spec.parties)
        if spec.uses_dealer:
            from parties.dealer.provider import make_provider

            provider = make_provider(mesh, comm.get_rank(), DEALER)
            name = context.PROVIDER_DEALER
        else:
            name = context.PROVIDER_INSECURE_TFP
        context.start_party(comm, provider, name)
        agreed = job.checkpoints.agree(comm) if job.checkpoints is not None else None
        seed = agreed[2] if agreed is not None else joint_seed(comm)
        context.use_public_seed(seed)
        session = PartySession(
            party=spec.name, rank=comm.get_rank(), parties=list(spec.parties), params=job.params,
            seed=seed, communicator=comm, outputs=tuple(o.name for o in job.protocol.outputs),
            reveal_to=job.reveal_to, tables=job.tables, providers=job.providers,
            checkpoints=job.checkpoints, restored=agreed[:2] if agreed is not None else None,
            on_progress=on_progress, budgets=dict(job.budgets),
            min_group_size=job.min_group_size, states=dict(job.states))
        comm.reset_communication_stats()
        tic = time.perf_counter()
        result = _profiled(lambda: job.protocol.run(session), spec.name) or {}
        elapsed = time.perf_counter() - tic
        _check_result(job.protocol, result)
        result = {**session.platform_outputs(), **result}
        comm.barrier()  # everything each party sent has arrived before anyone closes
    except PeerError as exc:
        lost = RunInterrupted(exc.peer, exc.what,
                              session.stage() if session is not None else "while starting")
        mesh.abort(str(lost))
        context.stop_party()
        raise lost from None
    except BaseException as exc:
        stage = session.stage() if session is not None else "while starting"
        mesh.abort(f"{public_reason(exc, f'protocol {job.protocol.name!r}')} ({stage})")
        context.stop_party()
        raise
    stats = comm.get_communication_stats()
    stats["dealer_requests"] = provider.source.requests if provider is not None else 0
    stats["dealer_draws"] = provider.source.draws if provider is not None else 0
    context.stop_party()
    mesh.close()
    return PartyRun(result, session.revealed, elapsed, stats, seed,
                    agreed[0] if agreed is not None else None)


def _check_result(protocol: Protocol, result: Any) -> None:
    if not isinstance(result, dict):
        raise ProtocolError(f"{protocol.name}'s run() returned a {type(result).__name__}; it "
                            "must return a dict of its outputs")
    names = {o.name for o in protocol.outputs}
    extra = sorted(set(result) - names)
    if extra:
        raise ProtocolError(f"{protocol.name}'s run() returned {extra}, which are not among its "
                            f"outputs ({', '.join(sorted(names))})")


def _profiled(run: Callable[[], Any], name: str) -> Any:
    """Call `run`; with SMPC_PROFILE=PREFIX set, write a cProfile of it to PREFIX.<name>."""
    prefix = os.environ.get("SMPC_PROFILE")
    if not prefix:
        return run()
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(run)
    finally:
        profiler.dump_stats(f"{prefix}.{name}")
