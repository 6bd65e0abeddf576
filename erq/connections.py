"""The client connections of a server, as the service sees them.

The service does not know the memcache protocol: it counts connections
against ``max_connections``, tells them when the server stops or the login
rule changes, and waits for them to close.  `Connection` is all it needs of
one (``erq.protocol.QueueProtocol`` provides it), so the service never
imports the protocol.  Clients' mistakes are counted and logged here too,
one line of a kind a second at most, so that a client repeating a mistake
cannot flood the log.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Protocol

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger

#: Seconds between two log lines of one kind about clients' mistakes.
LOG_INTERVAL = 1.0

#: Seconds a stopping server waits, once its journals are written, for its
#: connections to send the replies they still owe; then it cuts them off.
SHUTDOWN_GRACE = 5.0


class Connection(Protocol):
    """What the service needs of a client connection."""

    @property
    def peer(self) -> IAddress:
        """Where the client is."""

    def disconnect(self) -> None:
        """The server is stopping: read no more, close once the replies
        owed have left."""

    def abort(self) -> None:
        """Close now, whatever is still owed."""

    def login_required(self, required: bool) -> None:
        """The server now has an auth file (``required``) or none."""

    def stop_waiting(self) -> None:
        """The server hands out nothing more: answer a waiting get now with
        what it has."""


class Connections:
    """The live connections, with the limit on their number and the waits
    of a stopping server for them to close."""

    def __init__(self, clock: IReactorTime, log: Logger) -> None:
        self._clock = clock
        self._log = log
        self._live: set[Connection] = set()
        # Connections that a stop waits to see closed, and what it waits on.
        self._closing: list[tuple[set[Connection], Deferred[None]]] = []

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._live))

    def __contains__(self, connection: object) -> bool:
        return connection in self._live

    def add(self, connection: Connection) -> None:
        self._live.add(connection)

    def lost(self, connection: Connection) -> None:
        """A connection closed: forget it, and end the waits it was the
        last of."""
        self._live.discard(connection)
        for closing, closed in list(self._closing):
            closing.discard(connection)
            if not closing:
                self._closing.remove((closing, closed))
                closed.callback(None)

    def disconnect_all(self) -> set[Connection]:
        """Tell every connection that the server stops; the ones told."""
        told = set(self._live)
        for connection in told:
            connection.disconnect()
        return told

    def closed(self, closing: set[Connection]) -> Deferred[None]:
        """Fires once these connections have closed, or have been cut off
        `SHUTDOWN_GRACE` seconds from now.  (Those made after a stop, by a
        start before it was done, are not waited for.)"""
        closing &= self._live
        if not closing:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closing.append((closing, closed))
        cut_off = self._clock.callLater(SHUTDOWN_GRACE, self._cut_off, closing)
        closed.addBoth(lambda result: cut_off.cancel() if cut_off.active() else None)
        return closed

    def _cut_off(self, closing: set[Connection]) -> None:
        self._log.warn(
            "Cutting off {count} connections that did not take their replies"
            " within {grace} s of stopping",
            count=len(closing),
            grace=SHUTDOWN_GRACE,
        )
        for connection in list(closing):
            connection.abort()
            self.lost(connection)


class LogLimit:
    """Which log lines of a kind may be written: one in `LOG_INTERVAL` at
    most."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        # Each kind: when the last was logged, and how many were not since.
        self._limited: dict[str, tuple[float, int]] = {}

    def admit(self, kind: str) -> int | None:
        """``None`` when a line of ``kind`` is not to be logged now; else
        how many were not since the last one."""
        now = self._clock.seconds()
        last, held = self._limited.get(kind, (None, 0))
        if last is not None and now - last < LOG_INTERVAL:
            self._limited[kind] = (last, held + 1)
            return None
        self._limited[kind] = (now, 0)
        return held


def describe_peer(peer: IAddress) -> str:
    """A client's address as a log line shows it."""
    if isinstance(peer, IPv4Address):
        return f"{peer.host}:{peer.port}"
    if isinstance(peer, IPv6Address):
        return f"[{peer.host}]:{peer.port}"
    if isinstance(peer, UNIXAddress):
        return "a Unix socket"
    return str(peer)


def is_local(peer: IAddress) -> bool:
    """Whether a client at ``peer`` is on this machine: a Unix socket, or a
    loopback address (an IPv4 one mapped into IPv6 too)."""
    if isinstance(peer, UNIXAddress):
        return True
    if not isinstance(peer, IPv4Address | IPv6Address):
        return False
    try:
        address = ipaddress.ip_address(peer.host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
