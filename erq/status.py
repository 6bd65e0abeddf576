"""The server's status: whether it takes new items, and whether it hands
items out.  Operators move a server through these to take it out of
rotation without losing work."""

from __future__ import annotations

import enum


class ServerStatus(enum.Enum):
    """``UP`` serves everything; ``READONLY`` refuses new items so that
    consumers drain the server; ``QUIESCENT`` also hands nothing out, and
    only lets reads already open finish."""

    UP = "up"
    READONLY = "readonly"
    QUIESCENT = "quiescent"
