"""A consortium run: one party, the dealer, or all of them locally with baselines.

The order is the trust model's: read the consortium file and the local policy,
connect, agree on the manifest with every node, and only then read the private
data and start sharing. Errors before the handshake are local; errors after it
are sent to every peer as an Abort.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import protocols
from parties.consortium import handshake, manifest
from parties.consortium.config import Consortium, Policy, load_consortium, load_policy
from parties.consortium.data import load_table, scaled
from parties.node import runtime
from parties.node.checkpoint import Checkpoints
from parties.wire.transport import LinkOptions, TlsIdentity
from protocols.session import PrivateTable


@dataclass
class Outcome:
    """What one party learned, and how long it took."""

    party: str
    digest: str
    revealed: dict[str, Any]
    seconds: float
    stats: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"party": self.party, "manifest_digest": self.digest, "revealed": self.revealed,
                "timings": {"protocol_seconds": self.seconds,
                            "communication_seconds": self.stats.get("time"),
                            "rounds": self.stats.get("rounds"),
                            "bytes_sent": self.stats.get("bytes_sent"),
                            "bytes_received": self.stats.get("bytes_received")}}


class TlsSettingError(ValueError):
    """TLS is asked for (or missing) in a way that cannot work."""


def tls_identity(consortium: Consortium, name: str, key: Path | None, cert: Path | None,
                 insecure: bool) -> TlsIdentity | None:
    """This node's TLS identity, or None for plaintext (only with --insecure, on loopback)."""
    if insecure:
        if not consortium.all_loopback():
            raise TlsSettingError("--insecure is allowed only when every address in "
                                  f"{consortium.path} is on loopback")
        print(f"WARNING: [{name}] --insecure: links are plaintext and unauthenticated "
              "(loopback only)", file=sys.stderr, flush=True)
        return None
    ca = consortium.ca_path
    if ca is None:
        raise TlsSettingError(f"{consortium.path}: the consortium names no CA ([consortium] ca):"
                              " create one with `smpc certs`, or run with --insecure on "
                              "loopback")
    key = key or ca.parent / f"{name}.key"
    cert = cert or ca.parent / f"{name}.pem"
    for what, path in (("CA certificate", ca), ("key", key), ("certificate", cert)):
        if not path.is_file():
            raise TlsSettingError(f"{what} {path} not found (for development: smpc certs "
                                  f"{consortium.path})")
    return TlsIdentity(ca.read_bytes(), key.read_bytes(), cert.read_bytes())


def node_spec(consortium: Consortium, name: str, listen: str | None,
              options: LinkOptions, threads: int = 0,
              tls: TlsIdentity | None = None) -> runtime.NodeSpec:
    addresses = {p.name: p.address for p in consortium.parties}
    addresses[runtime.DEALER] = consortium.dealer
    own = addresses.get(name)
    return runtime.NodeSpec(
        name=name, parties=consortium.party_names, session_id=consortium.name,
        listen=listen or _listen_on(own or ""), addresses=addresses, options=options,
        public_seed=0, torch_threads=threads, tls=tls,
    )


def _listen_on(address: str) -> str:
    """Listen on the port of this node's consortium address, on every interface."""
    return "0.0.0.0:" + address.rpartition(":")[2]


def _table(path: Path | None, consortium: Consortium, what: str) -> PrivateTable:
    if path is None:
        raise ValueError(f"the policy names no {what} file")
    t = scaled(load_table(path, consortium.schema), consortium.schema)
    return PrivateTable(t.features, t.labels)


def run_party(consortium_path: str, name: str, policy_path: str, listen: str | None,
              options: LinkOptions, control: bool, on_progress: Any = None,
              threads: int = 0, checkpoint_dir: str | None = None, resume: bool = False,
              out_dir: str | None = None, insecure: bool = False) -> Outcome:
    """One organization's party: handshake, then its data, then the protocol."""
    consortium = load_consortium(consortium_path)
    policy = load_policy(policy_path)
    consortium.address_of(name)
    module = protocols.load(consortium.protocol)
    module.parameters(consortium.parameters)  # a bad parameter fails here, before connecting
    mine = manifest.build(consortium, module)
    objection = manifest.policy_objection(mine, policy, name)
    tls = tls_identity(consortium, name, policy.key, policy.cert, insecure)
    spec = node_spec(consortium, name, listen, options, threads, tls)
    mesh = runtime.open_mesh(spec, control_in=sys.stdin if control else None)
    try:
        digest = handshake.agree(mesh, mine, objection)
    except BaseException as exc:
        mesh.abort(str(exc))
        raise

    folder = Path(checkpoint_dir or Path("checkpoints") / consortium.name / name)

    def prepare(session: runtime.PartySession) -> None:
        session.checkpoints = Checkpoints(folder, digest, resume)
        session.parameters = module.parameters(consortium.parameters)
        session.reveal_to = {r.name: list(r.to) for r in consortium.reveal}
        session.train = _table(policy.data, consortium, "training data")
        session.test = _table(policy.test_data, consortium, "test data")

    revealed, seconds, stats = runtime.run_party(spec, mesh, module.run, on_progress, prepare)
    outcome = Outcome(name, digest, revealed, seconds, stats)
    if revealed.get("weights") is not None:
        save_model(Path(out_dir) if out_dir else Path("out") / consortium.name / name,
                   consortium, outcome)
    return outcome


def save_model(folder: Path, consortium: Consortium, outcome: Outcome) -> None:
    """A plain PyTorch state dict (nn.Linear) plus JSON metadata, for the weights' recipients."""
    weights = torch.tensor(outcome.revealed["weights"], dtype=torch.float32)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"weight": weights[:-1].reshape(1, -1), "bias": weights[-1:].clone()}
    torch.save(state, folder / "model.pt")
    meta = {
        "model": "torch.nn.Linear(in_features, 1) followed by a sigmoid",
        "in_features": int(weights.numel() - 1),
        "features": list(consortium.schema.features), "label": consortium.schema.label,
        "feature_ranges": {k: list(v) for k, v in consortium.schema.ranges.items()},
        "scaling": "x' = (x - low) / (high - low) for every feature with a range",
        "consortium": consortium.name, "protocol": consortium.protocol,
        "parameters": consortium.parameters, "manifest_digest": outcome.digest,
        "metrics": outcome.revealed.get("metrics"),
    }
    (folder / "model.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def run_dealer(consortium_path: str, listen: str | None, options: LinkOptions,
               control: bool, threads: int = 0, key: str | None = None,
               cert: str | None = None, insecure: bool = False) -> dict[str, int]:
    """The dealer of a consortium: agrees on the manifest, then serves randomness."""
    consortium = load_consortium(consortium_path)
    module = protocols.load(consortium.protocol)
    tls = tls_identity(consortium, runtime.DEALER, Path(key) if key else None,
                       Path(cert) if cert else None, insecure)
    spec = node_spec(consortium, runtime.DEALER, listen, options, threads, tls)
    mesh = runtime.open_mesh(spec, control_in=sys.stdin if control else None)
    try:
        handshake.agree(mesh, manifest.build(consortium, module), None)
    except BaseException as exc:
        mesh.abort(str(exc))
        raise
    return runtime.run_dealer(spec, mesh)


def policy_path(consortium: Consortium, party: str) -> Path:
    """Where `smpc local` finds a party's policy: policies/<party>.toml beside the file."""
    return consortium.path.parent / "policies" / f"{party}.toml"


def baselines(consortium: Consortium, policies: dict[str, Policy]) -> dict[str, Any]:
    """Pooled plaintext and each party alone (local mode only: it can see all data)."""
    module = protocols.load(consortium.protocol)
    train = {p: _table(pol.data, consortium, "training data") for p, pol in policies.items()}
    test = {p: _table(pol.test_data, consortium, "test data") for p, pol in policies.items()}
    all_test = [(t.features, t.labels) for t in test.values()]
    pooled = module.plaintext([(t.features, t.labels) for t in train.values()], all_test,
                              consortium.parameters)
    alone = {p: module.plaintext([(t.features, t.labels)], all_test, consortium.parameters)
             for p, t in train.items()}
    return {"pooled": pooled, "alone": alone}


def ensure_dev_certs(consortium: Consortium) -> Path | None:
    """Local mode: create development certificates when the consortium's CA file is missing."""
    from parties.consortium import certs

    ca = consortium.ca_path
    if ca is None or ca.is_file():
        return None
    certs.generate(consortium.name, [*consortium.party_names, runtime.DEALER], ca.parent)
    return ca.parent


def run_local(consortium_path: str, timeout: float, echo: Any,
              insecure: bool = False) -> dict[str, Any]:
    """Every party and the dealer of a consortium on loopback, plus plaintext baselines."""
    from parties.node.launcher import launch

    consortium = load_consortium(consortium_path)
    made = None if insecure else ensure_dev_certs(consortium)
    if made is not None:
        print(f"generated development certificates in {made}", file=sys.stderr)
    flags = ["--insecure"] if insecure else []
    policies = {p: load_policy(policy_path(consortium, p)) for p in consortium.party_names}
    base = baselines(consortium, policies)  # also validates every data file up front
    commands = {}
    for p in consortium.party_names:
        commands[p] = [sys.executable, "-m", "parties.cli", "party", "--consortium",
                       str(consortium.path), "--as", p, "--policy", str(policies[p].path),
                       "--listen", "127.0.0.1:0", "--control", "stdin",
                       "--timeout", str(timeout), "--threads", "1", *flags]
    commands[runtime.DEALER] = [sys.executable, "-m", "parties.cli", "dealer", "--consortium",
                                str(consortium.path), "--listen", "127.0.0.1:0",
                                "--control", "stdin", "--timeout", str(timeout),
                                "--threads", "1", *flags]
    tic = time.perf_counter()
    run = launch(consortium.party_names, "", timeout=timeout + 120, echo=echo,
                 commands=commands)
    wall = time.perf_counter() - tic
    return {"run": run, "baseline": base, "wall_seconds": wall}


def write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
