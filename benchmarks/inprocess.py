"""erq's own cost per request, without sockets, processes or threads.

One ``QueueProtocol`` on a ``StringTransport`` is fed pipelined batches of
100 sets, then 100 gets, of one journaled queue; the journal writes on this
thread (no fsync), and a ``task.Clock`` stands in for the reactor.  What is
left is the Python that parsing, the queue and the journal cost per item:
the part of a request that erq, not Twisted or the kernel, decides.

Run from the repository root::

    python -m benchmarks.inprocess                  # sync_journal always
    python -m benchmarks.inprocess --sync never
    python -m benchmarks.inprocess --profile get    # cProfile of the gets

It prints microseconds per item, the best of ``--repeat`` runs (the machine
is noisy; the best run is the one least disturbed), beside the baseline
measured in the same runs, alternating: the protocol of
``benchmarks/bare.py``, which only appends and pops, fed the same bytes.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from benchmarks.bare import Bare
from erq.journal import LINGER, FileOps, JournalWriter
from erq.protocol import QueueProtocol
from erq.service import QueueService

BATCH = 100
DATA = b"x" * 64
SETS = (b"set inproc 0 0 %d\r\n%s\r\n" % (len(DATA), DATA)) * BATCH
GETS = b"get inproc\r\n" * BATCH


class _Reactor(Clock):
    """A clock that also takes calls "from a thread", at once."""

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)


class _Pool:
    """Runs the writer's jobs at once, on this thread."""

    def callInThreadWithCallback(
        self,
        on_result: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: object,
    ) -> None:
        try:
            result = func(*args)
        except Exception:
            on_result(False, Failure())
        else:
            on_result(True, result)


class _NoSync(FileOps):
    """The disk's part is not what is measured here."""

    def fsync(self, fd: int) -> None:
        pass


class Bench:
    def __init__(self, sync: str) -> None:
        self.directory = tempfile.mkdtemp(prefix="erq-inprocess-")
        self.clock = _Reactor()
        service = QueueService(reactor=self.clock, data_dir=self.directory)
        policy: Any = sync
        service.config = service.config.with_overrides(sync_journal=policy)
        reactor: Any = self.clock
        pool: Any = _Pool()
        service.writer = JournalWriter(reactor, pool, file_ops=_NoSync(), linger=LINGER)
        service.startService()
        self.service = service
        self.transport = StringTransport()
        self.protocol = QueueProtocol(service)
        self.protocol.makeConnection(self.transport)

    def feed(self, batch: bytes, batches: int) -> None:
        for _ in range(batches):
            self.protocol.dataReceived(batch)
            # The end of the reactor's turn, and a linger's worth of time.
            self.clock.advance(LINGER)
            self.transport.clear()

    def close(self) -> None:
        self.service.stopService()
        self.clock.advance(1)
        shutil.rmtree(self.directory, ignore_errors=True)


class BareBench:
    """The baseline: the bare reference protocol on the same transport."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.protocol = Bare()
        # Not makeConnection: its connectionMade sets a socket option.
        self.protocol.transport = self.transport

    def feed(self, batch: bytes, batches: int) -> None:
        for _ in range(batches):
            self.protocol.dataReceived(batch)
            self.transport.clear()

    def close(self) -> None:
        pass


def per_item(bench: Bench | BareBench, batches: int) -> tuple[float, float]:
    """Microseconds per set and per get, on a fresh server."""
    try:
        # Every line known, every code path warm.
        bench.feed(SETS, 1)
        bench.feed(GETS, 1)
        began = time.perf_counter()
        bench.feed(SETS, batches)
        sets = time.perf_counter() - began
        began = time.perf_counter()
        bench.feed(GETS, batches)
        gets = time.perf_counter() - began
    finally:
        bench.close()
    items = batches * BATCH
    return sets / items * 1e6, gets / items * 1e6


def profile(sync: str, batches: int, what: str) -> None:
    bench = Bench(sync)
    try:
        bench.feed(SETS, batches)
        profiler = cProfile.Profile()
        profiler.enable()
        bench.feed(SETS if what == "set" else GETS, batches)
        profiler.disable()
    finally:
        bench.close()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sync", choices=("always", "never"), default="always")
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=("set", "get"))
    options = parser.parse_args(argv)
    if options.profile:
        profile(options.sync, options.batches, options.profile)
        return
    runs = []
    bare_runs = []
    for _ in range(options.repeat):
        runs.append(per_item(Bench(options.sync), options.batches))
        bare_runs.append(per_item(BareBench(), options.batches))
    print(
        f"best of {options.repeat}, {options.batches} x {BATCH} pipelined, "
        f"erq with sync {options.sync}; baseline: benchmarks/bare.py"
    )
    for index, name in enumerate(("set", "get")):
        erq = min(run[index] for run in runs)
        bare = min(run[index] for run in bare_runs)
        print(
            f"{name}: erq {erq:.2f} us/item, bare {bare:.2f} us/item, {erq / bare:.1f}x"
        )


if __name__ == "__main__":
    main()
