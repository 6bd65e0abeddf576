"""Helpers for tests over real loopback sockets: a running server, raw clients."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from erq.protocol import QueueFactory, QueueProtocol
from erq.service import QueueService

#: Tests listen and connect on loopback only.
LOCALHOST = "127.0.0.1"
#: Every client socket gives up after this many seconds.
CLIENT_TIMEOUT = 10.0

reactor: Any = _reactor
assert IReactorTCP.providedBy(reactor) and IReactorTime.providedBy(reactor)
assert IReactorCore.providedBy(reactor)


class TrackedProtocol(QueueProtocol):
    """A server connection whose end the test can wait for."""

    def __init__(self, service: QueueService) -> None:
        super().__init__(service)
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is None:
            super().connectionLost()
        else:
            super().connectionLost(reason)
        self.lost.callback(None)


class TrackingFactory(QueueFactory):
    """Builds ``TrackedProtocol`` and remembers every connection."""

    def __init__(self, service: QueueService) -> None:
        super().__init__(service)
        self.protocols: list[TrackedProtocol] = []

    def buildProtocol(self, addr: object) -> TrackedProtocol:
        protocol = TrackedProtocol(self.service)
        protocol.factory = self
        self.protocols.append(protocol)
        return protocol


class Server:
    """A running ``QueueService`` listening on a loopback port."""

    def __init__(self, service: QueueService, factory: TrackingFactory, port: int):
        self.service = service
        self.factory = factory
        self.port = port

    def find_protocol(self, client: socket.socket) -> TrackedProtocol | None:
        """The server side of a client socket, once the server accepted it."""
        client_port = client.getsockname()[1]
        for protocol in self.factory.protocols:
            transport: Any = protocol.transport
            if transport is not None and transport.getPeer().port == client_port:
                return protocol
        return None

    async def protocol_for(self, client: socket.socket) -> TrackedProtocol:
        """Wait for the server to accept ``client``; its server side."""
        await poll_until(lambda: self.find_protocol(client) is not None)
        protocol = self.find_protocol(client)
        assert protocol is not None
        return protocol


def start_server(
    case: TestCase, service: QueueService | None = None, **service_options: Any
) -> Server:
    """Start a ``QueueService`` (``service``, or one made with
    ``service_options``) on ``127.0.0.1`` port 0 for one test; it is
    stopped, and every connection to it closed, when the test ends."""
    if service is None:
        service_options.setdefault("reactor", reactor)
        service = QueueService(**service_options)
    service.startService()
    factory = TrackingFactory(service)
    listening = reactor.listenTCP(0, factory, interface=LOCALHOST)

    async def stop() -> None:
        stopped = listening.stopListening()
        service.stopService()
        for protocol in factory.protocols:
            transport: Any = protocol.transport
            if not protocol.lost.called:
                transport.abortConnection()
        await stopped
        for protocol in factory.protocols:
            await protocol.lost

    case.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return Server(service, factory, listening.getHost().port)


def poll_until(
    condition: Callable[[], bool], timeout: float = CLIENT_TIMEOUT, every: float = 0.005
) -> Deferred[None]:
    """Fire once ``condition()`` is true, checking every ``every`` seconds
    for at most ``timeout`` seconds; fail with ``TimeoutError`` after."""

    async def poll() -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{condition!r} still false after {timeout} s")
            await deferLater(reactor, every, lambda: None)

    return Deferred.fromCoroutine(poll())


# -- blocking clients, for threads.deferToThread --------------------------------


def connect(
    port: int, timeout: float = CLIENT_TIMEOUT, receive_buffer: int | None = None
) -> socket.socket:
    """A raw client socket connected to the server, with a timeout;
    ``receive_buffer`` fixes the kernel's receive buffer size."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect((LOCALHOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes (the socket's timeout applies to each
    read); fail if the server closes first."""
    buffer = bytearray()
    while len(buffer) < size:
        chunk = sock.recv(min(size - len(buffer), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(buffer)} of {size} bytes")
        buffer += chunk
    return bytes(buffer)


def recv_until(sock: socket.socket, end: bytes, limit: int = 1 << 20) -> bytes:
    """Read until the data read so far ends with ``end``."""
    buffer = bytearray()
    while not buffer.endswith(end):
        if len(buffer) > limit:
            raise ValueError(f"no {end!r} in {limit} bytes")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {bytes(buffer[-200:])!r}")
        buffer += chunk
    return bytes(buffer)


def command(port: int, request: bytes, end: bytes = b"\r\n") -> bytes:
    """Send one request on a new connection and read its reply up to ``end``."""
    with connect(port) as sock:
        sock.sendall(request)
        return recv_until(sock, end)


def exchange(
    sock: socket.socket, request: bytes, reply_size: int, timeout: float = 20.0
) -> bytes:
    """Write ``request`` while reading the replies, until ``reply_size``
    bytes have come back, so that neither side's buffers can deadlock the
    other; everything within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    view = memoryview(request)
    sent = 0
    received = bytearray()
    sock.setblocking(False)
    try:
        with selectors.DefaultSelector() as selector:
            events = selectors.EVENT_READ | selectors.EVENT_WRITE
            selector.register(sock, events)
            while len(received) < reply_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"sent {sent} of {len(request)} bytes, "
                        f"read {len(received)} of {reply_size}"
                    )
                for _, mask in selector.select(left):
                    if mask & selectors.EVENT_WRITE:
                        sent += sock.send(view[sent : sent + (1 << 20)])
                        if sent == len(request):
                            selector.modify(sock, selectors.EVENT_READ)
                    if mask & selectors.EVENT_READ:
                        chunk = sock.recv(1 << 20)
                        if not chunk:
                            raise ConnectionError(
                                f"closed after {len(received)} of {reply_size}"
                            )
                        received += chunk
    finally:
        sock.settimeout(CLIENT_TIMEOUT)
    return bytes(received)


def assert_same_bytes(got: bytes, expected: bytes) -> None:
    """Fail with a short message naming the first difference, rather than
    the whole of two long byte strings."""
    if got == expected:
        return
    at = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    raise AssertionError(
        f"{len(got)} bytes, {len(expected)} expected; first difference at {at}: "
        f"{got[max(at - 40, 0) : at + 40]!r} != {expected[max(at - 40, 0) : at + 40]!r}"
    )


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port
