"""The MPC engine: CrypTen on current torch, over smpc's communicator, with smpc's primitives.

compat (the import and torch fixes), context (start_party: the one writer of
CrypTen's globals), started (the parties started in this process),
communicator, correlated (dealer material formats),
primitives (Beaver, comparison, conversion), hooks (CrypTen's entry points
routed to them), randomness (ChaCha20 streams, the joint seed), reveal (the
guard and open_to), models (load_from_party without pickle), heap.
"""

from parties.engine.compat import load_crypten

__all__ = ["load_crypten"]
