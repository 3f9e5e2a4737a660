"""What can go wrong on the wire, as exceptions that name the peer (or the local setting)."""

from __future__ import annotations


class PeerError(RuntimeError):
    """Something went wrong with one named peer; `.peer` is the party to name."""

    def __init__(self, peer: str, what: str) -> None:
        super().__init__(f"party '{peer}': {what}")
        self.peer = peer
        self.what = what


class PeerClosed(PeerError):
    """A peer ended its side of the link cleanly while we still wanted a message."""


class PeerTimeout(PeerError):
    """A peer did not connect, did not answer, or did not send within the deadline."""


class SettingError(ValueError):
    """A local setting (address, port) that cannot work."""
