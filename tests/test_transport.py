"""Tests for erq.protocol.transport: what it relies on in Twisted's TCP
transport still holds.  A failure here after a Twisted upgrade means
``sender`` must fall back to ``transport.write``."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from erq.protocol.transport import pending, sender


class Recorder(Protocol):
    def __init__(self, made: Deferred[Recorder], lost: Deferred[None]) -> None:
        self.made = made
        self.lost = lost

    def connectionMade(self) -> None:
        self.made.callback(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)


class Factory(ServerFactory):
    def __init__(self) -> None:
        self.made: Deferred[Recorder] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def buildProtocol(self, addr: object) -> Recorder:
        return Recorder(self.made, self.lost)


def receive(client: socket.socket, size: int) -> bytes:
    """``size`` bytes that the kernel already holds for ``client``."""
    data = b""
    for _ in range(100):
        if len(data) >= size:
            break
        data += client.recv(size - len(data))
    return data


class TCPTransportTests(TestCase):
    async def connect(self) -> tuple[Any, socket.socket]:
        factory = Factory()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address: Any = port.getHost()
        client = socket.create_connection(("127.0.0.1", address.port), 5)
        self.addCleanup(client.close)
        protocol = await factory.made
        transport: Any = protocol.transport

        async def close() -> None:
            transport.abortConnection()
            await factory.lost

        self.addCleanup(close)
        return transport, client

    async def test_sends_at_once_when_nothing_is_queued(self) -> None:
        transport, client = await self.connect()
        self.assertIs(type(transport), tcp.Server)
        send = sender(transport)
        self.assertEqual(pending(transport), 0)
        send(b"now")
        # Sent without a turn of the reactor.
        self.assertEqual(receive(client, 3), b"now")
        self.assertEqual(pending(transport), 0)

    async def test_queues_behind_what_is_queued(self) -> None:
        transport, client = await self.connect()
        send = sender(transport)
        transport.write(b"queued ")
        self.assertEqual(pending(transport), 7)
        send(b"after")
        self.assertEqual(pending(transport), 12)
        client.setblocking(False)
        self.assertRaises(BlockingIOError, client.recv, 100)
        client.setblocking(True)
        # What the reactor does when the socket is writable.
        transport.doWrite()
        self.assertEqual(pending(transport), 0)
        self.assertEqual(receive(client, 12), b"queued after")

    async def test_partly_sent_buffer_counts(self) -> None:
        transport, client = await self.connect()
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        size = 8 * 1024 * 1024
        transport.write(b"x" * size)
        transport.doWrite()
        # Part went to the socket, the rest waits in the transport's buffer.
        left = pending(transport)
        self.assertGreater(left, 0)
        self.assertLess(left, size)
        sender(transport)(b"y")
        self.assertEqual(pending(transport), left + 1)


class OtherTransportTests(SynchronousTestCase):
    def test_other_transports_just_write(self) -> None:
        transport = StringTransport()
        send = sender(transport)
        send(b"hello")
        self.assertEqual(transport.value(), b"hello")
