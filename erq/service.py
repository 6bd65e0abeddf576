"""The queue server's service: names to queues, stats and lifecycle."""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, cast

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from erq import __version__
from erq.config import (
    Config,
    ConfigError,
    MiB,
    QueueSettings,
    fanout_parent,
    load_config,
)
from erq.datadir import DataDirLock, lock_data_dir
from erq.journal import LINGER, Journal, JournalWriter, list_queue_dirs, queue_dir
from erq.queue import Item, Queue

if TYPE_CHECKING:
    from erq.protocol import QueueProtocol

#: Most expired items one sweep drops, so that a sweep never stalls requests.
SWEEP_BUDGET = 10_000

#: Bytes of a journal segment file before the next one starts.
SEGMENT_SIZE = 16 * MiB

#: exptime values above this are absolute Unix times, as in memcached.
ABSOLUTE_EXPTIME = 1_000_000

#: Seconds between two log lines of one kind about clients' mistakes.
LOG_INTERVAL = 1.0

#: Seconds a stopping server waits, once its journals are written, for its
#: connections to send the replies they still owe; then it cuts them off.
SHUTDOWN_GRACE = 5.0


class Counters:
    """Server-wide counters, bumped by the protocol and the service."""

    __slots__ = (
        "total_connections",
        "cmd_get",
        "cmd_set",
        "cmd_peek",
        "get_hits",
        "get_misses",
        "bytes_read",
        "bytes_written",
        "queue_creates",
        "queue_deletes",
        "queue_expires",
        "auth_cmds",
        "auth_errors",
        "client_errors",
        "rejected_connections",
    )

    def __init__(self) -> None:
        self.total_connections = 0
        self.auth_cmds = 0
        self.auth_errors = 0
        self.client_errors = 0
        self.rejected_connections = 0
        self.cmd_get = 0
        self.cmd_set = 0
        self.cmd_peek = 0
        self.get_hits = 0
        self.get_misses = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.queue_creates = 0
        self.queue_deletes = 0
        self.queue_expires = 0


SERVER_STATS = (
    "uptime",
    "time",
    "version",
    "curr_items",
    "total_items",
    "bytes",
    "curr_connections",
    # The rest are counted as they happen:
    *Counters.__slots__,
)

QUEUE_STATS = (
    "items",
    "bytes",
    "total_items",
    "logsize",
    "expired_items",
    "mem_items",
    "mem_bytes",
    "age",
    "discarded",
    "waiters",
    "open_transactions",
    "transactions",
    "canceled_transactions",
    "total_flushes",
)


class NoConfigurationFile(ConfigError):
    """A reload of a server started without a configuration file: nothing
    is read, so nothing may be said to be reloaded."""

    def __init__(self) -> None:
        super().__init__("no configuration file")
        self.args = (self.reason,)


class QueueService(Service):
    """Holds every queue by name and runs them.

    Compose it into any Twisted application together with a listening port
    for ``QueueFactory(service)``; ``erq.tap.makeService`` does that for
    twistd.
    """

    name = "erq"

    def __init__(
        self,
        config: Config | None = None,
        *,
        clock: IReactorTime | None = None,
        stop_server: Callable[[], object] | None = None,
        data_dir: str | None = None,
        config_path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        segment_size: int | None = None,
    ) -> None:
        """``config`` holds every setting (the defaults when ``None``).

        ``config_path`` is the file that ``reload`` reads again, with the
        command line's ``overrides`` (``Config.with_overrides`` keywords)
        applied on top each time.  ``stop_server`` is what ``shutdown`` calls
        (by default the reactor's ``stop``).  Without ``data_dir`` queues
        live in memory only; with it each is journaled in a directory there,
        in segment files of ``segment_size`` bytes (`SEGMENT_SIZE`).
        """
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        self.clock = clock
        self.config = config if config is not None else Config()
        self.config_path = config_path
        self.data_dir = data_dir
        self.writer: JournalWriter | None = None
        self._lock: DataDirLock | None = None
        self.segment_size = SEGMENT_SIZE if segment_size is None else segment_size
        self._replayed = False
        self.overrides = dict(overrides or {})
        self._stop_server = stop_server
        self._sweeper: LoopingCall | None = None
        self.queues: dict[str, Queue] = {}
        # Queues nobody has set to yet but somebody waits on.
        self._unborn: dict[str, Queue] = {}
        # Fanout: each parent's children, ``parent+<anything>``.
        self._children: dict[str, set[str]] = {}
        self.connections: set[QueueProtocol] = set()
        # Connections that a stop waits to see closed, and what it waits on.
        self._closing: list[tuple[set[QueueProtocol], Deferred[None]]] = []
        self.counters = Counters()
        self.started_at = clock.seconds()
        self.shutting_down = False
        self.log = Logger()
        # Each kind of log line limited to one a LOG_INTERVAL: when the last
        # was logged, and how many were not since.
        self._limited: dict[str, tuple[float, int]] = {}

    # -- lifecycle -------------------------------------------------------

    def privilegedStartService(self) -> None:
        """twistd starts every service this way first, in order: replaying
        here means that a port started after this one listens only once the
        queues are back, so a client is refused rather than left waiting
        (and its plain get answered to nobody when it gives up).  The
        writer's thread starts later, in ``startService``: a port that
        cannot be bound must still end the process."""
        self.hold_data_dir()
        super().privilegedStartService()
        self._replay_journals()

    def startService(self) -> None:
        self.hold_data_dir()
        self.shutting_down = False
        self.started_at = self.clock.seconds()
        super().startService()
        self._replay_journals()
        if self.writer is not None:
            self.writer.start()
        self._create_configured()
        self._start_sweeper()

    def hold_data_dir(self, path: str | None = None) -> None:
        """Hold the data directory (see ``erq.datadir``) before anything
        reads it; raises `DataDirectoryInUse`, with nothing started, when
        another server holds it.  ``path`` names the data directory as seen
        from here, where the process will change directories before the
        service starts (twistd's ``--rundir``)."""
        if self.data_dir is not None and self._lock is None:
            self._lock = lock_data_dir(path if path is not None else self.data_dir)

    def _unlock_data_dir(self, result: object = None) -> object:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
        return result

    def _replay_journals(self) -> None:
        if self.data_dir is None or self._replayed:
            return
        if self.writer is None:
            from twisted.internet import reactor

            self.writer = JournalWriter(cast(Any, reactor), linger=LINGER)
        self._replay(self.data_dir)

    def _start_sweeper(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(self.config.server.expiry_sweep, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        self.shutting_down = True
        closing = set(self.connections)
        for connection in closing:
            connection.disconnect()
        written = succeed(None) if self.writer is None else self.writer.stop()
        # Another server may have the directory once every file is closed.
        written.addBoth(self._unlock_data_dir)
        # The last journal write answers the durable sets still waiting; the
        # reactor must not stop (and drop every connection) before their
        # replies have left.
        return written.addCallback(lambda _: self._closed(closing))

    def _closed(self, closing: set[QueueProtocol]) -> Deferred[None]:
        """Fires once these connections have closed, or have been cut off
        `SHUTDOWN_GRACE` seconds from now.  (Those made after a stop, by a
        start before it was done, are not waited for.)"""
        closing &= self.connections
        if not closing:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closing.append((closing, closed))
        cut_off = self.clock.callLater(SHUTDOWN_GRACE, self._cut_off, closing)
        closed.addBoth(lambda result: cut_off.cancel() if cut_off.active() else None)
        return closed

    def _cut_off(self, closing: set[QueueProtocol]) -> None:
        self.log.warn(
            "Cutting off {count} connections that did not take their replies"
            " within {grace} s of stopping",
            count=len(closing),
            grace=SHUTDOWN_GRACE,
        )
        for connection in list(closing):
            connection.abort()
            self.connection_lost(connection)

    def _replay(self, data_dir: str) -> None:
        """Bring back every queue journaled under ``data_dir``."""
        started = time.monotonic()
        items = 0
        for name, path in sorted(list_queue_dirs(data_dir).items()):
            settings = self.settings_for(name)
            assert self.writer is not None
            journal = Journal(
                path,
                self.writer,
                settings.sync_journal,
                segment_size=self.segment_size,
                name=name,
            )
            # A queue no longer journaled takes all its items into memory,
            # and its journal is erased once they are there.
            keeps_journal = settings.journal
            replayed = journal.replay(
                settings.max_memory_size if keeps_journal else sys.maxsize
            )
            for damage in replayed.damage:
                self.log.warn("Journal of {queue}: {damage}", queue=name, damage=damage)
            if not keeps_journal:
                journal.erase()
            queue = Queue(
                name, self.clock, settings, journal if keeps_journal else None
            )
            self._configure(queue)
            queue.restore(
                replayed.items,
                replayed.behind_items,
                replayed.behind_bytes,
                replayed.next_id,
            )
            self._register(queue)
            items += queue.items
        self._replayed = True
        self.log.info(
            "Replayed {queues} queues, {items} items, in {seconds:.2f} s",
            queues=len(self.queues),
            items=items,
            seconds=time.monotonic() - started,
        )

    def shutdown(self) -> bool:
        """Stop the whole server, if this server allows clients to."""
        if not self.allow_shutdown:
            return False
        self.shutting_down = True
        for connection in list(self.connections):
            connection.disconnect()
        stop = self._stop_server
        if stop is None:
            from twisted.internet import reactor

            stop = reactor.stop
        self.clock.callLater(0, stop)
        return True

    def connection_made(self, connection: QueueProtocol) -> bool:
        """Count a new connection; ``False`` when there are too many."""
        if (
            self.max_connections is not None
            and len(self.connections) >= self.max_connections
        ):
            self.counters.rejected_connections += 1
            self.warn_limited(
                "too many connections",
                "Refused a connection from {peer}: already {limit} connections",
                peer=describe_peer(connection.peer),
                limit=self.max_connections,
            )
            return False
        self.connections.add(connection)
        self.counters.total_connections += 1
        return True

    def client_error(self, kind: str, peer: IAddress) -> None:
        """A client at ``peer`` did something wrong, which ``kind`` names."""
        self.counters.client_errors += 1
        self.warn_limited(
            kind, "{error} to {peer}", error=kind, peer=describe_peer(peer)
        )

    def warn_limited(self, kind: str, format: str, **fields: object) -> None:
        """Log ``format`` as a warning, but one line of each ``kind`` in
        `LOG_INTERVAL` at most, so that a client repeating a mistake
        cannot flood the log; the next line logged tells how many were
        not."""
        now = self.clock.seconds()
        last, held = self._limited.get(kind, (None, 0))
        if last is not None and now - last < LOG_INTERVAL:
            self._limited[kind] = (last, held + 1)
            return
        self._limited[kind] = (now, 0)
        if held:
            format += " ({held} more like it since the last such line)"
        self.log.warn(format, held=held, **fields)

    def connection_lost(self, connection: QueueProtocol) -> None:
        self.connections.discard(connection)
        if self._closing:
            for closing, closed in list(self._closing):
                closing.discard(connection)
                if not closing:
                    self._closing.remove((closing, closed))
                    closed.callback(None)

    # -- queues ----------------------------------------------------------

    @property
    def max_item_cap(self) -> int:
        return self.config.server.max_item_cap

    @property
    def allow_shutdown(self) -> bool | Literal["any"]:
        return self.config.server.allow_shutdown

    def shutdown_refused(self, peer: IAddress) -> str | None:
        """Why a client at ``peer`` may not shut the server down, or
        ``None`` when it may."""
        allowed = self.allow_shutdown
        if allowed is False:
            return "shutdown disabled"
        if allowed == "any" or is_local(peer):
            return None
        return "shutdown disabled except from loopback or a Unix socket"

    @property
    def max_connections(self) -> int | None:
        return self.config.server.max_connections

    def settings_for(self, name: str) -> QueueSettings:
        return self.config.settings_for(name)

    def queue(self, name: str) -> Queue | None:
        """The queue of that name, if it exists."""
        return self.queues.get(name)

    def reload(self) -> None:
        """Read the configuration file again and apply it to live queues.

        Raises `ConfigError`, changing nothing, when the file does not parse
        or validate, and `NoConfigurationFile` when there is nothing to read
        again.  The port and the data directory stay as they are.
        """
        path = self.config_path
        if path is None:
            if self.config.server.auth_file is None:
                raise NoConfigurationFile()
            # The auth file is read again even so.
            config = self.config.with_credentials_read_again()
        else:
            config = load_config(path).with_overrides(**self.overrides)
        running = self.config.server
        if (config.server.port, config.server.data_dir) != (
            running.port,
            running.data_dir,
        ):
            # The port is bound and the journals are open: the file's new
            # values wait for a restart, and the settings say what is in use.
            self.log.warn(
                "Port and data directory stay {port} and {data_dir} until "
                "the server restarts",
                port=running.port,
                data_dir=running.data_dir,
            )
            config = replace(
                config,
                server=replace(
                    config.server, port=running.port, data_dir=running.data_dir
                ),
            )
        self.apply(config)

    def reload_logged(self, by: str = "SIGHUP", *, reraise: bool = False) -> None:
        """``reload``, telling the log how it went and what asked for it
        (``by``); a `ConfigError` is raised again if ``reraise``."""
        try:
            self.reload()
        except ConfigError as error:
            self.log.error(
                "Configuration not reloaded on {by}: {why}", by=by, why=str(error)
            )
            if reraise:
                raise
        else:
            self.log.info(
                "Reloaded configuration from {path} on {by}",
                path=self.config_path,
                by=by,
            )

    def apply(self, config: Config) -> None:
        """Use ``config`` from now on, for live queues too."""
        sweep_changed = config.server.expiry_sweep != self.config.server.expiry_sweep
        required = config.credentials is not None
        login_changed = required != (self.config.credentials is not None)
        self.config = config
        if login_changed:
            # Logged-in connections stay so; the others may now need to.
            for connection in self.connections:
                connection.login_required(required)
        for queue in self.queues.values():
            self._configure(queue)
        if self.running:
            self._create_configured()
            if sweep_changed:
                self._start_sweeper()

    def _create_configured(self) -> None:
        """A fanout child with its own table exists from the start."""
        for name in self.config.queues:
            if fanout_parent(name) is not None:
                self.create_queue(name)

    def _configure(self, queue: Queue) -> None:
        settings = self.settings_for(queue.name)
        queue.settings = settings
        if isinstance(queue.journal, Journal):
            queue.journal.sync = settings.sync_journal
        target = settings.expire_to_queue
        queue.expired_sink = None if target is None else self._expire_into(target)

    def _expire_into(self, target: str) -> Callable[[Item], None]:
        def move(item: Item) -> None:
            # The moved item no longer expires.
            self.create_queue(target).put(item.data, item.flags, None)

        return move

    def create_queue(self, name: str) -> Queue:
        """The queue of that name, created if it does not exist yet."""
        queue = self.queues.get(name)
        if queue is not None:
            return queue
        settings = self.settings_for(name)
        journal = None
        if self.writer is not None and self.data_dir is not None and settings.journal:
            journal = Journal(
                queue_dir(self.data_dir, name),
                self.writer,
                settings.sync_journal,
                segment_size=self.segment_size,
                name=name,
            )
        queue = Queue(name, self.clock, settings, journal)
        self._configure(queue)
        unborn = self._unborn.pop(name, None)
        if unborn is not None:
            unborn.on_no_waiters = None
            queue.adopt_waiters(unborn)
        self._register(queue)
        self.counters.queue_creates += 1
        return queue

    def _register(self, queue: Queue) -> None:
        self.queues[queue.name] = queue
        parent = fanout_parent(queue.name)
        if parent is not None:
            self._children.setdefault(parent, set()).add(queue.name)

    def put(
        self, name: str, data: bytes, flags: int, exptime: int
    ) -> bool | Deferred[Any]:
        """A client's ``set``: store an item, or refuse it with ``False``.  A
        Deferred fires once the item is durable: with ``False`` if it was
        refused after all, with anything else if it was stored."""
        self.counters.cmd_set += 1
        if self.shutting_down:
            return False
        expiry = self.expiry(exptime)
        queue = self.create_queue(name)
        children = self._children.get(name)
        if not children:
            if queue.settings.fanout_only:
                # It keeps nothing, even with no child to feed.
                return True
            return queue.put(data, flags, expiry)
        # Each child gets its own copy; one that is full simply misses it.
        results = [self.queues[child].put(data, flags, expiry) for child in children]
        stored = True if queue.settings.fanout_only else queue.put(data, flags, expiry)
        waits = [
            result for result in (*results, stored) if isinstance(result, Deferred)
        ]
        if not waits:
            return stored
        return all_durable(waits).addCallback(
            lambda _: True if isinstance(stored, Deferred) else stored
        )

    def put_many(
        self, name: str, datas: list[bytes], flags: int, exptime: int
    ) -> tuple[int, Deferred[None] | None] | None:
        """Several ``set``s of one queue in a row, journaled together; see
        ``Queue.put_many``.  ``None``, and nothing done, where they must go
        one by one (fanout, a queue that refuses or hands items on)."""
        if self.shutting_down or self._children.get(name):
            return None
        queue = self.create_queue(name)
        if queue.settings.fanout_only:
            return None
        result = queue.put_many(datas, flags, self.expiry(exptime))
        if result is not None:
            self.counters.cmd_set += len(datas)
        return result

    def expiry(self, exptime: int) -> float | None:
        """The clock time at which an item set with ``exptime`` expires."""
        if exptime == 0:
            return None
        now = self.clock.seconds()
        if exptime < 0:
            return now - 1
        if exptime <= ABSOLUTE_EXPTIME:
            return now + exptime
        return float(exptime)

    def get(
        self, name: str, timeout: float | None, open: bool, peek: bool
    ) -> Item | None | Deferred[Item | None]:
        """A client's get of one key; see ``Queue.get``."""
        queue = self.queues.get(name)
        if queue is None and fanout_parent(name) is not None:
            # A consumer subscribes to a fanout by asking.
            queue = self.create_queue(name)
        if queue is None:
            if not timeout:
                return None
            queue = self._unborn.get(name)
            if queue is None:
                queue = self._unborn[name] = Queue(
                    name, self.clock, self.settings_for(name)
                )
                queue.on_no_waiters = self._forget_unborn
        return queue.get(timeout, open, peek)

    def take_many(
        self, name: str, count: int, max_bytes: int
    ) -> tuple[list[Item], bool]:
        """``count`` plain gets of one existing queue in a row; see
        ``Queue.take_many``.  Any other queue is left to ``get``, which
        knows about fanout and waiting on queues not made yet."""
        queue = self.queues.get(name)
        if queue is None:
            return [], False
        return queue.take_many(count, max_bytes)

    def _forget_unborn(self, queue: Queue) -> None:
        if self._unborn.get(queue.name) is queue:
            del self._unborn[queue.name]

    def delete(self, name: str) -> bool:
        queue = self.queues.pop(name, None)
        if queue is None:
            return False
        self.counters.queue_deletes += 1
        journal = queue.journal
        queue.close()
        if isinstance(journal, Journal):
            journal.erase()
        parent = fanout_parent(name)
        if parent is not None:
            siblings = self._children.get(parent, set())
            siblings.discard(name)
            if not siblings:
                self._children.pop(parent, None)
        if queue.waiters:
            # They wait on for a queue of that name to be created again.
            unborn = Queue(name, self.clock, self.settings_for(name))
            unborn.adopt_waiters(queue)
            unborn.on_no_waiters = self._forget_unborn
            self._unborn[name] = unborn
        return True

    def sweep(self, budget: int = SWEEP_BUDGET) -> None:
        """Drop expired items, at most ``budget`` of them in one go, and
        delete queues left empty and untouched for their ``max_queue_age``."""
        now = self.clock.seconds()
        for queue in list(self.queues.values()):
            if budget > 0:
                budget -= queue.sweep(budget)
            max_queue_age = queue.settings.max_queue_age
            if max_queue_age is not None and queue.is_idle_since(now - max_queue_age):
                self.delete(queue.name)
                self.counters.queue_expires += 1

    def flush(self, name: str) -> None:
        queue = self.queues.get(name)
        if queue is not None:
            queue.flush()

    def flush_all(self) -> None:
        for queue in self.queues.values():
            queue.flush()

    def flush_expired(self, name: str) -> int:
        queue = self.queues.get(name)
        return 0 if queue is None else queue.flush_expired()

    def flush_all_expired(self) -> int:
        return sum(queue.flush_expired() for queue in list(self.queues.values()))

    # -- stats -----------------------------------------------------------

    def stats(self) -> list[tuple[str, object]]:
        """The ``stats`` reply: server figures, then each queue's."""
        now = self.clock.seconds()
        queues = list(self.queues.values())
        counters = self.counters
        values: dict[str, object] = {
            "uptime": int(now - self.started_at),
            "time": int(now),
            "version": __version__,
            "curr_items": sum(queue.items for queue in queues),
            "total_items": sum(queue.total_items for queue in queues),
            "bytes": sum(queue.queued_bytes for queue in queues),
            "curr_connections": len(self.connections),
        }
        for name in Counters.__slots__:
            values[name] = getattr(counters, name)
        result = [(name, values[name]) for name in SERVER_STATS]
        for queue in queues:
            prefix = f"queue_{queue.name}_"
            result.extend(
                (prefix + name, value) for name, value in self.queue_stats(queue)
            )
        return result

    def queue_stats(self, queue: Queue) -> Iterable[tuple[str, object]]:
        journal = queue.journal
        logsize = getattr(journal, "size", 0) if journal is not None else 0
        values = {
            "items": queue.items,
            "bytes": queue.queued_bytes,
            "total_items": queue.total_items,
            "logsize": logsize,
            "expired_items": queue.expired_items,
            "mem_items": queue.mem_items,
            "mem_bytes": queue.mem_bytes,
            "age": int(queue.age * 1000),
            "discarded": queue.discarded,
            "waiters": queue.waiters,
            "open_transactions": queue.open_items,
            "transactions": queue.transactions,
            "canceled_transactions": queue.canceled_transactions,
            "total_flushes": queue.total_flushes,
        }
        result = [(name, values[name]) for name in QUEUE_STATS]
        children = self.children(queue.name)
        if children:
            result.append(("children", ",".join(children)))
        return result

    def children(self, name: str) -> list[str]:
        """Fanout children of a queue: ``name+<anything>``."""
        return sorted(self._children.get(name, ()))


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


def all_durable(waits: list[Deferred[None]]) -> Deferred[list[None]]:
    """Fires when every write is durable, or fails with the first failure."""

    def first_failure(failure: Failure) -> Failure:
        error = failure.value
        return error.subFailure if isinstance(error, FirstError) else failure

    return gatherResults(waits, consumeErrors=True).addErrback(first_failure)
