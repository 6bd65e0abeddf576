"""Helpers shared by the tests, in one place: fakes for unit tests (a clock
that takes calls from threads, thread pools, file operations, a journal), the
protocol driven over a StringTransport, configuration files, a real server
on a loopback port with raw and memcache clients, a server journaling to
real files, and twistd run in a process.  Test modules import from here
only, never from one another."""

from __future__ import annotations

import hashlib
import os
import select
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from textwrap import dedent
from typing import Any, Literal, cast

import memcache
from pymemcache.client.base import Client as PymemcacheClient
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IAddress,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.internet.threads import deferToThread
from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from erq import __version__
from erq import journal as journal_module
from erq.config import (
    Config,
    QueueSettings,
    ServerSettings,
    SyncPolicy,
)
from erq.durable import Durable
from erq.journal import (
    FileOps,
    Journal,
    JournalWriter,
)
from erq.protocol import QueueFactory, QueueProtocol
from erq.queue import Item, Queue
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


# -- fakes for unit tests: a reactor, thread pools, file operations --------------


class FakeReactor(Clock):
    """A clock that also takes calls "from a thread" (run at once)."""

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)


class ThreadCallsReactor(Clock):
    """A clock whose calls from the writer thread wait, in order, until the
    test runs them (as the real reactor runs them in a later turn)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_thread: deque[tuple[Callable[..., object], tuple[object, ...]]] = (
            deque()
        )

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.from_thread.append((f, args))

    def run_calls(self) -> int:
        ran = 0
        while self.from_thread:
            f, args = self.from_thread.popleft()
            f(*args)
            ran += 1
        return ran


def run_reporting(
    onResult: Callable[[bool, object], object],
    func: Callable[..., object],
    *args: object,
) -> None:
    """Run ``func(*args)`` and tell ``onResult`` how it went, as a thread
    pool's ``callInThreadWithCallback`` does."""
    try:
        result: object = func(*args)
    except Exception:
        onResult(False, Failure())
    else:
        onResult(True, result)


class SyncPool:
    """A thread pool that runs the work at once, on the calling thread."""

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: object,
    ) -> None:
        run_reporting(onResult, func, *args)


class ManualPool:
    """A thread pool whose work runs only when the test says so."""

    def __init__(self) -> None:
        self.work: deque[Callable[[], None]] = deque()

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: object,
    ) -> None:
        self.work.append(lambda: run_reporting(onResult, func, *args))

    def run_one(self) -> None:
        self.work.popleft()()

    def run_next(self) -> bool:
        """Run the next job if there is one; whether there was."""
        if not self.work:
            return False
        self.run_one()
        return True

    def run_all(self) -> None:
        while self.work:
            self.run_one()


class HandWrittenService:
    """A started service that journals into a scratch directory of
    ``test``'s through a writer whose thread is a `ManualPool`: nothing is
    written until the test runs the pool.  Stopped when the test ends."""

    def __init__(self, test: SynchronousTestCase, sync: SyncPolicy) -> None:
        self.clock = FakeReactor()
        self.pool = ManualPool()
        self.service = QueueService(
            reactor=self.clock, data_dir=os.path.abspath(test.mktemp())
        )
        self.service.config = self.service.config.with_overrides(sync_journal=sync)
        self.writer = JournalWriter(self.clock, self.pool)  # type: ignore[arg-type]
        self.service.writer = self.writer
        self.service.startService()
        test.addCleanup(self.stop)

    def stop(self) -> None:
        self.service.stopService()
        self.writer.stop()
        self.clock.advance(0)
        self.pool.run_all()


def close_writer(writer: JournalWriter, pool: object) -> None:
    """Stop a writer whose thread is a test's pool, and close its files."""
    writer.stop()
    if isinstance(pool, ManualPool):
        pool.run_all()


class CountingOps(FileOps):
    """Counts syncs and writes; fails writes or syncs on demand."""

    def __init__(self) -> None:
        self.syncs = 0
        self.writes = 0
        self.fail_writes: int | None = None
        self.fail_syncs: int | None = None
        self.partial = False

    def write(self, fd: int, data: bytes) -> None:
        if self.fail_writes is not None:
            if self.partial:
                # Half the bytes reach the file before the disk fills up.
                super().write(fd, data[: len(data) // 2])
            raise OSError(self.fail_writes, os.strerror(self.fail_writes))
        self.writes += 1
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fail_syncs is not None:
            raise OSError(self.fail_syncs, os.strerror(self.fail_syncs))
        self.syncs += 1
        super().fsync(fd)


class GatedOps(CountingOps):
    """Writes wait for ``gate`` (on the writer thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def write(self, fd: int, data: bytes) -> None:
        self.gate.wait(60)
        super().write(fd, data)


def item(i: int, size: int = 10, expiry: float | None = None) -> Item:
    data = (b"%d:" % i + b"x" * size)[:size]
    return Item(i, data, i * 7 % 65536, expiry, 1700000000.25 + i)


def ids(items: list[Item]) -> list[int]:
    return [it.id for it in items]


def segment_files(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".seg"))


class JournalTestCase(TestCase):
    """A journal test: a scratch directory, writers, and a replay of it."""

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())

    def fake_writer(
        self, pool: object | None = None, ops: FileOps | None = None
    ) -> JournalWriter:
        self.clock = FakeReactor()
        pool = pool if pool is not None else SyncPool()
        writer = JournalWriter(self.clock, pool, file_ops=ops)  # type: ignore[arg-type]
        # Its files are closed when the test ends, however it left them.
        self.addCleanup(close_writer, writer, pool)
        return writer

    def real_writer(self, ops: FileOps | None = None) -> JournalWriter:
        writer = JournalWriter(reactor, file_ops=ops)
        writer.start()
        self.addCleanup(writer.stop)
        return writer

    def replay(
        self, max_memory: int = 1 << 30, segment_size: int = 16 << 20
    ) -> tuple[Journal, journal_module.Replayed]:
        writer = self.fake_writer()
        journal = Journal(self.dir, writer, sync="never", segment_size=segment_size)
        return journal, journal.replay(max_memory)


class FakeJournal:
    """A queue's journal that records what the queue tells it, as ``(call,
    item id)`` pairs.

    With ``durable``, ``add`` returns a Deferred that the test fires (kept
    in ``pending``), and ``add_many`` one Deferred for the whole run, as a
    real journal writes a run at once.  Items added with ``in_memory=False``
    are kept to be read back by ``read_behind``, whose Deferreds the test
    fires with ``read_back``; a ``read_behind`` before anything was ever
    added behind fails the test.
    """

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.calls: list[tuple[str, int]] = []
        self.pending: list[Durable] = []
        self.behind: list[Item] = []
        self.reads: list[tuple[int, Deferred[list[Item]]]] = []

    def _record_add(self, item: Item, in_memory: bool) -> None:
        self.calls.append(("add" if in_memory else "add_behind", item.id))
        if not in_memory:
            self.behind.append(item)

    def _durable(self) -> Deferred[None] | None:
        if not self.durable:
            return None
        # As a real journal's: its replies may go before its callbacks.
        durable = Durable()
        self.pending.append(durable)
        return durable

    def add(self, item: Item, in_memory: bool = True) -> Deferred[None] | None:
        self._record_add(item, in_memory)
        return self._durable()

    def remove(self, item: Item) -> None:
        self.calls.append(("remove", item.id))

    def add_many(
        self, items: list[Item], in_memory: list[bool]
    ) -> Deferred[None] | None:
        for item, held in zip(items, in_memory, strict=True):
            self._record_add(item, held)
        return self._durable()

    def remove_many(self, items: list[Item]) -> None:
        for item in items:
            self.remove(item)

    def open(self, item: Item) -> None:
        self.calls.append(("open", item.id))

    def abort(self, item: Item) -> None:
        self.calls.append(("abort", item.id))

    def flush(self) -> None:
        self.calls.append(("flush", 0))

    def read_behind(self, max_bytes: int) -> Deferred[list[Item]]:
        if not any(call == "add_behind" for call, _ in self.calls):
            raise AssertionError("nothing was ever behind")
        reading: Deferred[list[Item]] = Deferred()
        self.reads.append((max_bytes, reading))
        return reading

    size = 0
    sync: SyncPolicy = "always"

    def erase(self) -> Deferred[None]:
        return succeed(None)

    def read_back(self, count: int) -> None:
        """Fire the oldest pending read with the next ``count`` items."""
        _, reading = self.reads.pop(0)
        items, self.behind = self.behind[:count], self.behind[count:]
        reading.callback(items)


# -- the protocol over a StringTransport, on a fake clock ------------------------


#: Where test clients connect from, unless a test says otherwise.
LOOPBACK_PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class RecordingTransport(StringTransportWithDisconnection):
    """Records each write, and can ask its producer to pause after writing."""

    def __init__(self, peer: IAddress = LOOPBACK_PEER) -> None:
        super().__init__(peerAddress=peer)
        self.writes: list[bytes] = []
        self.pause_after_write = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)
        if self.pause_after_write and self.producer is not None:
            self.producer.pauseProducing()


class Client:
    """One connection to the server under test."""

    def __init__(self, factory: QueueFactory, peer: IAddress = LOOPBACK_PEER) -> None:
        self.protocol: QueueProtocol = factory.buildProtocol(None)
        self.transport = RecordingTransport(peer)
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        """What the server wrote since the last ``take``."""
        value = self.transport.value()
        self.transport.clear()
        return value

    def ask(self, data: bytes) -> bytes:
        self.send(data)
        return self.take()

    @property
    def closed(self) -> bool:
        return not self.transport.connected

    def close(self) -> None:
        self.transport.loseConnection()


def value(key: bytes, data: bytes, flags: int = 0) -> bytes:
    return b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(data), data)


def set_line(name: bytes, data: bytes, flags: int = 0, exptime: int = 0) -> bytes:
    return b"set %s %d %d %d\r\n%s\r\n" % (name, flags, exptime, len(data), data)


class ProtocolTestCase(SynchronousTestCase):
    """A service on a fake clock, and a first client connected to it."""

    allow_shutdown: bool | Literal["any"] = True
    defaults: QueueSettings | None = None
    max_item_cap = 64 * 1024 * 1024
    #: The text of an auth file, if the server has one.
    users: bytes | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.stops: list[None] = []
        self.auth_file = None
        if self.users is not None:
            self.auth_file = self.mktemp()
            with open(self.auth_file, "wb") as file:
                file.write(self.users)
        config = Config(
            ServerSettings(
                max_item_cap=self.max_item_cap,
                allow_shutdown=self.allow_shutdown,
                auth_file=self.auth_file,
            ),
            self.defaults or QueueSettings(),
        )
        self.service = QueueService(
            config, reactor=self.clock, stop_server=lambda: self.stops.append(None)
        )
        self.factory = QueueFactory(self.service)
        self.client = self.connect()

    def connect(self, peer: IAddress = LOOPBACK_PEER) -> Client:
        return Client(self.factory, peer)

    def ask(self, data: bytes) -> bytes:
        return self.client.ask(data)

    def stats(self, client: Client | None = None) -> dict[str, str]:
        reply = (client or self.connect()).ask(b"stats\r\n")
        self.assertTrue(reply.endswith(b"\r\nEND\r\n"), reply)
        result: dict[str, str] = {}
        for line in reply.split(b"\r\n")[:-2]:
            word, name, stat = line.decode().split(" ", 2)
            self.assertEqual(word, "STAT")
            self.assertNotIn(name, result)
            result[name] = stat
        return result

    def queue_stat(self, queue: str, name: str) -> int:
        return int(self.stats()[f"queue_{queue}_{name}"])

    def queue(self, name: str) -> Queue:
        queue = self.service.queue(name)
        assert queue is not None
        return queue


# -- configuration files ---------------------------------------------------------


def toml(text: str) -> str:
    """A TOML document written indented in a test."""
    return dedent(text).lstrip("\n")


#: The repository: where the sample erq.toml and README.rst are.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SAMPLE = os.path.join(REPOSITORY, "erq.toml")


def write(path: str, text: str) -> None:
    """Write a configuration file, its text as a test writes it indented."""
    with open(path, "w", encoding="utf-8") as file:
        file.write(toml(text))


# -- real memcache clients -------------------------------------------------------


class FlagsSerde:
    """Values go out as ``(data, flags)`` and come back the same way, so
    that the flags the server keeps are visible."""

    def serialize(self, key: str, value: tuple[bytes, int]) -> tuple[bytes, int]:
        return value

    def deserialize(self, key: str, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


class EndToEndCase(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.server: Server = start_server(self)
        self.port = self.server.port

    def pymemcache(self, raw: bool = False) -> PymemcacheClient:
        """A pymemcache client, closed after the test; ``raw`` keeps plain
        bytes values, otherwise values are ``(data, flags)``."""
        client = PymemcacheClient(
            (LOCALHOST, self.port),
            timeout=CLIENT_TIMEOUT,
            connect_timeout=CLIENT_TIMEOUT,
            serde=None if raw else FlagsSerde(),
        )
        self.addCleanup(client.close)
        return client

    def python_memcached(self) -> Any:
        client = memcache.Client(
            [f"{LOCALHOST}:{self.port}"], socket_timeout=CLIENT_TIMEOUT
        )
        self.addCleanup(client.disconnect_all)
        return client

    def stat(self, name: str) -> str:
        return str(dict(self.server.service.stats()).get(name, "absent"))


# -- twistd in a process ---------------------------------------------------------


#: Longest a twistd process may take to start, or to stop once told to, and
#: longest any one wait on the journal thread may take.
DEADLINE = 20.0


def twistd_command() -> list[str]:
    """The twistd installed next to this Python, or the same by module."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def temporary_directory(case: SynchronousTestCase) -> str:
    """A directory for one test, outside the source tree, removed after."""
    directory = tempfile.mkdtemp(prefix="erq-test-")
    case.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory


class TwistdProcess(ProcessProtocol):
    """A running twistd: its output, and its exit code once it ends."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended = False
        self.exit_code: int | None = None
        self._waiting: list[Deferred[int | None]] = []

    def wait(self) -> Deferred[int | None]:
        """Fires with the exit code (``None`` for a signal) once it ends."""
        if self.ended:
            return succeed(self.exit_code)
        waiting: Deferred[int | None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        error = reason.value
        assert isinstance(error, ProcessDone | ProcessTerminated)
        self.ended = True
        self.exit_code = error.exitCode
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.callback(error.exitCode)


class TwistdCase(TestCase):
    """Runs ``twistd -n erq`` in a scratch directory, one process a test."""

    timeout = 60

    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.log_file = os.path.join(self.directory, "twistd.log")

    def spawn(
        self, port: str, *options: str, directory: str | None = None
    ) -> TwistdProcess:
        """Start ``twistd -n erq`` listening on ``port``, with more erq
        ``options``; it is killed if it still runs when the test ends.  It
        runs in the test's directory, or in ``directory``, where it then
        logs too."""
        process = TwistdProcess()
        arguments = twistd_command() + [
            "-n",
            "--pidfile=",
            "-l",
            self.log_file if directory is None else "twistd.log",
            "erq",
            "--port",
            port,
            "--data-dir",
            os.path.join(self.directory, "queues"),
            *options,
        ]
        transport = reactor.spawnProcess(
            process,
            arguments[0],
            arguments,
            env=dict(os.environ),
            path=self.directory if directory is None else directory,
        )

        def kill() -> Deferred[int | None] | None:
            if process.ended:
                return None
            transport.signalProcess("KILL")
            return process.wait()

        self.addCleanup(kill)
        return process

    def log(self, process: TwistdProcess) -> str:
        text = process.output.decode("utf-8", "replace")
        if os.path.exists(self.log_file):
            with open(self.log_file, encoding="utf-8", errors="replace") as log:
                text += log.read()
        return text

    async def exit_code(self, process: TwistdProcess) -> int | None:
        """Wait, at most ``DEADLINE`` seconds, for the process to end."""
        return await process.wait().addTimeout(DEADLINE, reactor)

    async def wait_until_serving(self, process: TwistdProcess, port: int) -> None:
        """Poll the port until the server answers ``version``."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                reply = await deferToThread(command, port, b"version\r\n")
            except OSError:
                if process.ended:
                    self.fail(f"twistd ended early:\n{self.log(process)}")
                if time.monotonic() > deadline:
                    self.fail(f"twistd not serving after {DEADLINE} s")
                await deferLater(reactor, 0.05, lambda: None)
            else:
                self.assertEqual(reply, b"VERSION %s\r\n" % __version__.encode())
                return

    def pid(self, process: TwistdProcess) -> int:
        transport = process.transport
        assert transport is not None
        pid = transport.pid
        assert pid is not None
        return pid


# -- a server journaling to real files, and a pipelining client ------------------


def set_request(queue: str, data: bytes, flags: int = 0, exptime: int = 0) -> bytes:
    head = b"set %s %d %d %d\r\n" % (queue.encode(), flags, exptime, len(data))
    return head + data + b"\r\n"


class SocketClient:
    """A raw connection that pipelines requests and parses the replies."""

    def __init__(self, port: int) -> None:
        self.sock = connect(port)
        self._buffer = bytearray()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"closed; left: {bytes(self._buffer[-200:])!r}")
        self._buffer += chunk

    def line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            self._fill()

    def exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def value(self) -> tuple[int, bytes] | None:
        """The reply to a one-key get: (flags, data), or None for END."""
        line = self.line()
        if line == b"END":
            return None
        word, _, flags, size = line.split()
        assert word == b"VALUE", line
        data = self.exactly(int(size) + 2)
        assert data[-2:] == b"\r\n"
        end = self.line()
        assert end == b"END", end
        return int(flags), data[:-2]

    def call(self, request: bytes) -> bytes:
        """Send one request whose reply is one line; that line."""
        self.send(request)
        return self.line()

    def store(
        self,
        queue: str,
        items: list[bytes] | list[tuple[bytes, int, int]],
        chunk: int = 500,
    ) -> list[bytes]:
        """Set every item (data, or (data, flags, exptime)), pipelined a
        chunk at a time; the reply lines."""
        replies: list[bytes] = []
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            requests = [
                set_request(queue, *entry)
                if isinstance(entry, tuple)
                else set_request(queue, entry)
                for entry in part
            ]
            self.send(b"".join(requests))
            replies.extend(self.line() for _ in part)
        return replies

    def take(
        self, key: str, count: int, chunk: int = 500
    ) -> list[tuple[int, bytes] | None]:
        """``count`` gets of ``key``, pipelined a chunk at a time."""
        got: list[tuple[int, bytes] | None] = []
        request = b"get %s\r\n" % key.encode()
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            self.send(request * size)
            got.extend(self.value() for _ in range(size))
        return got

    def drain(self, key: str, limit: int = 1_000_000) -> list[bytes]:
        """Every item of the queue, by plain gets, until END."""
        got: list[bytes] = []
        while len(got) < limit:
            batch = self.take(key, 200, 200)
            for value in batch:
                if value is None:
                    return got
                got.append(value[1])
        raise AssertionError(f"more than {limit} items in {key}")

    def stats(self) -> dict[str, str]:
        self.send(b"stats\r\n")
        stats: dict[str, str] = {}
        while (line := self.line()) != b"END":
            _, name, value = line.decode().split(" ", 2)
            stats[name] = value
        return stats

    def nothing_yet(self) -> bool:
        """Whether no reply byte has arrived yet (without waiting)."""
        if self._buffer:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable


def payload(i: int, size: int) -> bytes:
    """Item ``i``'s bytes: unique, binary (``\\r\\n`` included), ``size`` long."""
    block = b"%d\r\n" % i + hashlib.blake2b(i.to_bytes(8, "little")).digest()
    return (block * (size // len(block) + 1))[:size]


class DurabilityCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.data_dir = os.path.abspath(self.mktemp())
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def serve(
        self,
        config: Config | None = None,
        writer: JournalWriter | None = None,
        service: QueueService | None = None,
        **options: Any,
    ) -> Server:
        """A server journaling in ``self.data_dir``; stopped, and its
        journal thread finished, when the test ends."""
        if service is None:
            service = QueueService(
                config, reactor=reactor, data_dir=self.data_dir, **options
            )
        if writer is not None:
            service.writer = writer
        # Runs after start_server's cleanup, which does not wait for it.
        self.addCleanup(self._finished, service)
        return start_server(self, service)

    async def _finished(self, service: QueueService) -> None:
        await service.stopService()
        if service.writer is not None:
            await service.writer.stop()

    async def restart(self, server: Server, **options: Any) -> Server:
        """Stop the server cleanly and start a new one on the same data."""
        await server.service.stopService()
        return self.serve(**options)

    def client(self, server: Server) -> SocketClient:
        client = SocketClient(server.port)
        self.addCleanup(client.close)
        return client

    def logged(self, level: LogLevel | None = None) -> list[str]:
        return [
            formatEvent(event) or ""
            for event in self.events
            if level is None or event.get("log_level") == level
        ]


async def take(service: QueueService, name: str) -> Item | None:
    """A plain get through the service, waiting while the queue reads its
    items back from the journal."""
    result = service.get(name, None, False, False)
    if isinstance(result, Deferred):
        return await result.addTimeout(DEADLINE, reactor)
    return result


# -- the admin HTTP server ------------------------------------------------------


class AdminServer:
    """A server as twistd starts it (``erq.tap.makeService``) with
    ``--admin-port 0``, on the test's reactor: queues on a loopback port,
    the admin server on another."""

    def __init__(self, case: TestCase, *arguments: str) -> None:
        from erq.admin import AdminService
        from erq.tap import Options, makeService

        options = Options()
        options.parseOptions(["--port", "0", "--admin-port", "0", *arguments])
        self.top = makeService(options, reactor)
        self.queues = cast(QueueService, self.top.getServiceNamed("erq"))
        self.admin = cast(AdminService, self.top.getServiceNamed("erq-admin"))
        self.top.privilegedStartService()
        self.top.startService()
        case.addCleanup(self.stop)

    def stop(self) -> Deferred[None] | None:
        """Stop the server (once: a test may stop it before its end)."""
        if not self.top.running:
            return None
        return cast("Deferred[None] | None", self.top.stopService())

    @property
    def admin_port(self) -> int:
        port = cast(Any, self.admin).listening.port
        assert port is not None
        number: int = port.getHost().port
        return number

    def url(self, path: str = "/") -> str:
        return f"http://{LOCALHOST}:{self.admin_port}{path}"


class HTTPResponse:
    """What an HTTP request got: the status code, the headers, the body."""

    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return None if not values else str(values[0])


async def http_request(
    url: str,
    method: bytes = b"GET",
    headers: dict[bytes, list[bytes]] | None = None,
) -> HTTPResponse:
    """One request with Twisted's own client, on the test's reactor."""
    from twisted.internet.protocol import Protocol
    from twisted.web.client import Agent, ResponseDone
    from twisted.web.http_headers import Headers

    class Body(Protocol):
        def __init__(self) -> None:
            self.data = bytearray()
            self.done: Deferred[bytes] = Deferred()

        def dataReceived(self, data: bytes) -> None:
            self.data += data

        def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
            if reason.check(ResponseDone):
                self.done.callback(bytes(self.data))
            else:
                self.done.errback(reason)

    agent = Agent(reactor, connectTimeout=CLIENT_TIMEOUT)
    response = await agent.request(method, url.encode(), Headers(headers or {}))
    body = Body()
    response.deliverBody(body)
    data = await body.done.addTimeout(CLIENT_TIMEOUT, reactor)
    return HTTPResponse(response.code, response.headers, data)


def basic_auth(user: str, password: str) -> dict[bytes, list[bytes]]:
    import base64

    token = base64.b64encode(f"{user}:{password}".encode())
    return {b"authorization": [b"Basic " + token]}


#: Debian's name for it, then others'.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """A headless-capable Chromium on this machine, if there is one."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def require_browser() -> str:
    """Chromium's path; the test is skipped without it, unless
    ``ERQ_REQUIRE_BROWSER`` is set (CI sets it once it has one), when the
    test fails instead."""
    from twisted.trial.unittest import SkipTest

    path = chromium_path()
    if path is not None:
        return path
    if os.environ.get("ERQ_REQUIRE_BROWSER", "0") not in ("", "0"):
        raise AssertionError("ERQ_REQUIRE_BROWSER is set, and no chromium is found")
    raise SkipTest("no chromium here (apt-get install chromium)")


async def run_browser(
    case: SynchronousTestCase, *arguments: str, timeout: float = 60.0
) -> tuple[bytes, bytes]:
    """Headless Chromium run with ``arguments`` in a process (the reactor
    serves the page meanwhile): its output and its errors."""
    from twisted.internet.utils import getProcessOutputAndValue

    path = require_browser()
    profile = temporary_directory(case)
    command = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    running = getProcessOutputAndValue(
        path, command, env={**os.environ, "HOME": profile}, reactor=reactor
    )
    out, err, code = await running.addTimeout(timeout, reactor)
    if code != 0:
        raise AssertionError(f"chromium exited {code}: {err[-2000:]!r}")
    return out, err
