"""Stateful property tests: random sessions of several connections, checked
against a plain Python model of docs/protocol.md.

The machine drives one ``QueueService`` (in memory, on a ``task.Clock``)
through a few connections (the ``Client`` of ``test_protocol``) with sets,
gets with every option (waiting ones too), multi-key gets, ``confirm``,
``flush``, ``quit``, pipelined batches cut at random places, dropped
connections and time passing.  Every reply must be the one the model
predicts, and after every step the server's queues, open reads, waiters and
stats must match the model, and no item may have been lost or duplicated.
Hypothesis prints the shortest failing sequence of steps it finds;
``--hypothesis-show-statistics`` shows how often each kind of get ran.

How the model serialises connections follows the server: a request that
hands an item to a waiting get (a set, an abort, a dropped connection) runs
that waiter's connection, and the requests buffered behind its get, before
it goes on.  Within that order the model is docs/protocol.md: waiters are served
first come, first served, an open read goes back to the head, and so on.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.config import Config, QueueSettings
from erq.protocol import QueueFactory
from erq.service import QueueService
from tests.support import Client, ProtocolTestCase, set_line, value

#: (data, flags): what a client can tell items apart by.
Entry = tuple[bytes, int]

QUEUES = ("a", "b")
CONNECTIONS = 3


# -- commands ------------------------------------------------------------------


@dataclass(frozen=True)
class Set:
    queue: str
    data: bytes
    flags: int = 0
    noreply: bool = False

    def wire(self) -> bytes:
        tail = b" noreply" if self.noreply else b""
        return b"set %s %d 0 %d%s\r\n%s\r\n" % (
            self.queue.encode(),
            self.flags,
            len(self.data),
            tail,
            self.data,
        )


@dataclass(frozen=True)
class Get:
    """``get`` of one or more keys, each a queue name with options."""

    keys: tuple[str, ...]

    def wire(self) -> bytes:
        return b"get " + " ".join(self.keys).encode() + b"\r\n"


@dataclass(frozen=True)
class Confirm:
    queue: str
    count: int

    def wire(self) -> bytes:
        return b"confirm %s %d\r\n" % (self.queue.encode(), self.count)


@dataclass(frozen=True)
class Flush:
    queue: str

    def wire(self) -> bytes:
        return b"flush %s\r\n" % self.queue.encode()


@dataclass(frozen=True)
class Quit:
    def wire(self) -> bytes:
        return b"quit\r\n"


Command = Set | Get | Confirm | Flush | Quit

#: Options of a key that the server must take.
GOOD_OPTIONS = (
    "",
    "/open",
    "/close",
    "/close/open",
    "/open/close",
    "/abort",
    "/peek",
    "/t=0",
    "/t=0/open",
)
#: Options of a key that may wait.
WAIT_OPTIONS = ("/t=100", "/open/t=100", "/t=250/peek", "/close/open/t=250")
#: Combinations docs/protocol.md refuses with ``CLIENT_ERROR``.
BAD_OPTIONS = ("/peek/open", "/close/peek", "/abort/open", "/close/abort")

queues = st.sampled_from(("a", "a", "b"))
data = st.one_of(
    st.sampled_from([b"", b"x", b"\r\n", b"x\r\ny", b"\n", b"\r", b"END\r\n", b" \0"]),
    st.binary(max_size=6),
)
flags = st.sampled_from([0, 1, 42, 2**32 - 1])
good_keys = st.sampled_from(
    [name + options for name in QUEUES for options in GOOD_OPTIONS + WAIT_OPTIONS]
)
any_keys = st.one_of(
    good_keys,
    st.sampled_from([name + options for name in QUEUES for options in BAD_OPTIONS]),
)
indexes = st.integers(0, CONNECTIONS - 1)

commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Set, queues, data, flags, st.booleans()),
    st.builds(lambda key: Get((key,)), good_keys),
    st.lists(any_keys, min_size=2, max_size=3).map(lambda keys: Get(tuple(keys))),
    st.builds(Confirm, queues, st.integers(0, 3)),
    st.builds(Flush, queues),
    st.just(Quit()),
)


# -- the model -----------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One key of a get, parsed."""

    text: str
    name: str
    options: frozenset[str]
    timeout: int

    @classmethod
    def parse(cls, text: str) -> Key:
        name, *words = text.split("/")
        options = frozenset(word for word in words if not word.startswith("t="))
        timeouts = [int(word[2:]) for word in words if word.startswith("t=")]
        return cls(text, name, options, timeouts[-1] if timeouts else 0)

    @property
    def bad_combination(self) -> bool:
        options = self.options
        return ("peek" in options and bool(options & {"open", "close", "abort"})) or (
            "abort" in options and bool(options & {"open", "close"})
        )


@dataclass
class Waiting:
    """A get waiting for an item for its key at ``position``."""

    keys: list[Key]
    position: int
    reply: bytes
    deadline: float
    order: int

    @property
    def key(self) -> Key:
        return self.keys[self.position]


@dataclass(eq=False)
class Connection:
    """A client connection, as the model sees it."""

    client: Client
    #: Open reads by queue, oldest first (a queue with none has no entry).
    open_reads: dict[str, list[Entry]] = field(default_factory=dict)
    #: Requests received but not handled yet (behind a waiting get).
    backlog: list[Command] = field(default_factory=list)
    waiting: Waiting | None = None
    #: Replies due since the last check.
    out: bytes = b""
    closing: bool = False
    closed: bool = False


class QueueMachine(RuleBasedStateMachine):
    """The server against a model: a list of (data, flags) per queue, the
    waiting gets per queue, and per connection its open reads per queue."""

    max_open_reads = 1

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        config = Config(defaults=QueueSettings(max_open_reads=self.max_open_reads))
        self.service = QueueService(config, reactor=self.clock)
        self.factory = QueueFactory(self.service)
        self.connections = [self.connect() for _ in range(CONNECTIONS)]
        # The model.
        self.queues: dict[str, list[Entry]] = {}
        self.waiters: dict[str, list[Connection]] = {name: [] for name in QUEUES}
        self.serving: set[str] = set()
        self.waits = 0
        self.stored: Counter[Entry] = Counter()
        self.delivered: Counter[Entry] = Counter()
        self.flushed: Counter[Entry] = Counter()
        self.total_items: Counter[str] = Counter()
        self.transactions: Counter[str] = Counter()
        self.canceled: Counter[str] = Counter()
        self.total_flushes: Counter[str] = Counter()

    def connect(self) -> Connection:
        return Connection(Client(self.factory))

    # -- the model's requests ------------------------------------------------

    def feed(self, connection: Connection, batch: Sequence[Command]) -> None:
        connection.backlog.extend(batch)
        self.run_requests(connection)

    def run_requests(self, connection: Connection) -> None:
        """Handle buffered requests until one waits or the connection ends."""
        while (
            connection.backlog and connection.waiting is None and not connection.closing
        ):
            self.handle(connection, connection.backlog.pop(0))
        if connection.closing and not connection.closed:
            self.lose(connection)

    def handle(self, connection: Connection, command: Command) -> None:
        if isinstance(command, Set):
            self.put(command.queue, (command.data, command.flags))
            if not command.noreply:
                connection.out += b"STORED\r\n"
        elif isinstance(command, Get):
            self.do_get(connection, [Key.parse(key) for key in command.keys])
        elif isinstance(command, Confirm):
            held = connection.open_reads.get(command.queue, [])
            if command.count and (
                command.queue not in self.queues or len(held) < command.count
            ):
                connection.out += b"ERROR\r\n"
                return
            for _ in range(command.count):
                self.delivered[held.pop(0)] += 1
            if not held:
                connection.open_reads.pop(command.queue, None)
            connection.out += b"END\r\n"
        elif isinstance(command, Flush):
            items = self.queues.get(command.queue)
            if items is not None:
                self.flushed.update(items)
                items.clear()
                self.total_flushes[command.queue] += 1
            connection.out += b"END\r\n"
        else:
            connection.closing = True

    def put(self, name: str, entry: Entry) -> None:
        self.queues.setdefault(name, []).append(entry)
        self.stored[entry] += 1
        self.total_items[name] += 1
        self.serve(name)

    def do_get(self, connection: Connection, keys: list[Key]) -> None:
        if any(key.bad_combination for key in keys):
            connection.out += b"CLIENT_ERROR bad option combination\r\n"
            return
        # The open-read rules, for the keys in turn: too many open reads on
        # a queue, or a plain get on a queue with an open read here, and the
        # whole get is refused with ERROR and the connection closed.
        counts = {name: len(connection.open_reads.get(name, [])) for name in QUEUES}
        for key in keys:
            name, options = key.name, key.options
            event(f"get /{'/'.join(sorted(options))} holding {counts[name]}")
            if options & {"close", "abort"}:
                counts[name] = max(counts[name] - 1, 0)
            if "open" in options:
                if counts[name] >= self.max_open_reads:
                    break
                counts[name] += 1
            elif not options & {"peek", "close", "abort"} and counts[name]:
                break
        else:
            self.get_from(connection, keys, 0, b"")
            return
        connection.out += b"ERROR\r\n"
        connection.closing = True

    def get_from(
        self, connection: Connection, keys: list[Key], start: int, reply: bytes
    ) -> None:
        """Answer the keys from ``start`` on, until one waits."""
        for position in range(start, len(keys)):
            key = keys[position]
            if key.options & {"close", "abort"}:
                self.end_open_read(connection, key)
                if "open" not in key.options:
                    continue
            items = self.queues.get(key.name)
            # Waiters come first: an item goes to the oldest of them.
            if items and ("peek" in key.options or not self.waiters[key.name]):
                reply += self.answer(connection, key, self.take(key))
            elif key.timeout:
                deadline = self.clock.seconds() + key.timeout / 1000.0
                self.waits += 1
                connection.waiting = Waiting(
                    keys, position, reply, deadline, self.waits
                )
                self.waiters[key.name].append(connection)
                return
        connection.out += reply + b"END\r\n"

    def take(self, key: Key) -> Entry:
        items = self.queues[key.name]
        if "peek" in key.options:
            return items[0]
        entry = items.pop(0)
        if "open" in key.options:
            self.transactions[key.name] += 1
        else:
            self.delivered[entry] += 1
        return entry

    def answer(self, connection: Connection, key: Key, entry: Entry | None) -> bytes:
        if entry is None:
            return b""
        if "open" in key.options:
            connection.open_reads.setdefault(key.name, []).append(entry)
        data, flags = entry
        return b"VALUE %s %d %d\r\n%s\r\n" % (key.text.encode(), flags, len(data), data)

    def end_open_read(self, connection: Connection, key: Key) -> None:
        held = connection.open_reads.get(key.name)
        if not held:
            return
        entry = held.pop(0)
        if not held:
            del connection.open_reads[key.name]
        if "close" in key.options:
            self.delivered[entry] += 1
        else:
            self.queues[key.name].insert(0, entry)
            self.canceled[key.name] += 1
            self.serve(key.name)

    def serve(self, name: str) -> None:
        """Hand items to the waiters of a queue, oldest first; each one's
        connection goes on with its requests before the next is served."""
        if name in self.serving:
            return
        self.serving.add(name)
        try:
            waiters = self.waiters[name]
            while waiters and self.queues.get(name):
                connection = waiters.pop(0)
                waiting = connection.waiting
                assert waiting is not None
                self.resume(connection, self.take(waiting.key))
        finally:
            self.serving.discard(name)

    def resume(self, connection: Connection, entry: Entry | None) -> None:
        waiting = connection.waiting
        assert waiting is not None
        event(
            "a waiting get ends",
            ("served" if entry else "timed out")
            + (" with requests behind it" if connection.backlog else "")
            + (
                f" while serving {'+'.join(sorted(self.serving))}"
                if self.serving
                else ""
            ),
        )
        connection.waiting = None
        reply = waiting.reply + self.answer(connection, waiting.key, entry)
        self.get_from(connection, waiting.keys, waiting.position + 1, reply)
        if connection.waiting is None:
            self.run_requests(connection)

    def lose(self, connection: Connection) -> None:
        """A closed connection: its waiting get is forgotten, its open reads
        go back to the head of their queues in their original order."""
        connection.closed = True
        connection.backlog.clear()
        if connection.waiting is not None:
            self.waiters[connection.waiting.key.name].remove(connection)
            connection.waiting = None
        held_reads, connection.open_reads = connection.open_reads, {}
        event(
            "open reads held by a lost connection", sum(map(len, held_reads.values()))
        )
        for name, held in held_reads.items():
            self.queues[name][0:0] = held
            self.canceled[name] += len(held)
            self.serve(name)

    def time_out(self) -> None:
        """Waiting gets whose time is up answer, oldest deadline first."""
        now = self.clock.seconds()
        while True:
            due = [
                (waiting.deadline, waiting.order, connection, waiting.key.name)
                for waiters in self.waiters.values()
                for connection in waiters
                if (waiting := connection.waiting) is not None
                and waiting.deadline <= now
            ]
            if not due:
                return
            _, _, connection, name = min(due, key=lambda due: due[:2])
            self.waiters[name].remove(connection)
            self.resume(connection, None)

    # -- rules ---------------------------------------------------------------

    def check_replies(self) -> None:
        """Each connection got exactly the replies the model expects; a
        closed one is replaced by a new connection."""
        for index, connection in enumerate(self.connections):
            got = connection.client.take()
            assert got == connection.out, (index, got, connection.out)
            connection.out = b""
            assert connection.client.closed == connection.closed, index
            if connection.closed:
                self.connections[index] = self.connect()

    def send(self, index: int, batch: list[Command], cuts: Sequence[int] = ()) -> None:
        connection = self.connections[index]
        request = b"".join(command.wire() for command in batch)
        bounds = sorted({cut % (len(request) + 1) for cut in cuts})
        for start, end in zip([0, *bounds], [*bounds, len(request)], strict=True):
            connection.client.send(request[start:end])
        self.feed(connection, batch)
        self.check_replies()

    @initialize(items=st.lists(st.tuples(queues, data, flags), max_size=6))
    def fill(self, items: list[tuple[str, bytes, int]]) -> None:
        """Start with a few items, so that gets find some."""
        self.send(0, [Set(queue, data, flags) for queue, data, flags in items])

    @rule(
        index=indexes,
        queue=queues,
        items=st.lists(st.tuples(data, flags), min_size=1, max_size=3),
    )
    def store(self, index: int, queue: str, items: list[Entry]) -> None:
        """``set`` one to three items."""
        self.send(index, [Set(queue, data, flags) for data, flags in items])

    @rule(index=indexes, queue=queues, close=st.booleans())
    def open(self, index: int, queue: str, close: bool) -> None:
        self.send(index, [Get((queue + ("/close/open" if close else "/open"),))])

    @rule(index=indexes, key=good_keys)
    def get(self, index: int, key: str) -> None:
        self.send(index, [Get((key,))])

    @rule(index=indexes, keys=st.lists(any_keys, min_size=2, max_size=3))
    def get_keys(self, index: int, keys: list[str]) -> None:
        self.send(index, [Get(tuple(keys))])

    @rule(index=indexes, queue=queues, count=st.integers(0, 3))
    def confirm(self, index: int, queue: str, count: int) -> None:
        self.send(index, [Confirm(queue, count)])

    @rule(index=indexes, queue=queues)
    def flush(self, index: int, queue: str) -> None:
        self.send(index, [Flush(queue)])

    @rule(
        index=indexes,
        batch=st.lists(commands, min_size=2, max_size=6),
        cuts=st.lists(st.integers(0, 1000), max_size=3),
    )
    def pipeline(self, index: int, batch: list[Command], cuts: list[int]) -> None:
        """Several requests in one write, or cut anywhere into pieces."""
        self.send(index, batch, cuts)

    @rule(
        index=indexes,
        command=commands,
        times=st.integers(2, 8),
        cuts=st.lists(st.integers(0, 1000), max_size=2),
    )
    def repeat(self, index: int, command: Command, times: int, cuts: list[int]) -> None:
        """The same request again and again in one write, as a producer or a
        consumer taking a batch sends it (the server answers such runs
        together)."""
        self.send(index, [command] * times, cuts)

    @rule(
        index=indexes,
        queue=queues,
        option=st.sampled_from(WAIT_OPTIONS),
        behind=st.lists(st.sampled_from(("set", *GOOD_OPTIONS)), max_size=3),
    )
    def wait(self, index: int, queue: str, option: str, behind: list[str]) -> None:
        """A get that may wait, with sets or gets of the same queue behind
        it: they run when it ends, maybe while other waiters are served."""
        self.send(
            index,
            [
                Get((queue + option,)),
                *(
                    Set(queue, b"w") if then == "set" else Get((queue + then,))
                    for then in behind
                ),
            ],
        )

    @rule(index=indexes)
    def disconnect(self, index: int) -> None:
        """The client goes away (and a new one connects in its place)."""
        connection = self.connections[index]
        connection.client.close()
        self.lose(connection)
        self.check_replies()

    @rule(ms=st.sampled_from([50, 100, 150, 250]))
    def advance(self, ms: int) -> None:
        """Time passes: waiting gets may time out."""
        self.clock.advance(ms / 1000.0)
        self.time_out()
        self.check_replies()

    # -- invariants ----------------------------------------------------------

    @invariant()
    def queues_match(self) -> None:
        service = self.service
        assert sorted(service.queues) == sorted(self.queues)
        for name, items in self.queues.items():
            queue = service.queues[name]
            assert [(i.data, i.flags) for i in queue._items] == items, name
            assert queue.behind_items == 0

    @invariant()
    def connections_match(self) -> None:
        for connection in self.connections:
            protocol = connection.client.protocol
            assert not connection.client.closed
            server = {
                queue.name: [(i.data, i.flags) for i in items]
                for queue, items in protocol.open_reads.items()
            }
            assert server == connection.open_reads
            assert (protocol._waiting is None) == (connection.waiting is None)

    @invariant()
    def stats_match(self) -> None:
        stats = dict(self.service.stats())
        for name, items in self.queues.items():
            open_items = sum(len(c.open_reads.get(name, [])) for c in self.connections)
            expected = {
                "items": len(items),
                "bytes": sum(len(data) for data, _ in items),
                "open_transactions": open_items,
                "total_items": self.total_items[name],
                "transactions": self.transactions[name],
                "canceled_transactions": self.canceled[name],
                "total_flushes": self.total_flushes[name],
                "waiters": len(self.waiters[name]),
            }
            got = {key: stats[f"queue_{name}_{key}"] for key in expected}
            assert got == expected, name
        assert stats["curr_items"] == sum(len(i) for i in self.queues.values())
        assert stats["curr_connections"] == CONNECTIONS
        # Gets that wait for a queue nobody has set to yet.
        unborn = {
            name: queue.waiters for name, queue in self.service.unborn.queues.items()
        }
        assert unborn == {
            name: len(waiters)
            for name, waiters in self.waiters.items()
            if waiters and name not in self.queues
        }

    @invariant()
    def nothing_lost_or_duplicated(self) -> None:
        """What was set is queued, open, delivered (a plain get or a
        confirmed open read) or flushed: each exactly once."""
        found: Counter[Entry] = Counter()
        for queue in self.service.queues.values():
            found.update((i.data, i.flags) for i in queue._items)
        for connection in self.connections:
            for items in connection.client.protocol.open_reads.values():
                found.update((i.data, i.flags) for i in items)
        assert found + self.delivered + self.flushed == self.stored


class TwoOpenReadsMachine(QueueMachine):
    """The same, with two open reads allowed per connection and queue."""

    max_open_reads = 2


class WaitersFirstTests(ProtocolTestCase):
    """Regressions the machine found: a get served to a waiter runs that
    client's next requests at once, inside the loop that serves the queue's
    waiters; those requests must not take an item ahead of the waiters
    still in line."""

    def test_requests_behind_a_served_get(self) -> None:
        self.ask(set_line(b"q", b"w") + b"get q\r\n")
        first, second = self.connect(), self.connect()
        first.send(b"get q/t=1000\r\n" + set_line(b"q", b"z") + b"get q\r\n")
        second.send(b"get q/t=1000\r\n")
        self.assertEqual(self.ask(set_line(b"q", b"x")), b"STORED\r\n")
        self.assertEqual(
            first.take(), value(b"q/t=1000", b"x") + b"END\r\nSTORED\r\nEND\r\n"
        )
        self.assertEqual(second.take(), value(b"q/t=1000", b"z") + b"END\r\n")

    def test_get_behind_a_served_peek(self) -> None:
        peeker, waiter = self.connect(), self.connect()
        peeker.send(b"get q/t=1000/peek\r\nget q\r\n")
        waiter.send(b"get q/t=1000\r\n")
        self.assertEqual(self.ask(set_line(b"q", b"x")), b"STORED\r\n")
        self.assertEqual(
            peeker.take(), value(b"q/t=1000/peek", b"x") + b"END\r\nEND\r\n"
        )
        self.assertEqual(waiter.take(), value(b"q/t=1000", b"x") + b"END\r\n")


class WaitersFirstTwoOpenReadsTests(ProtocolTestCase):
    defaults = QueueSettings(max_open_reads=2)

    def test_next_key_behind_a_served_key(self) -> None:
        """Two open reads come back at once: the first goes to the oldest
        waiter, whose next key must not take the second from the other."""
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open q/open\r\n")
        first, second = self.connect(), self.connect()
        first.send(b"get q/t=1000 q\r\n")
        second.send(b"get q/t=1000\r\n")
        self.client.close()
        self.assertEqual(first.take(), value(b"q/t=1000", b"a") + b"END\r\n")
        self.assertEqual(second.take(), value(b"q/t=1000", b"b") + b"END\r\n")


#: ``ERQ_PROPERTY_EXAMPLES=5000 pytest tests/test_properties.py`` searches
#: longer than the default, which keeps this file under 20 seconds.
MACHINE_SETTINGS = settings(
    max_examples=int(os.environ.get("ERQ_PROPERTY_EXAMPLES", "200")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class StateMachineTests(SynchronousTestCase):
    """The machines as trial test methods, so that trial runs them as
    pytest does (hypothesis's own ``TestCase`` has only ``runTest``, which
    trial does not collect)."""

    def test_queue_machine(self) -> None:
        run_state_machine_as_test(QueueMachine, settings=MACHINE_SETTINGS)

    def test_two_open_reads_machine(self) -> None:
        run_state_machine_as_test(TwoOpenReadsMachine, settings=MACHINE_SETTINGS)
