"""The reference for the lock-step workloads: a bare Twisted server that does
nothing but append and pop.

It speaks just enough of the protocol for workloads 1 and 2 (``set``, a
one-key ``get``, each key an in-memory FIFO, ``version``) with none of erq's
checks, journal, limits or stats.  Whatever erq spends beyond it is erq's
own; what it spends itself is the price of Python and Twisted.

Run: ``python benchmarks/bare.py PORT`` (listens on 127.0.0.1 only; it
imports nothing from the benchmarks, so that it runs from any directory).
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

from twisted.internet.protocol import Protocol, ServerFactory

HOST = "127.0.0.1"

QUEUES: dict[bytes, deque[bytes]] = {}


class Bare(Protocol):
    """Parses every whole request of a read, and writes its replies at once."""

    def __init__(self) -> None:
        self.buffer = b""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data
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
                queue = QUEUES.get(words[1])
                if queue is None:
                    queue = QUEUES[words[1]] = deque()
                queue.append(buffer[start:stop])
                out.append(b"STORED\r\n")
                position = stop + 2
                continue
            position = end + 2
            if words[0] == b"get":
                queue = QUEUES.get(words[1])
                if queue:
                    item = queue.popleft()
                    out.append(
                        b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (words[1], len(item), item)
                    )
                else:
                    out.append(b"END\r\n")
            elif words[0] == b"version":
                out.append(b"VERSION bare\r\n")
            else:
                out.append(b"ERROR\r\n")
        self.buffer = buffer[position:]
        if out:
            self.transport.write(b"".join(out))  # type: ignore[union-attr]


def main(port: int) -> None:
    from twisted.internet import reactor

    factory = ServerFactory()
    factory.protocol = Bare
    reactor.listenTCP(port, factory, interface=HOST)
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
