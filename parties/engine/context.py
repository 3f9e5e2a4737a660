"""The one place that writes CrypTen's globals.

CrypTen 0.4.1 keeps its state in module globals (`crypten.communicator.get()`,
`crypten.mpc.get_default_provider()`, `crypten.generators`, `cfg`). smpc
replaces them once per process (:func:`_install`) with accessors of the
*started parties*: :func:`start_party` registers one for the calling thread
(its communicator, provider and random streams), :func:`stop_party` forgets
it. A process normally runs one party; the tests run several, one per
thread. What is installed:

* the communicator and the provider of the calling thread's party;
* CrypTen's protocols routed to smpc's primitives (parties/engine/hooks.py);
* every secret random draw from ChaCha20 streams: CrypTen's seed exchange is
  replaced by :func:`parties.engine.randomness.exchange_stream_keys`, and its
  public "global" generator is seeded only by :func:`use_public_seed`;
* the reveal guard (parties/engine/reveal.py) on every CrypTen call that opens
  a secret;
* `crypten.load_from_party` that sends models without pickle
  (parties/engine/models.py).
"""

from __future__ import annotations

import threading
import types
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch

from parties.engine import hooks, models, reveal
from parties.engine.compat import load_crypten
from parties.engine.randomness import PartyStreams, exchange_stream_keys, public_generator

PROVIDER_DEALER = "DEALER"
PROVIDER_INSECURE_TFP = "TFP"  # CrypTen's trusted first party: party 0 knows all randomness


class NotStarted(RuntimeError):
    """CrypTen was used where no party is started."""


@dataclass
class _Party:
    """One started party: what CrypTen's globals return while its thread runs."""

    communicator: Any
    provider: Any
    refuse_openings: bool
    streams: PartyStreams | None = None
    public: dict[torch.device, torch.Generator] = field(default_factory=dict)
    public_seed: bytes | None = None


class _Parties:
    """The parties started in this process, by thread (one, except in the tests)."""

    def __init__(self) -> None:
        self._by_thread: dict[int, _Party] = {}
        self._lock = threading.Lock()

    def add(self, party: _Party) -> None:
        with self._lock:
            self._by_thread[threading.get_ident()] = party

    def remove(self) -> None:
        """Forget this thread's party (or the only one, when started in another thread)."""
        with self._lock:
            me = threading.get_ident()
            if me in self._by_thread:
                del self._by_thread[me]
            elif len(self._by_thread) == 1:
                self._by_thread.clear()

    def find(self) -> _Party | None:
        """This thread's party, or the only party of the process, or None."""
        got = self._by_thread.get(threading.get_ident())
        if got is None and len(self._by_thread) == 1:
            got = next(iter(self._by_thread.values()), None)
        return got

    def current(self) -> _Party:
        got = self.find()
        if got is not None:
            return got
        if not self._by_thread:
            raise NotStarted("no party is started in this process: call "
                             "parties.engine.context.start_party() first")
        raise NotStarted("several parties run in this process and this thread is none of them")

    def __bool__(self) -> bool:
        return bool(self._by_thread)


_parties = _Parties()
_installed = False  # True once CrypTen's globals point here


class _SameForEveryDevice:
    """A generator mapping that gives one ChaCha20 stream for any device."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __getitem__(self, device: Any) -> Any:
        return self._stream


class _PublicGenerators:
    """The party's public generators by device, seeded from the joint seed."""

    def __init__(self, party: _Party) -> None:
        self._party = party

    def __getitem__(self, device: Any) -> torch.Generator:
        party = self._party
        if party.public_seed is None:
            raise NotStarted("CrypTen's public generator is not seeded: call "
                             "use_public_seed(joint_seed(communicator)) after start_party")
        device = torch.device("cpu" if device is None else device)
        if device not in party.public:
            g = public_generator(party.public_seed)
            party.public[device] = g if device.type == "cpu" else \
                torch.Generator(device=device).manual_seed(g.initial_seed())
        return party.public[device]


class _Generators:
    """`crypten.generators` for the calling thread's party: prev, next, local (ChaCha20), global."""

    def keys(self) -> tuple[str, ...]:
        return ("prev", "next", "local", "global")

    def __getitem__(self, key: str) -> Any:
        party = _parties.current()
        if key == "global":
            return _PublicGenerators(party)
        if party.streams is None:
            raise NotStarted("the party's random streams are not set up yet (start_party)")
        return _SameForEveryDevice(getattr(party.streams, key))


def _refuse_seeding(*args: Any, **kwargs: Any) -> NoReturn:
    raise RuntimeError("smpc draws CrypTen's seeds itself (start_party, use_public_seed); "
                       "CrypTen's own seeding is not available")


def _current_provider() -> Any:
    return _parties.current().provider


def _openings_armed() -> bool:
    party = _parties.find()
    return party is None or party.refuse_openings


def _install(crypten: types.ModuleType) -> None:
    """Point CrypTen's globals at the started parties and smpc's hooks (once per process)."""
    global _installed
    if _installed:
        return
    from crypten.mpc import MPCTensor
    from crypten.mpc.primitives import ArithmeticSharedTensor as AST
    from crypten.mpc.primitives import BinarySharedTensor as BST
    from crypten.mpc.primitives import arithmetic, binary, converters
    from crypten.mpc.primitives import beaver as crypten_beaver
    from crypten.mpc.provider import tfp_provider, ttp_provider

    comm = crypten.communicator
    comm.get = lambda: _parties.current().communicator
    comm.is_initialized = lambda: bool(_parties)
    comm.uninit = stop_party
    comm._init = lambda *a, **k: None
    crypten.mpc.get_default_provider = _current_provider
    crypten.generators = _Generators()
    crypten._setup_prng = crypten._sync_seeds = crypten.manual_seed = _refuse_seeding
    crypten.load_from_party = models.load_from_party

    vars(crypten_beaver).update({
        "__beaver_protocol": hooks.beaver_protocol, "square": hooks.square,
        "wraps": hooks.wraps, "AND": hooks.and_gate, "B2A_single_bit": hooks.b2a_single_bit,
    })
    MPCTensor._ltz = hooks.ltz
    MPCTensor.relu = hooks.relu
    converters._A2B = hooks.a2b
    for module in (crypten.common.rng, arithmetic, binary, tfp_provider, ttp_provider):
        for name in ("generate_random_ring_element", "generate_kbit_random_tensor"):
            if hasattr(module, name):
                setattr(module, name, getattr(hooks, name))

    for cls, names in ((MPCTensor, ("get_plain_text", "reveal")),
                       (AST, ("get_plain_text", "reveal", "reveal_batch")),
                       (BST, ("get_plain_text", "reveal", "reveal_batch"))):
        for name in names:
            original = vars(cls)[name]
            what = f"{cls.__name__}.{name}()"
            if isinstance(original, staticmethod):
                setattr(cls, name, staticmethod(reveal.guard(what, original.__func__,
                                                             _openings_armed)))
            else:
                setattr(cls, name, reveal.guard(what, original, _openings_armed))
    _installed = True


def start_party(communicator: Any, provider: Any, provider_name: str, *,
                refuse_openings: bool = True) -> types.ModuleType:
    """Start this thread's party: CrypTen over `communicator`, material from `provider`.

    `provider_name` is PROVIDER_DEALER for a dealer-backed provider, or
    PROVIDER_INSECURE_TFP for CrypTen's trusted-first-party mode (tests only:
    party 0 then knows everyone's randomness; `provider` None). Exchanges the
    pairwise stream keys with the neighbours (one round). With
    `refuse_openings`, CrypTen's opening calls raise RevealError outside
    `allow_openings` (session.reveal opens with `reveal.open_to`). Turns on
    CrypTen's communication statistics. Returns the crypten module.
    """
    crypten = load_crypten()
    _install(crypten)
    if provider_name == PROVIDER_DEALER:
        if not hasattr(provider, "draw"):
            raise ValueError("the dealer provider must come from parties.dealer.provider")
    elif provider_name == PROVIDER_INSECURE_TFP:
        if provider is None:  # one per party: its tracing caches are the party's own
            provider = crypten.mpc.provider.TrustedFirstParty()
    else:
        raise ValueError(f"provider {provider_name!r} is not {PROVIDER_DEALER} or "
                         f"{PROVIDER_INSECURE_TFP}")
    crypten.cfg["mpc.provider"] = provider_name
    crypten.cfg["communicator.verbose"] = True
    party = _Party(communicator, provider, refuse_openings)
    _parties.add(party)
    try:
        party.streams = exchange_stream_keys(communicator)
    except BaseException:
        _parties.remove()
        raise
    return crypten


def use_public_seed(seed: bytes) -> None:
    """Seed this party's CrypTen "global" generator (public draws: dropout, sampling) from `seed`.

    `seed` is the run's joint seed (randomness.joint_seed): the same on every party.
    """
    party = _parties.current()
    public_generator(seed)  # checks the seed
    party.public_seed, party.public = seed, {}


def stop_party() -> None:
    """Forget this thread's party; CrypTen calls fail until the next start_party."""
    _parties.remove()
