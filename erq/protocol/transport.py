"""Writing replies to the transport, sending at once when nothing waits:
the one place where erq relies on how Twisted's TCP transport buffers.

``transport.write`` on a Twisted TCP connection only queues the data: it is
sent on the next turn of the reactor, which first registers the socket for
writing and afterwards unregisters it again.  That is three system calls
and a loop turn per reply, most of the cost of a lock-step request.  When
nothing is queued in the transport, the reply can go to the socket now and
keep its order; Twisted has no public way to ask whether anything is
queued, so ``pending`` reads the three attributes of
``twisted.internet.abstract.FileDescriptor`` that hold its write buffer
(``dataBuffer`` from ``offset`` on, and ``_tempDataLen`` bytes not yet
joined to it).  Only a plain ``tcp.Server`` is written this way; any other
transport (TLS, a Unix socket, a test's ``StringTransport``) gets
``write``.  ``tests/test_transport.py`` fails when a Twisted release changes
what this relies on; then ``sender`` can return ``transport.write`` alone,
at the cost of speed only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp


def pending(transport: Any) -> int:
    """Bytes written to a Twisted TCP ``transport`` and not yet sent."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def plain(transport: Any) -> bool:
    """Whether ``transport`` is a plain TCP connection, whose socket erq
    may send to itself when nothing is queued in it."""
    return type(transport) is tcp.Server


def sender(transport: Any) -> Callable[[bytes], None]:
    """A function that writes to ``transport``, sending at once when
    nothing is queued in it."""
    if not plain(transport):
        write: Callable[[bytes], None] = transport.write
        return write
    socket_send = transport.getHandle().send
    queue = transport.write

    def send(data: bytes) -> None:
        if not transport._tempDataLen and len(transport.dataBuffer) == transport.offset:
            # Nothing queued in the transport: send now.
            try:
                sent = socket_send(data)
            except OSError:
                # Would block, or the connection broke: the transport finds
                # out and tells us in its own way.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        queue(data)

    return send
