"""QueueService as a Twisted service, and the twistd options that build it."""

from __future__ import annotations

import os
from typing import Any

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheUnexpectedCloseError
from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from erq import __version__
from erq.protocol import QueueFactory
from erq.service import QueueService
from erq.tap import ListeningService, Options, StartupError, makeService
from tests.support import (
    CLIENT_TIMEOUT,
    LOCALHOST,
    command,
    poll_until,
    reactor,
)


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    """An endpoint that remembers the ports it listened on."""

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self.endpoint = endpoint
        self.ports: list[IListeningPort] = []

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        def record(port: IListeningPort) -> IListeningPort:
            self.ports.append(port)
            return port

        return self.endpoint.listen(factory).addCallback(record)


def listening_service(
    queues: QueueService,
) -> tuple[StreamServerEndpointService, RecordingEndpoint]:
    """What an embedding application writes, on a port the system picks."""
    listening = strports.service(f"tcp:0:interface={LOCALHOST}", QueueFactory(queues))
    assert isinstance(listening, StreamServerEndpointService)
    endpoint = RecordingEndpoint(listening.endpoint)
    listening.endpoint = endpoint
    return listening, endpoint


def port_number(endpoint: RecordingEndpoint) -> int:
    host: Any = endpoint.ports[-1].getHost()
    return int(host.port)


class ComposedServiceTests(TestCase):
    timeout = 30

    def client(self, port: int) -> Client:
        client = Client(
            (LOCALHOST, port), timeout=CLIENT_TIMEOUT, connect_timeout=CLIENT_TIMEOUT
        )
        self.addCleanup(client.close)
        return client

    def application(self) -> tuple[MultiService, QueueService]:
        top = MultiService()
        queues = QueueService(reactor=reactor)
        queues.setServiceParent(top)
        self.addCleanup(lambda: top.stopService() if top.running else None)
        return top, queues

    async def stop(self, top: MultiService, queues: QueueService) -> None:
        """Stop the application and see every connection closed."""
        await top.stopService()
        await poll_until(lambda: not queues.connections)

    async def test_start_use_stop(self) -> None:
        top, queues = self.application()
        listening, endpoint = listening_service(queues)
        listening.setServiceParent(top)
        self.assertTrue(IService.providedBy(queues))
        self.assertIs(top.getServiceNamed("erq"), queues)

        top.startService()
        self.assertTrue(queues.running)
        port = port_number(endpoint)
        client = self.client(port)

        def talk() -> None:
            self.assertTrue(client.set("q", b"kept", noreply=False))
            self.assertEqual(client.version(), __version__.encode())

        await deferToThread(talk)
        # A client that waits when the server stops is answered END (it
        # took nothing) and disconnected.
        waiting = deferToThread(client.get, "q2/t=10000")
        await poll_until(lambda: queues.counters.cmd_get > 0)

        stopped = top.stopService()
        self.assertIsInstance(stopped, Deferred)
        await stopped
        self.assertFalse(queues.running)
        self.assertFalse(listening.running)
        self.assertIsNone(await waiting)
        with self.assertRaises(MemcacheUnexpectedCloseError):
            await deferToThread(client.version)
        with self.assertRaises(ConnectionRefusedError):
            await deferToThread(command, port, b"version\r\n")
        await poll_until(lambda: not queues.connections)

    async def test_stop_then_start_again(self) -> None:
        top, queues = self.application()
        listening, endpoint = listening_service(queues)
        listening.setServiceParent(top)
        top.startService()
        port = port_number(endpoint)
        reply = await deferToThread(command, port, b"set q 3 0 4\r\nkept\r\n")
        self.assertEqual(reply, b"STORED\r\n")
        await self.stop(top, queues)

        # A StreamServerEndpointService listens once only (Twisted's own
        # rule), so the application gets a new port; the queues are the same.
        listening.disownServiceParent()
        listening, endpoint = listening_service(queues)
        listening.setServiceParent(top)
        top.startService()
        self.assertTrue(queues.running)
        port = port_number(endpoint)
        client = self.client(port)

        def talk() -> None:
            self.assertEqual(
                client.raw_command("get q", "END\r\n"), b"VALUE q 3 4\r\nkept\r\n"
            )
            self.assertTrue(client.set("q", b"again", noreply=False))
            self.assertEqual(client.get("q"), b"again")

        await deferToThread(talk)
        await self.stop(top, queues)


class EmbeddedUseTests(SynchronousTestCase):
    def test_code_beside_the_service_puts_what_a_client_gets(self) -> None:
        """An application holding the service stores items without a
        connection, and a client's get takes them, in order."""
        queues = QueueService(reactor=Clock())
        self.assertIs(queues.put("q", b"first"), True)
        self.assertIs(queues.put("q", b"second", 3, 0), True)
        taken = [queues.get("q", None, False, False) for _ in range(3)]
        self.assertEqual(
            [(item.data, item.flags) if item else None for item in taken],  # type: ignore[union-attr]
            [(b"first", 0), (b"second", 3), None],
        )
        self.assertEqual(queues.counters.cmd_set, 2)


class TapTests(SynchronousTestCase):
    def listening_description(self, *arguments: str) -> str:
        options = Options()
        options.parseOptions(list(arguments))
        top = makeService(options)
        [listening] = [child for child in top if isinstance(child, ListeningService)]
        return listening.description

    def test_port_number_listens_on_loopback(self) -> None:
        self.assertEqual(
            self.listening_description("--port", "22122"),
            "tcp:22122:interface=127.0.0.1:backlog=1024",
        )

    def test_default_port(self) -> None:
        self.assertEqual(
            self.listening_description(), "tcp:22122:interface=127.0.0.1:backlog=1024"
        )

    def test_endpoint_description_is_passed_through(self) -> None:
        for description in (
            "tcp:22133:interface=0.0.0.0:backlog=5",
            "unix:/tmp/erq-test.sock:mode=666:backlog=5",
            "tcp6:22122:interface=\\:\\:1:backlog=5",
        ):
            self.assertEqual(
                self.listening_description("--port", description), description
            )

    def test_a_bad_connection_limit_is_named(self) -> None:
        for value, reason in (
            ("abc", 'expected a positive integer or "unlimited", got "abc"'),
            ("0", "expected a positive integer, got 0"),
            ("-3", "expected a positive integer, got -3"),
            ("", 'expected a positive integer or "unlimited", got ""'),
        ):
            options = Options()
            with self.assertRaises(StartupError) as raised:
                options.parseOptions(["--max-connections", value])
            shown = value or '""'
            self.assertEqual(
                str(raised.exception), f"erq: --max-connections {shown}: {reason}"
            )

    def test_auth_file(self) -> None:
        path = os.path.abspath(self.mktemp())
        options = Options()
        with self.assertRaises(StartupError) as raised:
            options.parseOptions(["--auth-file", path])
        self.assertEqual(
            str(raised.exception),
            f"erq: --auth-file {path}: cannot read: No such file or directory",
        )
        with open(path, "wb") as file:
            file.write(b"alice:s3cret\n")
        options = Options()
        options.parseOptions(["--auth-file", path])
        queues = makeService(options).getServiceNamed("erq")
        assert isinstance(queues, QueueService)
        credentials = queues.config.credentials
        assert credentials is not None
        self.assertTrue(credentials.check(b"alice", b"s3cret"))

    def test_makes_a_queue_service(self) -> None:
        options = Options()
        options.parseOptions(["--no-shutdown"])
        top = makeService(options)
        queues = top.getServiceNamed("erq")
        self.assertIsInstance(queues, QueueService)
        assert isinstance(queues, QueueService)
        self.assertFalse(queues.allow_shutdown)


class StartOrderTests(TestCase):
    timeout = 30

    async def test_queues_are_back_before_the_port_listens(self) -> None:
        data_dir = os.path.abspath(self.mktemp())
        first = QueueService(reactor=reactor, data_dir=data_dir)
        first.startService()
        for i in range(3):
            stored = first.delivery.put("q", b"item %d" % i, 0, 0)
            assert isinstance(stored, Deferred)
            self.assertIsNot(await stored, False)
        await first.stopService()

        options = Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "-d", data_dir])
        top = makeService(options)
        queues = top.getServiceNamed("erq")
        assert isinstance(queues, QueueService)
        [listening] = [child for child in top if isinstance(child, ListeningService)]
        seen: list[int] = []
        bind = listening.privilegedStartService

        def bind_and_note() -> None:
            queue = queues.queue("q")
            seen.append(queue.items if queue is not None else -1)
            bind()

        listening.privilegedStartService = bind_and_note  # type: ignore[method-assign]
        # What twistd does before the reactor runs.
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(seen, [3])
        waiting = listening._waitingForPort
        assert waiting is not None
        port = await waiting
        reply = await deferToThread(
            command, port.getHost().port, b"get q\r\n", b"END\r\n"
        )
        self.assertEqual(reply, b"VALUE q 0 6\r\nitem 0\r\nEND\r\n")


class ListeningServiceTests(TestCase):
    timeout = 30

    async def test_listens_again_after_a_stop(self) -> None:
        """An embedding application may stop and start its services."""
        queues = QueueService(reactor=reactor)
        listening = ListeningService(
            reactor, "tcp:0:interface=127.0.0.1", QueueFactory(queues)
        )
        for _ in range(2):
            listening.startService()
            waiting = listening._waitingForPort
            assert waiting is not None
            port = await waiting
            number = port.getHost().port
            reply = await deferToThread(command, number, b"version\r\n")
            self.assertEqual(reply, b"VERSION %s\r\n" % __version__.encode())
            await listening.stopService()
