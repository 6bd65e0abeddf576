"""The queue server's service: names to queues, and lifecycle."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IReactorCore, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from erq.config import (
    Config,
    QueueSettings,
    fanout_parent,
)
from erq.connections import (
    SHUTDOWN_GRACE,
    Connection,
    Connections,
    LogLimit,
    describe_peer,
    is_local,
)
from erq.delivery import Delivery
from erq.journal import JournalWriter
from erq.keptstatus import KeptStatus
from erq.memory import GiveBack, MemoryUse
from erq.queue import Item, Queue
from erq.reload import LiveConfig, NoConfigurationFile
from erq.stats import (
    QUEUE_STATS,
    SERVER_STATS,
    Counters,
    queue_stats,
    server_stats,
)
from erq.status import ServerStatus
from erq.storage import SEGMENT_SIZE, Storage
from erq.unborn import UnbornQueues
from erq.waiters import Deadlines, Deliver, Waiter

__all__ = [
    "QUEUE_STATS",
    "SEGMENT_SIZE",
    "SERVER_STATS",
    "SHUTDOWN_GRACE",
    "NoConfigurationFile",
    "QueueService",
]

#: Most expired items one sweep drops, so that a sweep never stalls requests.
SWEEP_BUDGET = 10_000


class QueueService(Service):
    """Holds every queue by name and runs them.

    Compose it into any Twisted application together with a listening port
    for ``QueueFactory(service)``; ``erq.tap.makeService`` does that for
    twistd.
    """

    # The one table every command goes through, name to queue.  Where a
    # set's items go, the queues waited on before they exist, the status
    # kept on disk and the live configuration are objects it holds;
    # storage, connections and stats live in their own modules.

    name = "erq"

    def __init__(
        self,
        config: Config | None = None,
        *,
        reactor: IReactorTime,
        clock: IReactorTime | None = None,
        stop_server: Callable[[], object] | None = None,
        data_dir: str | None = None,
        config_path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        segment_size: int | None = None,
    ) -> None:
        """``config`` holds every setting (the defaults when ``None``).

        ``reactor`` is the reactor the service runs on: its clock times
        every wait and expiry, and with a ``data_dir`` it runs the journal
        writer's hand-offs (a `twisted.internet.task.Clock` does for a
        service that journals nothing); ``clock``, when given, times them
        instead (tests of expiry).  ``config_path`` is the file that a
        reload (``live_config``) reads again, with the command line's
        ``overrides`` (``Config.with_overrides`` keywords) applied on top
        each time.
        ``stop_server`` is what ``shutdown`` calls (by default the reactor's
        ``stop``).  Without ``data_dir`` queues live in memory only; with it
        each is journaled in a directory there, in segment files of
        ``segment_size`` bytes (`SEGMENT_SIZE`).
        """
        self.clock = reactor if clock is None else clock
        #: The timeouts of every queue's waiting gets, on one timer.
        self.deadlines = Deadlines(self.clock)
        self.config = config if config is not None else Config()
        self.data_dir = data_dir
        self.storage = (
            None if data_dir is None else Storage(reactor, data_dir, segment_size)
        )
        if stop_server is None and IReactorCore.providedBy(reactor):
            stop_server = IReactorCore(reactor).stop
        self._stop_server = stop_server
        self._sweeper: LoopingCall | None = None
        self.queues: dict[str, Queue] = {}
        self.counters = Counters()
        self.unborn = UnbornQueues(self.clock, self.deadlines, self.settings_for)
        self.started_at = self.clock.seconds()
        self.shutting_down = False
        #: What the server serves (see ``erq.status``); decided at start
        #: and changed through ``kept_status``, which keeps it on disk.
        self.status = ServerStatus.UP
        self.log = Logger()
        self.connections = Connections(self.clock, self.log)
        self._log_limit = LogLimit(self.clock)
        #: The item bytes every queue holds in memory, and the server's cap.
        self.memory = MemoryUse(self.config.server.max_memory_size)
        self.give_back = GiveBack(self.memory, self.clock)
        self.live_config = LiveConfig(self, config_path, overrides)
        self.kept_status = KeptStatus(self)
        #: Where each set's item goes: a set on the wire calls its ``put``.
        self.delivery = Delivery(self, self.config)

    @property
    def writer(self) -> JournalWriter | None:
        """The journal writer, once there is one (with a data directory)."""
        return None if self.storage is None else self.storage.writer

    @writer.setter
    def writer(self, writer: JournalWriter) -> None:
        assert self.storage is not None, "a writer needs a data directory"
        self.storage.writer = writer

    # -- lifecycle -------------------------------------------------------

    def privilegedStartService(self) -> None:
        """twistd starts every service this way first, in order: replaying
        here means that a port started after this one listens only once the
        queues are back, so a client is refused rather than left waiting
        (and its plain get answered to nobody when it gives up).  The
        writer's thread starts later, in ``startService``: a port that
        cannot be bound must still end the process."""
        self.hold_data_dir()
        self.kept_status.load()
        super().privilegedStartService()
        self._replay_journals()

    def startService(self) -> None:
        self.hold_data_dir()
        self.kept_status.load()
        self.shutting_down = False
        self.started_at = self.clock.seconds()
        super().startService()
        self._replay_journals()
        if self.storage is not None:
            self.storage.start()
        self.live_config.take_effect()
        self.start_sweeper()
        self.give_back.start()

    def hold_data_dir(self, path: str | None = None) -> None:
        """Hold the data directory (see ``erq.datadir``) before anything
        reads it; raises `DataDirectoryInUse`, with nothing started, when
        another server holds it.  ``path`` names the data directory as seen
        from here, where the process will change directories before the
        service starts (twistd's ``--rundir``)."""
        if self.storage is not None:
            self.storage.hold(path)

    def _replay_journals(self) -> None:
        """Bring back every queue journaled in the data directory."""
        storage = self.storage
        if storage is None or storage.replayed:
            return
        for name, journal, replayed in storage.replay(self._replay_settings, self.log):
            queue = Queue(
                name,
                self.clock,
                self.settings_for(name),
                journal,
                self.memory,
                self.deadlines,
            )
            self.live_config.configure(queue)
            queue.restore(
                replayed.items,
                replayed.behind_items,
                replayed.behind_bytes,
                replayed.next_id,
            )
            self._register(queue)

    def _replay_settings(self, name: str) -> QueueSettings:
        """The settings a queue's journal is replayed with: its memory
        limit cut to what the queues replayed before it left of the
        server's (each queue is restored before the next is replayed)."""
        settings = self.settings_for(name)
        cap = self.memory.cap
        room = settings.max_memory_size if cap is None else cap - self.memory.held
        if room >= settings.max_memory_size:
            return settings
        return replace(settings, max_memory_size=max(room, 0))

    def start_sweeper(self) -> None:
        """Run the sweep every ``expiry_sweep`` from now on."""
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
        self.give_back.stop()
        self.shutting_down = True
        closing = self.connections.disconnect_all()
        # The waiters' timer is left set once a waiter is served, for the next.
        self.deadlines.stop()
        written = succeed(None) if self.storage is None else self.storage.stop()
        # The last journal write answers the durable sets still waiting; the
        # reactor must not stop (and drop every connection) before their
        # replies have left.
        return written.addCallback(lambda _: self.connections.closed(closing))

    def shutdown(self) -> bool:
        """Stop the whole server, if this server allows clients to."""
        if not self.allow_shutdown:
            return False
        self.shutting_down = True
        self.connections.disconnect_all()
        if self._stop_server is not None:
            self.clock.callLater(0, self._stop_server)
        return True

    def connection_made(self, connection: Connection) -> bool:
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
        """Log ``format`` as a warning, but one line of each ``kind`` a
        second at most; the next line logged tells how many were not."""
        held = self._log_limit.admit(kind)
        if held is None:
            return
        if held:
            format += " ({held} more like it since the last such line)"
        self.log.warn(format, held=held, **fields)

    def connection_lost(self, connection: Connection) -> None:
        self.connections.lost(connection)

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

    def create_queue(self, name: str) -> Queue:
        """The queue of that name, created if it does not exist yet."""
        queue = self.queues.get(name)
        if queue is not None:
            return queue
        settings = self.settings_for(name)
        storage = self.storage
        journal = None if storage is None else storage.journal(name, settings)
        queue = Queue(name, self.clock, settings, journal, self.memory, self.deadlines)
        self.live_config.configure(queue)
        self.unborn.born(queue)
        self._register(queue)
        self.counters.queue_creates += 1
        return queue

    def _register(self, queue: Queue) -> None:
        self.queues[queue.name] = queue
        self.delivery.added(queue.name)

    def put(
        self, name: str, data: bytes, flags: int = 0, exptime: int = 0
    ) -> bool | Deferred[Any]:
        """Store an item as a client's ``set`` does, from code that embeds
        the service (the wire's sets go to ``delivery`` themselves); see
        ``Delivery.put``."""
        return self.delivery.put(name, data, flags, exptime)

    def get(
        self, name: str, timeout: float | None, open: bool, peek: bool
    ) -> Item | None | Deferred[Item | None]:
        """A client's get of one key; see ``Queue.get``.  An alias is
        always empty, at once."""
        queue = self._queue_to_get(name, timeout)
        return None if queue is None else queue.get(timeout, open, peek)

    def get_for(
        self,
        deliver: Deliver,
        name: str,
        timeout: float | None,
        open: bool,
        peek: bool,
    ) -> Item | None | Waiter:
        """``get``, answered through ``deliver`` if it waits; see
        ``Queue.get_for``."""
        queue = self._queue_to_get(name, timeout)
        return None if queue is None else queue.get_for(deliver, timeout, open, peek)

    def _queue_to_get(self, name: str, timeout: float | None) -> Queue | None:
        """The queue a get of ``name`` asks, if any: none for an alias."""
        if name in self.config.aliases:
            return None
        queue = self.queues.get(name)
        if queue is None:
            return self._not_made(name, timeout)
        return queue

    def _not_made(self, name: str, timeout: float | None) -> Queue | None:
        """The queue that a get of a queue not made yet asks: a fanout
        child, made now; or for a get that waits, one that only holds
        waiters until the queue is made."""
        if fanout_parent(name) is not None:
            # A consumer subscribes to a fanout by asking.
            return self.create_queue(name)
        if not timeout:
            return None
        return self.unborn.waiting_on(name)

    def take_many(
        self, name: str, count: int, max_bytes: int
    ) -> tuple[list[Item], bool]:
        """``count`` plain gets of one existing queue in a row; see
        ``Queue.take_many``.  Any other queue is left to ``get``, which
        knows about fanout and waiting on queues not made yet."""
        queue = self.queues.get(name)
        if queue is None or name in self.config.aliases:
            return [], False
        return queue.take_many(count, max_bytes)

    def delete(self, name: str) -> bool:
        if name in self.config.aliases:
            return False
        queue = self.queues.pop(name, None)
        if queue is None:
            return False
        self.counters.queue_deletes += 1
        journal = queue.journal
        queue.close()
        if journal is not None:
            journal.erase()
        self.delivery.removed(name)
        if queue.waiters:
            self.unborn.left_behind(queue)
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
        if queue is not None and name not in self.config.aliases:
            queue.flush()

    def flush_all(self) -> None:
        for queue in self.queues.values():
            queue.flush()

    def flush_expired(self, name: str) -> int:
        queue = self.queues.get(name)
        if queue is None or name in self.config.aliases:
            return 0
        return queue.flush_expired()

    def flush_all_expired(self) -> int:
        return sum(queue.flush_expired() for queue in list(self.queues.values()))

    # -- stats -----------------------------------------------------------

    def stats(self) -> list[tuple[str, object]]:
        """The ``stats`` reply: server figures, then each queue's."""
        return server_stats(self)

    def queue_stats(self, queue: Queue) -> Iterable[tuple[str, object]]:
        """One queue's figures, as ``dump_stats`` shows them."""
        return queue_stats(self, queue)
