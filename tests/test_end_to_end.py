"""The server over a real loopback port, spoken to by real memcache clients."""

from __future__ import annotations

import os
import random
import socket
import time
from typing import Any

import memcache
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from erq import __version__
from erq.config import Config, QueueSettings, ServerSettings
from erq.delivery import Delivery
from erq.journal import engine as engine_module
from erq.protocol.transport import pending
from erq.service import QUEUE_STATS, SERVER_STATS, QueueService
from tests.support import (
    CLIENT_TIMEOUT,
    LOCALHOST,
    EndToEndCase,
    PymemcacheClient,
    Server,
    assert_same_bytes,
    command,
    connect,
    exchange,
    poll_until,
    reactor,
    recv_exactly,
    recv_until,
    start_server,
)


class SlowDelivery(Delivery):
    """Answers ``STORED`` only after a while, as a journal that waits for
    its fsync does."""

    def put(
        self, name: str, data: bytes, flags: int, exptime: int
    ) -> bool | Deferred[Any]:
        result = super().put(name, data, flags, exptime)
        if result is not True:
            return result
        durable: Deferred[bool] = Deferred()
        reactor.callLater(0.2, durable.callback, True)
        return durable


class SlowJournalService(QueueService):
    """Stores through a `SlowDelivery`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivery = SlowDelivery(self, self.config)


class PymemcacheTests(EndToEndCase):
    async def test_set_get_keeps_data_and_flags(self) -> None:
        client = self.pymemcache()
        data = b"\x00binary\r\nwith line ends\r\n\xff"

        def talk() -> None:
            self.assertTrue(client.set("q", (data, 42), noreply=False))
            self.assertTrue(client.set("q", (b"", 2**32 - 1), noreply=False))
            self.assertTrue(client.set("q", (b"third", 0), noreply=False))
            self.assertEqual(client.get("q"), (data, 42))
            self.assertEqual(client.get("q"), (b"", 2**32 - 1))
            self.assertEqual(client.get("q"), (b"third", 0))
            self.assertIsNone(client.get("q"))

        await deferToThread(talk)

    async def test_blocking_get_gets_item_set_while_waiting(self) -> None:
        waiter = self.pymemcache()
        setter = self.pymemcache()
        counters = self.server.service.counters
        gets_before = counters.cmd_get
        # Nobody has set to this queue yet: the get waits for it to exist.
        waiting = deferToThread(waiter.get, "born/t=10000")
        await poll_until(lambda: counters.cmd_get > gets_before)
        self.assertFalse(waiting.called)
        stored = await deferToThread(setter.set, "born", (b"late", 7), noreply=False)
        self.assertTrue(stored)
        self.assertEqual(await waiting, (b"late", 7))

    async def test_blocking_get_times_out_with_nothing(self) -> None:
        client = self.pymemcache()

        def wait() -> tuple[object, float]:
            started = time.monotonic()
            return client.get("empty/t=200"), time.monotonic() - started

        value, waited = await deferToThread(wait)
        self.assertIsNone(value)
        self.assertGreaterEqual(waited, 0.19)
        self.assertLess(waited, 5)
        # And on the wire: END, alone.
        reply = await deferToThread(command, self.port, b"get empty/t=100\r\n")
        self.assertEqual(reply, b"END\r\n")

    async def test_open_read_goes_back_when_its_client_disconnects(self) -> None:
        first = self.pymemcache()
        second = self.pymemcache()

        def open_then_vanish() -> None:
            self.assertTrue(first.set("jobs", (b"one", 1), noreply=False))
            self.assertTrue(first.set("jobs", (b"two", 2), noreply=False))
            self.assertEqual(first.get("jobs/open"), (b"one", 1))
            first.close()

        await deferToThread(open_then_vanish)
        # The item comes back when the server sees the close; wait for it.
        self.assertEqual(await deferToThread(second.get, "jobs/t=10000"), (b"one", 1))
        self.assertEqual(await deferToThread(second.get, "jobs"), (b"two", 2))
        self.assertEqual(self.stat("queue_jobs_open_transactions"), "0")
        self.assertEqual(self.stat("queue_jobs_canceled_transactions"), "1")

    async def test_close_open_confirms_and_opens_in_one_round_trip(self) -> None:
        client = self.pymemcache()

        def talk() -> None:
            for number in range(3):
                client.set("work", (b"item %d" % number, number), noreply=False)
            self.assertEqual(client.get("work/open"), (b"item 0", 0))
            self.assertEqual(client.get("work/close/open"), (b"item 1", 1))
            self.assertEqual(client.get("work/close"), None)
            # Closing with nothing open is harmless.
            self.assertEqual(client.get("work/close"), None)

        await deferToThread(talk)
        self.assertEqual(self.stat("queue_work_items"), "1")
        self.assertEqual(self.stat("queue_work_open_transactions"), "0")
        # A confirmed item is gone even when the client goes away.
        await deferToThread(client.close)
        other = self.pymemcache()
        self.assertEqual(await deferToThread(other.get, "work"), (b"item 2", 2))
        self.assertIsNone(await deferToThread(other.get, "work"))

    async def test_delete(self) -> None:
        client = self.pymemcache()

        def talk() -> None:
            client.set("doomed", (b"x", 0), noreply=False)
            self.assertTrue(client.delete("doomed", noreply=False))
            self.assertFalse(client.delete("doomed", noreply=False))
            self.assertIsNone(client.get("doomed"))

        await deferToThread(talk)
        self.assertIsNone(self.server.service.queue("doomed"))

    async def test_flush_and_flush_all(self) -> None:
        client = self.pymemcache()

        def talk() -> None:
            for name in ("a", "a", "b"):
                client.set(name, (b"x", 0), noreply=False)
            self.assertEqual(client.raw_command("flush a", "END\r\n"), b"")
            self.assertIsNone(client.get("a"))
            self.assertEqual(client.get("b"), (b"x", 0))
            client.set("b", (b"y", 0), noreply=False)
            self.assertEqual(client.raw_command("flush_all"), b"Flushed all queues.")
            self.assertIsNone(client.get("b"))

        await deferToThread(talk)
        self.assertEqual(self.stat("curr_items"), "0")

    async def test_stats_and_version(self) -> None:
        client = self.pymemcache()

        def talk() -> tuple[dict[bytes, Any], bytes]:
            client.set("counted", (b"12345", 0), noreply=False)
            client.set("counted", (b"abc", 0), noreply=False)
            client.get("counted")
            client.get("nothing")
            return client.stats(), client.version()

        stats, version = await deferToThread(talk)
        for name in SERVER_STATS:
            self.assertIn(name.encode(), stats)
        for name in QUEUE_STATS:
            self.assertIn(b"queue_counted_" + name.encode(), stats)
        self.assertEqual(stats[b"curr_items"], 1)
        self.assertEqual(stats[b"total_items"], 2)
        self.assertEqual(stats[b"bytes"], 3)
        self.assertEqual(stats[b"cmd_set"], 2)
        self.assertEqual(stats[b"get_hits"], 1)
        self.assertEqual(stats[b"get_misses"], 1)
        self.assertEqual(stats[b"curr_connections"], 1)
        self.assertEqual(stats[b"queue_counted_items"], 1)
        self.assertEqual(version, __version__.encode())
        self.assertGreaterEqual(int(version.split(b".")[0]), 1)


class OpenTimeoutTests(EndToEndCase):
    def setUp(self) -> None:
        config = Config(defaults=QueueSettings(open_timeout=0.2))
        self.server = start_server(self, config=config)
        self.port = self.server.port

    async def test_a_read_not_closed_in_time_goes_to_a_waiting_client(self) -> None:
        slow = self.pymemcache()
        waiting = self.pymemcache()

        def talk() -> None:
            self.assertTrue(slow.set("jobs", (b"one", 1), noreply=False))
            self.assertEqual(slow.get("jobs/open"), (b"one", 1))
            # Handed over once the slow client's read times out.
            self.assertEqual(waiting.get("jobs/t=10000/open"), (b"one", 1))
            # Too late: nothing is open here any more.
            self.assertIsNone(slow.get("jobs/close"))
            self.assertIsNone(waiting.get("jobs/close"))

        await deferToThread(talk)
        self.assertEqual(self.stat("queue_jobs_open_transactions"), "0")
        self.assertEqual(self.stat("queue_jobs_canceled_transactions"), "1")
        self.assertEqual(self.stat("queue_jobs_items"), "0")


class PythonMemcachedTests(EndToEndCase):
    async def test_set_get_keeps_its_types_by_flags(self) -> None:
        client = self.python_memcached()
        values: list[object] = [42, "text \u00e9", b"raw\r\nbytes", {"a": [1, 2]}]

        def talk() -> list[object]:
            for value in values:
                self.assertTrue(client.set("typed", value))
            got = [client.get("typed") for _ in values]
            for value in values:
                client.set("typed", value)
            return got

        self.assertEqual(await deferToThread(talk), values)

        # python-memcached says what a value is in its flags; erq keeps them.
        def raw_flags() -> list[int]:
            with connect(self.port) as sock:
                flags = []
                for _ in values:
                    sock.sendall(b"get typed\r\n")
                    header = b""
                    while not header.endswith(b"\r\n"):
                        header += recv_exactly(sock, 1)
                    _, key, flag, size = header.split()
                    self.assertEqual(key, b"typed")
                    recv_exactly(sock, int(size) + len(b"\r\nEND\r\n"))
                    flags.append(int(flag))
                return flags

        flags = await deferToThread(raw_flags)
        self.assertEqual(
            flags,
            [
                memcache.Client._FLAG_INTEGER,
                memcache.Client._FLAG_TEXT,
                0,
                memcache.Client._FLAG_PICKLE,
            ],
        )

    async def test_blocking_get_on_an_existing_queue(self) -> None:
        waiter = self.python_memcached()
        setter = self.python_memcached()
        self.assertTrue(await deferToThread(setter.set, "waited", "first"))
        self.assertEqual(await deferToThread(waiter.get, "waited"), "first")
        queue = self.server.service.queue("waited")
        assert queue is not None
        waiting = deferToThread(waiter.get, "waited/t=10000")
        await poll_until(lambda: queue.waiters == 1)
        self.assertFalse(waiting.called)
        self.assertTrue(await deferToThread(setter.set, "waited", "second"))
        self.assertEqual(await waiting, "second")

    async def test_peek(self) -> None:
        client = self.python_memcached()

        def talk() -> None:
            client.set("peeked", "head")
            client.set("peeked", "next")
            self.assertEqual(client.get("peeked/peek"), "head")
            self.assertEqual(client.get("peeked/peek"), "head")
            self.assertEqual(client.get("peeked"), "head")
            self.assertEqual(client.get("peeked/peek"), "next")
            self.assertEqual(client.get("peeked"), "next")
            self.assertIsNone(client.get("peeked/peek"))

        await deferToThread(talk)
        self.assertEqual(self.stat("cmd_peek"), "4")

    async def test_delete_flush_all_and_stats(self) -> None:
        client = self.python_memcached()

        def talk() -> tuple[int, int, object, list[Any]]:
            client.set("gone", 1)
            deleted = client.delete("gone")
            missing = client.delete("gone")
            client.set("kept", 1)
            client.set("kept", 2)
            client.flush_all()
            return deleted, missing, client.get("kept"), client.get_stats()

        deleted, missing, after_flush, stats = await deferToThread(talk)
        self.assertEqual((deleted, missing), (1, 0))
        self.assertIsNone(after_flush)
        [(_, values)] = stats
        self.assertEqual(values["version"], __version__)
        self.assertEqual(values["curr_items"], "0")
        self.assertEqual(values["queue_kept_total_flushes"], "1")
        self.assertEqual(values["queue_deletes"], "1")


class RawSocketTests(EndToEndCase):
    async def test_ten_thousand_pipelined_sets_then_gets(self) -> None:
        count = 10_000
        rng = random.Random(20261128)
        items = []
        for number in range(count):
            size = rng.choice((0, 1, 2, 10, 100, 1000, 5000))
            if number % 1000 == 999:
                size = 100_000
            data = rng.randbytes(size)
            if size >= 4:
                middle = size // 2
                data = data[:middle] + b"\r\n" + data[middle + 2 :]
            items.append((number * 429_497 % 2**32, data))
        items[1] = (items[1][0], b"\r\n")
        sets = b"".join(
            b"set big %d 0 %d\r\n%s\r\n" % (flags, len(data), data)
            for flags, data in items
        )
        gets = b"get big\r\n" * count + b"get big\r\n"
        expected = (
            b"".join(
                b"VALUE big %d %d\r\n%s\r\nEND\r\n" % (flags, len(data), data)
                for flags, data in items
            )
            + b"END\r\n"
        )

        def talk() -> tuple[bytes, bytes]:
            with connect(self.port) as sock:
                stored = exchange(sock, sets, len(b"STORED\r\n") * count)
                got = exchange(sock, gets, len(expected))
            return stored, got

        stored, got = await deferToThread(talk)
        assert_same_bytes(stored, b"STORED\r\n" * count)
        assert_same_bytes(got, expected)
        self.assertEqual(self.stat("curr_items"), "0")

    async def test_a_client_that_does_not_read_is_not_read_either(self) -> None:
        """Output backpressure: a client that pipelines requests without
        reading the replies makes the server stop reading its requests,
        with a bounded amount of reply buffered, while other connections
        are served; then every reply arrives, complete."""
        await self.check_backpressure(self.server)

    async def test_backpressure_behind_a_durable_set(self) -> None:
        """Replies held behind a set that waits for its journal are bounded
        too: the requests after it wait until it is answered."""
        server = start_server(self, SlowJournalService(reactor=reactor))
        await self.check_backpressure(
            server, b"set small 0 0 1\r\nx\r\n", b"STORED\r\n"
        )

    async def check_backpressure(
        self, server: Server, first: bytes = b"", first_reply: bytes = b""
    ) -> None:
        item = bytes(range(256)) * 128  # 32 KiB
        requests = 1000  # 32 MiB of replies for 11 KB of requests
        client = Client(
            (LOCALHOST, server.port),
            timeout=CLIENT_TIMEOUT,
            connect_timeout=CLIENT_TIMEOUT,
        )
        self.addCleanup(client.close)
        await deferToThread(client.set, "big", item, noreply=False)

        # A small, fixed receive buffer: the kernel cannot soak up the replies.
        slow = connect(server.port, receive_buffer=64 * 1024)
        self.addCleanup(slow.close)
        slow.sendall(first + b"get big/peek\r\n" * requests)
        protocol = await server.protocol_for(slow)
        transport: Any = protocol.transport

        def buffered() -> int:
            return pending(transport)

        def stalled() -> bool:
            return transport not in reactor.getReaders() and buffered() > 0

        await poll_until(stalled)
        self.assertLess(buffered(), 1024 * 1024)
        self.assertLess(server.service.counters.cmd_peek, requests)

        # Everybody else goes on.
        def others() -> None:
            self.assertTrue(client.set("other", b"fine", noreply=False))
            self.assertEqual(client.get("other"), b"fine")
            self.assertEqual(client.version(), __version__.encode())

        await deferToThread(others)
        self.assertTrue(stalled())

        reply = b"VALUE big/peek 0 %d\r\n%s\r\nEND\r\n" % (len(item), item)
        expected = first_reply + reply * requests
        got = await deferToThread(recv_exactly, slow, len(expected))
        assert_same_bytes(got, expected)
        self.assertEqual(server.service.counters.cmd_peek, requests)
        await deferToThread(slow.sendall, b"version\r\n")
        self.assertEqual(
            await deferToThread(recv_exactly, slow, len(__version__) + 10),
            b"VERSION %s\r\n" % __version__.encode(),
        )

    async def test_a_waiting_get_is_answered_in_order(self) -> None:
        """Requests pipelined behind a waiting get are answered after it."""
        expected = (
            b"VALUE later/t=10000 5 2\r\nhi\r\nEND\r\nVERSION %s\r\nEND\r\n"
            % __version__.encode()
        )
        sock = connect(self.port)
        self.addCleanup(sock.close)
        sock.sendall(b"get later/t=10000\r\nversion\r\nget later\r\n")
        reply = deferToThread(recv_exactly, sock, len(expected))
        await poll_until(lambda: self.server.service.counters.cmd_get > 0)
        await deferToThread(command, self.port, b"set later 5 0 2\r\nhi\r\n")
        self.assertEqual(await reply, expected)

    async def test_closed_connection_while_waiting_takes_nothing(self) -> None:
        """A client that goes away while it waits is forgotten at once."""
        sock = connect(self.port)
        self.addCleanup(sock.close)
        await deferToThread(sock.sendall, b"get gone/t=10000/open\r\n")
        await poll_until(lambda: self.server.service.counters.cmd_get > 0)
        protocol = await self.server.protocol_for(sock)
        sock.close()
        await protocol.lost
        await deferToThread(command, self.port, b"set gone 0 0 1\r\nx\r\n")
        reply = await deferToThread(command, self.port, b"get gone\r\n", b"END\r\n")
        self.assertEqual(reply, b"VALUE gone 0 1\r\nx\r\nEND\r\n")

    async def test_replies_are_not_held_back_by_nagle(self) -> None:
        """A reply that leaves in pieces (STORED after a shared fsync) must
        not wait for the client's delayed ACK of the piece before it."""
        sock = connect(self.port)
        self.addCleanup(sock.close)
        protocol = await self.server.protocol_for(sock)
        transport: Any = protocol.transport
        self.assertTrue(transport.getTcpNoDelay())


class AuthTests(EndToEndCase):
    def setUp(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as file:
            file.write(b"# users\nalice:s3cret\n")
        service = QueueService(Config(ServerSettings(auth_file=path)), reactor=reactor)
        self.server = start_server(self, service)
        self.port = self.server.port

    async def test_login_with_pymemcache_then_use_it(self) -> None:
        client = self.pymemcache(raw=True)
        stranger = self.pymemcache(raw=True)

        def talk() -> None:
            with self.assertRaises(MemcacheClientError) as refused:
                client.get("q")
            self.assertIn("unauthenticated", str(refused.exception))
            with self.assertRaises(MemcacheClientError) as failed:
                client.set("login", "alice wrong", noreply=False)
            self.assertIn("authentication failure", str(failed.exception))
            self.assertTrue(client.set("login", "alice s3cret", noreply=False))
            self.assertTrue(client.set("q", b"work", noreply=False))
            self.assertEqual(client.get("q"), b"work")
            self.assertIsNone(client.get("q"))
            with self.assertRaises(MemcacheClientError):
                stranger.set("q", b"intruder", noreply=False)
            with self.assertRaises(MemcacheClientError):
                stranger.stats()

        await deferToThread(talk)
        self.assertEqual(self.stat("auth_cmds"), "3")
        self.assertEqual(self.stat("auth_errors"), "2")
        self.assertEqual(self.stat("total_items"), "1")


def read_to_end(sock: Any) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    return bytes(received)


class ShutdownTests(TestCase):
    timeout = 30

    async def test_a_set_pipelined_before_shutdown_is_answered(self) -> None:
        """The reply of a durable set that shutdown follows in the same write
        reaches the client before the connection closes, and the item is in
        the journal."""
        data_dir = self.mktemp()
        stopped: list[Deferred[None]] = []
        service = QueueService(
            reactor=reactor,
            data_dir=data_dir,
            stop_server=lambda: stopped.append(service.stopService()),
        )
        server = start_server(self, service)

        def talk() -> bytes:
            with connect(server.port) as sock:
                sock.sendall(b"set q 0 0 1\r\na\r\nshutdown\r\n")
                return read_to_end(sock)

        self.assertEqual(await deferToThread(talk), b"STORED\r\n")
        await poll_until(lambda: bool(stopped))
        await stopped[0]
        again = QueueService(reactor=reactor, data_dir=data_dir)
        again.startService()
        self.addCleanup(again.stopService)
        queue = again.queue("q")
        assert queue is not None
        self.assertEqual(queue.items, 1)


class StatusTests(EndToEndCase):
    async def test_read_only_refuses_sets_and_consumers_drain(self) -> None:
        client = self.pymemcache(raw=True)

        def talk() -> None:
            self.assertTrue(client.set("q", b"one", noreply=False))
            self.assertTrue(client.set("q", b"two", noreply=False))
            self.assertEqual(command(self.port, b"status readonly\r\n"), b"END\r\n")
            with self.assertRaises(MemcacheServerError) as raised:
                client.set("q", b"three", noreply=False)
            self.assertIn("server is read-only", str(raised.exception))
            self.assertEqual(client.get("q"), b"one")
            self.assertEqual(client.get("q/open"), b"two")
            self.assertIsNone(client.get("q/close"))
            self.assertIsNone(client.get("q"))
            self.assertEqual(command(self.port, b"status\r\n"), b"READONLY\r\n")

        await deferToThread(talk)
        self.assertEqual(self.stat("curr_items"), "0")
        self.assertEqual(self.stat("server_status"), "READONLY")

    async def test_quiescent_answers_a_waiting_get(self) -> None:
        waiter = self.pymemcache(raw=True)
        counters = self.server.service.counters
        gets_before = counters.cmd_get
        # Longer than the client waits for a reply: only the status ends it.
        waiting = deferToThread(waiter.get, "q/t=600000")
        await poll_until(lambda: counters.cmd_get > gets_before)
        reply = await deferToThread(command, self.port, b"status quiescent\r\n")
        self.assertEqual(reply, b"END\r\n")
        self.assertIsNone(await waiting)


class RepliesAtOnceTests(TestCase):
    """A lock-step client's durable sets, answered by the journal the moment
    each is durable, from C (see ``Durable.direct`` in ``erq.durable``)."""

    timeout = 30

    def setUp(self) -> None:
        if engine_module.Engine is None:
            raise SkipTest("the erq.journal._engine extension is not built here")
        # Once the server is stopped (cleanups run last first).
        self.addCleanup(self.writer_stopped)
        self.server = start_server(
            self, data_dir=os.path.abspath(self.mktemp()), reactor=reactor
        )

    def writer_stopped(self) -> Deferred[None] | None:
        """Its journals' writer, if one started, stopped: the engine's
        eventfd leaves the reactor."""
        writer = self.server.service.writer
        return None if writer is None else writer.stop()

    def replied(self) -> tuple[int, int]:
        """Lone durable writes the reactor ran, and replies they sent."""
        writer = self.server.service.writer
        assert writer is not None
        engine = writer._dispatch.engine
        assert engine is not None
        return engine.inline, engine.replied

    async def test_lock_step_durable_sets(self) -> None:
        self.assertEqual(self.server.service.config.defaults.sync_journal, "always")
        client = PymemcacheClient(
            (LOCALHOST, self.server.port), timeout=CLIENT_TIMEOUT, serde=None
        )
        self.addCleanup(client.close)
        counters = self.server.service.counters

        def store() -> list[bool]:
            return [client.set("q", b"%d" % i, noreply=False) for i in range(20)]

        self.assertEqual(await deferToThread(store), [True] * 20)
        inline, replied = self.replied()
        # The first set opens the queue's file on the Python loop; the
        # others are each a lone durable write, whose reply left with it.
        self.assertGreater(inline, 10)
        self.assertEqual(replied, inline)
        self.assertEqual(counters.bytes_written, 20 * len(b"STORED\r\n"))
        got = await deferToThread(lambda: [client.get("q") for _ in range(20)])
        self.assertEqual(got, [b"%d" % i for i in range(20)])

    async def test_sets_on_two_queues_at_once(self) -> None:
        """Two queues' sets read in one turn go to the engine's thread as
        one batch; their replies leave from C as the reactor takes it back
        (see "Replies of batches taken back" in ``erq.journal.engine``)."""
        names = (b"a", b"b")
        socks = []
        for name in names:
            sock = await deferToThread(connect, self.server.port)
            self.addCleanup(sock.close)
            # The first set opens the queue's file: not the engine's work.
            sock.sendall(b"set %s 0 0 1\r\n0\r\n" % name)
            self.assertEqual(await deferToThread(recv_exactly, sock, 8), b"STORED\r\n")
            socks.append(sock)
        writer = self.server.service.writer
        assert writer is not None
        engine = writer._dispatch.engine
        assert engine is not None
        before = (engine.count, engine.inline, engine.replied_back)
        # Sent on the reactor's own thread: the server reads both sets in
        # its next turn.
        for name, sock in zip(names, socks, strict=True):
            sock.sendall(b"set %s 0 0 1\r\n1\r\n" % name)
        for sock in socks:
            self.assertEqual(await deferToThread(recv_exactly, sock, 8), b"STORED\r\n")
        after = (engine.count, engine.inline, engine.replied_back)
        # One batch, on the thread, both replies sent as it came back.
        self.assertEqual([b - a for a, b in zip(before, after, strict=True)], [1, 0, 2])
        self.assertEqual(self.server.service.counters.bytes_written, 4 * 8)
        for name in names:
            for data in (b"0", b"1"):
                reply = await deferToThread(
                    command, self.server.port, b"get %s\r\n" % name, b"END\r\n"
                )
                self.assertEqual(reply, b"VALUE %s 0 1\r\n%s\r\nEND\r\n" % (name, data))

    async def test_behind_another_reply_in_order(self) -> None:
        def talk() -> bytes:
            with connect(self.server.port) as sock:
                sock.sendall(b"set q 0 0 1\r\na\r\n")
                first = recv_exactly(sock, 8)
                # A get's reply, then the set's, from one read.
                sock.sendall(b"get other\r\nset q 0 0 1\r\nb\r\n")
                return first + recv_exactly(sock, 13)

        self.assertEqual(await deferToThread(talk), b"STORED\r\nEND\r\nSTORED\r\n")

    async def test_only_while_nothing_waits_in_the_transport(self) -> None:
        def open_connection() -> socket.socket:
            sock = connect(self.server.port)
            sock.sendall(b"version\r\n")
            recv_until(sock, b"\r\n")
            return sock

        sock = await deferToThread(open_connection)
        self.addCleanup(sock.close)
        (protocol,) = self.server.factory.protocols
        transport: Any = protocol.transport
        self.assertEqual(protocol.fileno_now(), transport.getHandle().fileno())
        transport.write(b"queued\r\n")
        self.assertEqual((pending(transport), protocol.fileno_now()), (8, -1))
        await poll_until(lambda: not pending(transport))
        self.assertEqual(protocol.fileno_now(), transport.getHandle().fileno())
        protocol.disconnect()
        self.assertEqual(protocol.fileno_now(), -1)
