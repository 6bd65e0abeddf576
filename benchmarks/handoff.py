"""What a set handed to a waiting get costs, against a set and a plain get.

Two connections of one server, in process as ``benchmarks/inprocess.py``
drives it (a ``StringTransport`` each, a ``task.Clock``, the journal
written on this thread with ``sync_journal never`` and no fsync): a
consumer and a producer, in lock-step, one item at a time.  With
``--mode waiting`` the consumer's ``get q/t=100`` comes first, finds the
queue empty and waits, and the producer's ``set`` hands it the item; with
``--mode plain`` the ``set`` comes first and the consumer's plain ``get``
takes it.  Either way one set and one get per item; what differs is the
wait.  ``--mode none`` sets the server up and feeds nothing, for the
count of a run of nothing.

For instruction counts, which a loaded machine does not change::

    perf stat -e instructions python -m benchmarks.handoff --mode waiting
    perf stat -e instructions python -m benchmarks.handoff --mode plain
    perf stat -e instructions python -m benchmarks.handoff --mode none

(each count less that of ``none``, over ``--items``, is the count per
item).  Without ``perf`` it prints microseconds per item, the best of
``--repeat`` runs of each mode, alternating.
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.testing import StringTransport

from benchmarks.inprocess import Bench
from erq.protocol import QueueProtocol

DATA = b"x" * 64
SET = b"set handoff 0 0 %d\r\n%s\r\n" % (len(DATA), DATA)
WAITING_GET = b"get handoff/t=100\r\n"
PLAIN_GET = b"get handoff\r\n"
#: What the consumer must have been answered, for every item, by mode.
ANSWERS = {
    mode: b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (get[4:-2], len(DATA), DATA)
    for mode, get in (("waiting", WAITING_GET), ("plain", PLAIN_GET))
}


class Pair:
    """A server with a producer and a consumer connection."""

    def __init__(self) -> None:
        self.bench = Bench("never")
        self.producer = self.bench.protocol
        self.produced = self.bench.transport
        self.consumed = StringTransport()
        self.consumer = QueueProtocol(self.bench.service)
        self.consumer.makeConnection(self.consumed)

    def run(self, mode: str, items: int) -> None:
        produce = self.producer.dataReceived
        consume = self.consumer.dataReceived
        produced = self.produced
        consumed = self.consumed
        answer = ANSWERS[mode]
        for _ in range(items):
            if mode == "waiting":
                consume(WAITING_GET)
                produce(SET)
            else:
                produce(SET)
                consume(PLAIN_GET)
            produced.clear()
            if consumed.value() != answer:
                raise AssertionError(f"unexpected reply {consumed.value()!r}")
            consumed.clear()

    def close(self) -> None:
        self.consumer.connectionLost()
        self.bench.close()


def per_item(mode: str, items: int) -> float:
    pair = Pair()
    try:
        pair.run(mode, 100)
        began = time.perf_counter()
        pair.run(mode, items)
        return (time.perf_counter() - began) / items * 1e6
    finally:
        pair.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("waiting", "plain", "none"))
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args(argv)
    if options.mode is not None:
        pair = Pair()
        pair.run("plain", 100)
        pair.run("waiting", 100)
        if options.mode != "none":
            pair.run(options.mode, options.items)
        pair.close()
        return
    runs: dict[str, list[float]] = {"waiting": [], "plain": []}
    for _ in range(options.repeat):
        for mode, times in runs.items():
            times.append(per_item(mode, options.items))
    waiting = min(runs["waiting"])
    plain = min(runs["plain"])
    print(
        f"best of {options.repeat}, {options.items} items in lock-step: "
        f"waiting get {waiting:.2f} us/item, set then plain get "
        f"{plain:.2f} us/item, {waiting / plain:.2f}x"
    )


if __name__ == "__main__":
    main()
