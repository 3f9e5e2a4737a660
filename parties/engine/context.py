"""The one place that writes CrypTen's globals.

CrypTen 0.4.1 keeps its state in module globals (`crypten.communicator.get()`,
`crypten.mpc.get_default_provider()`, `crypten.generators`, `cfg`). smpc
replaces them once per process (:func:`_install`) with accessors of the
started parties (parties/engine/started.py): :func:`start_party` registers
one for the calling thread (its communicator, provider and random streams),
:func:`stop_party` forgets it. What is installed:

* the communicator and the provider of the calling thread's party;
* CrypTen's protocols routed to smpc's primitives (parties/engine/hooks.py),
  its autograd spared gradients nobody needs and ReLU's second conversion
  (parties/engine/autograd.py), and its inverse square root (BatchNorm's)
  started from a comparison-picked guess (parties/engine/functions.py);
* every secret random draw from ChaCha20 streams: CrypTen's seed exchange is
  replaced by :func:`parties.engine.randomness.exchange_stream_keys`, and its
  public "global" generator is seeded only by :func:`use_public_seed`;
* the reveal guard (parties/engine/reveal.py) on every CrypTen call that opens
  a secret;
* `crypten.load_from_party` that sends models without pickle
  (parties/engine/models.py).
"""

from __future__ import annotations

import types
from typing import Any, NoReturn

from parties.engine import autograd, functions, hooks, models, reveal
from parties.engine.compat import load_crypten
from parties.engine.randomness import exchange_stream_keys, public_generator
from parties.engine.started import PARTIES, Generators, NotStarted, Party

__all__ = ["PROVIDER_DEALER", "PROVIDER_INSECURE_TFP", "NotStarted", "start_party",
           "stop_party", "use_public_seed"]

PROVIDER_DEALER = "DEALER"
PROVIDER_INSECURE_TFP = "TFP"  # CrypTen's trusted first party: party 0 knows all randomness


_installed = False  # True once CrypTen's globals point at the started parties


def _refuse_seeding(*args: Any, **kwargs: Any) -> NoReturn:
    raise RuntimeError("smpc draws CrypTen's seeds itself (start_party, use_public_seed); "
                       "CrypTen's own seeding is not available")


def _current_provider() -> Any:
    return PARTIES.current().provider


def _openings_armed() -> bool:
    party = PARTIES.find()
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
    comm.get = lambda: PARTIES.current().communicator
    comm.is_initialized = lambda: bool(PARTIES)
    comm.uninit = stop_party
    comm._init = lambda *a, **k: None
    crypten.mpc.get_default_provider = _current_provider
    crypten.generators = Generators()
    crypten._setup_prng = crypten._sync_seeds = crypten.manual_seed = _refuse_seeding
    crypten.load_from_party = models.load_from_party

    vars(crypten_beaver).update({
        "__beaver_protocol": hooks.beaver_protocol, "square": hooks.square,
        "wraps": hooks.wraps, "AND": hooks.and_gate, "B2A_single_bit": hooks.b2a_single_bit,
    })
    MPCTensor._ltz = hooks.ltz
    MPCTensor.relu = hooks.relu
    crypten.common.functions.maximum._argmax_helper = hooks.argmax_helper
    MPCTensor.inv_sqrt = functions.inv_sqrt
    autograd.install()
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
    party = Party(communicator, provider, refuse_openings)
    PARTIES.add(party)
    try:
        party.streams = exchange_stream_keys(communicator)
    except BaseException:
        PARTIES.remove()
        raise
    return crypten


def use_public_seed(seed: bytes) -> None:
    """Seed this party's CrypTen "global" generator (public draws: dropout, sampling) from `seed`.

    `seed` is the run's joint seed (randomness.joint_seed): the same on every party.
    """
    party = PARTIES.current()
    public_generator(seed)  # checks the seed
    party.public_seed, party.public = seed, {}


def stop_party() -> None:
    """Forget this thread's party; CrypTen calls fail until the next start_party."""
    PARTIES.remove()
