"""The reference for the lock-step workloads: a bare Twisted server that does
nothing but append and pop.

It speaks just enough of the protocol for workloads 1, 2 and 4 (``set``,
a one-key ``get``, each key an in-memory FIFO, ``get <key>/t=<ms>`` waiting
for an item, ``delete``, ``version``) with none of erq's checks, journal,
limits or stats.  Whatever erq spends beyond it is erq's own; what it
spends itself is the price of Python and Twisted.

A get that waits is answered by the first set to its queue, or with
``END`` when its time is up, as erq answers it; the requests the client
sends behind it wait for that answer.

With ``--durable=PATH``, every set is also written to the file ``PATH``
and made durable (``fdatasync``) before its ``STORED`` goes out, on the
reactor's own thread, one set at a time: what a lock-step durable set
costs a Python server that does nothing else, the reference of workload
9's single connection.  As erq's journal does, it writes zeros a mebibyte
ahead of its records (synced once), so that a record only overwrites space
already durable.

Run: ``python benchmarks/bare.py PORT [--erq-io [--idle-poll=MICROS]]
[--durable=PATH]``
(listens on 127.0.0.1 only; it imports nothing from the benchmarks, so that
it runs from any directory).  With ``--erq-io`` it reads and writes as
``twistd erq`` does: through ``erq.epoll``'s dispatch of reads, polling
before it sleeps as long as ``twistd erq --idle-poll`` would (its default
unless given), and sending a reply at once when nothing is queued
(``erq.protocol.transport``), so that what erq spends beyond it is erq's
own work, not a cheaper way to the socket.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, ServerFactory

HOST = "127.0.0.1"

#: Whether to read and write as ``twistd erq`` does (``--erq-io``).
ERQ_IO = False

QUEUES: dict[bytes, deque[bytes]] = {}
#: The gets waiting on each queue, oldest first.
WAITING: dict[bytes, deque[Bare]] = {}
#: How far ahead of its records the durable file is filled with zeros.
AHEAD = 1 << 20


class Durable:
    """A file every set is written to and synced in, before its reply."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.offset = 0
        self.zeroed = 0

    def store(self, name: bytes, item: bytes) -> None:
        # A header as long as erq's record of an add (frame, id, flags,
        # times, checksum), then the item.
        record = b"%-29s%s" % (name[:29], item)
        end = self.offset + len(record)
        if end > self.zeroed:
            os.pwrite(self.fd, bytes(AHEAD), self.offset)
            os.fdatasync(self.fd)
            self.zeroed = self.offset + AHEAD
        os.pwrite(self.fd, record, self.offset)
        os.fdatasync(self.fd)
        self.offset = end


#: Where sets are made durable (``--durable``), if anywhere.
DURABLE: Durable | None = None


def value(key: bytes, item: bytes) -> bytes:
    return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(item), item)


class Bare(Protocol):
    """Parses every whole request of a read, and writes its replies at once."""

    def __init__(self) -> None:
        self.buffer = b""
        #: While a get waits: its key, its queue's name, and the call that
        #: ends the wait.
        self.key = self.name = b""
        self.timer: IDelayedCall | None = None
        #: How replies go out (``--erq-io``: as erq sends them).
        self.write: Callable[[bytes], None] = self.write_later

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.setTcpNoDelay(True)
        if ERQ_IO:
            from erq.protocol.transport import sender

            self.write = sender(transport)

    def write_later(self, data: bytes) -> None:
        """Twisted's way: queued, sent on the reactor's next turn."""
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: object = None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            WAITING[self.name].remove(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.timer is None:
            self.serve()

    def serve(self) -> None:
        buffer = self.buffer
        position = 0
        out = []
        while True:
            end = buffer.find(b"\r\n", position)
            if end < 0:
                break
            words = buffer[position:end].split(b" ")
            if words[0] == b"set":
                start = end + 2
                stop = start + int(words[4])
                if len(buffer) < stop + 2:
                    break
                self.put(words[1], buffer[start:stop])
                out.append(b"STORED\r\n")
                position = stop + 2
                continue
            position = end + 2
            if words[0] == b"get":
                key = words[1]
                name, _, wait = key.partition(b"/t=")
                queue = QUEUES.get(name)
                if queue:
                    out.append(value(key, queue.popleft()))
                elif wait:
                    self.wait(key, name, int(wait) / 1000)
                    break
                else:
                    out.append(b"END\r\n")
            elif words[0] == b"delete":
                QUEUES.pop(words[1], None)
                out.append(b"DELETED\r\n")
            elif words[0] == b"version":
                out.append(b"VERSION bare\r\n")
            else:
                out.append(b"ERROR\r\n")
        self.buffer = buffer[position:]
        if out:
            self.write(b"".join(out))

    def put(self, name: bytes, item: bytes) -> None:
        """Store an item, or hand it to the oldest get waiting for one."""
        if DURABLE is not None:
            DURABLE.store(name, item)
        waiting = WAITING.get(name)
        if waiting:
            waiter = waiting.popleft()
            waiter.answer(value(waiter.key, item))
            return
        queue = QUEUES.get(name)
        if queue is None:
            queue = QUEUES[name] = deque()
        queue.append(item)

    def wait(self, key: bytes, name: bytes, seconds: float) -> None:
        from twisted.internet import reactor

        self.key, self.name = key, name
        self.timer = reactor.callLater(seconds, self.expire)
        WAITING.setdefault(name, deque()).append(self)

    def expire(self) -> None:
        self.timer = None
        WAITING[self.name].remove(self)
        self.answer(b"END\r\n")

    def answer(self, reply: bytes) -> None:
        """The waiting get's reply; then the requests sent behind it."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.write(reply)
        if self.buffer:
            self.serve()


def main(
    port: int,
    erq_io: bool = False,
    idle_poll: int | None = None,
    durable: str | None = None,
) -> None:
    global ERQ_IO, DURABLE
    from twisted.internet import reactor

    if durable is not None:
        DURABLE = Durable(durable)
    if erq_io:
        from erq.epoll import read_faster
        from erq.tap import default_idle_poll_us

        ERQ_IO = True
        micros = default_idle_poll_us() if idle_poll is None else idle_poll
        read_faster(reactor, micros / 1e6)
    factory = ServerFactory()
    factory.protocol = Bare
    reactor.listenTCP(port, factory, interface=HOST)
    reactor.run()


def _option(name: str) -> str | None:
    """The last value given as ``--name=value`` after the port."""
    given = [arg.split("=", 1)[1] for arg in sys.argv[2:] if arg.startswith(name + "=")]
    return given[-1] if given else None


if __name__ == "__main__":
    idle_poll = _option("--idle-poll")
    main(
        int(sys.argv[1]),
        "--erq-io" in sys.argv[2:],
        int(idle_poll) if idle_poll is not None else None,
        _option("--durable"),
    )
