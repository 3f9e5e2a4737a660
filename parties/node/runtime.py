"""Running one node: a party (CrypTen over the mesh) or the dealer.

A node binds its listening address, learns where the others are (from its
settings, or from the local launcher over stdin when it listened on port 0),
connects the mesh, then either serves as dealer or starts CrypTen and runs a
protocol. Any failure is sent to the peers as an Abort before the node exits,
so every party stops with a message naming who failed.
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

from parties.engine import context as engine_context
from parties.wire.transport import LinkOptions, Mesh, PeerError

log = logging.getLogger("smpc.runtime")

DEALER = "dealer"
PROVIDERS = ("dealer", "insecure-trusted-first-party")
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
    public_seed: int = 0
    torch_threads: int = 0  # 0: torch's default; the local launcher uses 1 (many nodes, few cores)
    tls: Any = None  # parties.transport.TlsIdentity, or None for plaintext

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
class PartySession:
    """The Session a protocol gets (protocols/session.py)."""

    name: str
    rank: int
    world_size: int
    parties: list[str]
    public_seed: int
    communicator: Any
    on_progress: Callable[[str, dict[str, Any]], None] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    reveal_to: dict[str, list[str]] = field(default_factory=dict)
    train: Any = None
    test: Any = None
    checkpoints: Any = None  # parties.checkpoint.Checkpoints, or None
    last_step: tuple[str, dict[str, Any]] | None = None

    def checkpoint(self, step: int, state: dict[str, Any]) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save(step, state)

    def restore(self) -> tuple[int, dict[str, Any]] | None:
        return None if self.checkpoints is None else self.checkpoints.restore(self.communicator)

    def progress(self, step: str, **fields: Any) -> None:
        self.last_step = (step, fields)
        if self.on_progress is not None:
            self.on_progress(step, fields)

    def reveal(self, name: str, value: Any, to: list[str] | None = None) -> Any:
        from protocols.session import RevealError

        if name not in self.reveal_to:
            declared = ", ".join(sorted(self.reveal_to)) or "none"
            raise RevealError(f"'{name}' is not an output the manifest declares "
                              f"(declared: {declared})")
        recipients = list(self.reveal_to[name]) if to is None else list(to)
        extra = [r for r in recipients if r not in self.reveal_to[name]]
        if extra:
            raise RevealError(f"the manifest reveals '{name}' to {self.reveal_to[name]}, "
                              f"not to {extra}")
        mine = None
        for recipient in recipients:
            plain = value.get_plain_text(dst=self.parties.index(recipient))
            if recipient == self.name:
                mine = plain
        return mine

    def communication_stats(self) -> dict[str, Any]:
        return self.communicator.get_communication_stats()

    def stage(self) -> str:
        """Where the run is, for error messages: 'after epoch 4/10 (round 3120)'."""
        rounds = self.communicator.get_communication_stats().get("rounds", 0)
        if self.last_step is None:
            return f"before the first step (round {rounds})"
        step, fields = self.last_step
        done, total = fields.get("epoch"), fields.get("of")
        where = f"{step} {done}/{total}" if done is not None and total else f"step '{step}'"
        return f"after {where} (round {rounds})"


def _validate(spec: NodeSpec) -> None:
    if spec.provider not in PROVIDERS:
        raise ValueError(f"provider {spec.provider!r} is not one of {', '.join(PROVIDERS)}")
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
    from parties.dealer import server as dealer

    served: Counter[str] = Counter()
    try:
        _profiled(lambda: dealer.serve(mesh, spec.parties, served), DEALER)
    except PeerError as exc:
        lost = RunInterrupted(exc.peer, exc.what,
                              f"after serving {sum(served.values())} requests")
        mesh.abort(str(lost))
        raise lost from None
    except BaseException as exc:
        mesh.abort(f"dealer failed: {exc}")
        raise
    mesh.close()
    return dict(served)


def run_party(spec: NodeSpec, mesh: Mesh, protocol: Callable[[PartySession], Any],
              on_progress: Callable[[str, dict[str, Any]], None] | None = None,
              prepare: Callable[[PartySession], None] | None = None) -> Any:
    """Start CrypTen on the mesh, run `protocol`, shut down cleanly (or abort everyone).

    `prepare` fills the session (parameters, reveal list, private inputs) once
    CrypTen is up and before the protocol runs; its errors abort every party.
    """
    from parties.engine.communicator import GrpcCommunicator

    session = None
    try:
        comm = GrpcCommunicator(mesh, spec.parties)
        if spec.uses_dealer:
            from parties.dealer.provider import make_provider

            provider = make_provider(mesh, comm.get_rank(), DEALER)
            name = engine_context.PROVIDER_DEALER
        else:
            provider, name = None, engine_context.PROVIDER_INSECURE_TFP
        # the guard stays off until session.reveal opens with reveal.open_to (the lead's runtime)
        engine_context.start_party(comm, provider, name, refuse_openings=False)
        session = PartySession(spec.name, comm.get_rank(), comm.get_world_size(), spec.parties,
                               spec.public_seed, comm, on_progress)
        if prepare is not None:
            prepare(session)
        comm.reset_communication_stats()
        tic = time.perf_counter()
        result = _profiled(lambda: protocol(session), session.name)
        elapsed = time.perf_counter() - tic
        comm.barrier()  # everything each party sent has arrived before anyone closes
    except PeerError as exc:
        lost = RunInterrupted(exc.peer, exc.what,
                              session.stage() if session is not None else "while starting")
        mesh.abort(str(lost))
        engine_context.stop_party()
        raise lost from None
    except BaseException as exc:
        mesh.abort(f"{type(exc).__name__}: {exc}")
        engine_context.stop_party()
        raise
    stats = comm.get_communication_stats()
    stats["dealer_requests"] = provider.source.requests if provider is not None else 0
    stats["dealer_draws"] = provider.source.draws if provider is not None else 0
    engine_context.stop_party()
    mesh.close()
    return result, elapsed, stats


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
