"""The server's status: whether it takes new items, and whether it hands
items out.  Operators move a server through these to take it out of
rotation without losing work.

The protocol refuses what the status forbids (``SERVER_ERROR <reason>``);
the service keeps the status, tells the connections when it changes, and
has its storage keep it in the data directory, so that a server taken out
of rotation stays out across a restart.
"""

from __future__ import annotations

import enum


class ServerStatus(enum.Enum):
    """``UP`` serves everything; ``READONLY`` refuses new items so that
    consumers drain the server; ``QUIESCENT`` also hands nothing out, and
    only lets reads already open finish."""

    UP = "up"
    READONLY = "readonly"
    QUIESCENT = "quiescent"

    @property
    def reason(self) -> str:
        """Why a request this status forbids is refused, as the
        ``SERVER_ERROR`` reply says it."""
        return _REASONS[self]

    @property
    def changes_queues(self) -> bool:
        """Whether items may be stored, and queues deleted or flushed."""
        return self is ServerStatus.UP

    @property
    def hands_out(self) -> bool:
        """Whether items may be taken, peeked at or waited for."""
        return self is not ServerStatus.QUIESCENT


_REASONS = {
    ServerStatus.UP: "",
    ServerStatus.READONLY: "server is read-only",
    ServerStatus.QUIESCENT: "server is quiescent",
}
