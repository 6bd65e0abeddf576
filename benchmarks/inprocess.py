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
    python -m benchmarks.inprocess --shallow        # never deeper than a batch
    python -m benchmarks.inprocess --lockstep       # one request per read

``--loop erq`` (or ``bare``) runs one server once, untimed, for counting
instructions: ``perf stat -e instructions python -m benchmarks.inprocess
--loop erq``, against the same with ``--loop bare`` and a run of nothing.
Where ``perf`` has no counters (a virtual machine), ``valgrind
--tool=callgrind`` counts them as well; two runs that differ only in
``--batches`` give the instructions per item without the start-up.

``--lockstep`` feeds the same requests one per read, as a lock-step client
sends them (and a linger's worth of time passes every 50 requests, about a
lock-step client's pace), instead of in pipelined batches.

It prints microseconds per item, the best of ``--repeat`` runs (the machine
is noisy; the best run is the one least disturbed), beside the baseline
measured in the same runs, alternating: the protocol of
``benchmarks/bare.py``, which only appends and pops, fed the same bytes.

``--memory`` measures instead what queued items cost in memory: a queue
without a journal and one with a journal (``max_memory_size`` large
enough for them all) each filled with ``--items`` items of 64 bytes
through ``Queue.put``, then drained, each in a fresh process.  It prints
the bytes an item costs beyond its data, as tracemalloc sees them and as
the anonymous RSS grows (``RssAnon`` of /proc/self/status), against the
baseline of the same items held as a plain list of bytes objects (the
least a Python server could hold them in), and microseconds per put and
per get::

    python -m benchmarks.inprocess --memory --items 1000000
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from benchmarks.bare import Bare
from erq.journal import LINGER, FileOps, JournalWriter
from erq.protocol import QueueProtocol
from erq.queue import Queue
from erq.service import QueueService

BATCH = 100
DATA = b"x" * 64
SETS = (b"set inproc 0 0 %d\r\n%s\r\n" % (len(DATA), DATA)) * BATCH
GETS = b"get inproc\r\n" * BATCH
#: One set and one get, as a lock-step client sends each in a read of its own.
SET = SETS[: len(SETS) // BATCH]
GET = GETS[: len(GETS) // BATCH]
#: Lock-step requests between two lingers' worth of time.
PACE = 50


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
    def __init__(self, sync: str, max_memory_size: int | None = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="erq-inprocess-")
        self.clock = _Reactor()
        service = QueueService(reactor=self.clock, data_dir=self.directory)
        policy: Any = sync
        service.config = service.config.with_overrides(
            sync_journal=policy, max_memory_size=max_memory_size
        )
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

    def feed_lockstep(self, request: bytes, count: int) -> None:
        protocol = self.protocol
        transport = self.transport
        for index in range(count):
            protocol.dataReceived(request)
            transport.clear()
            if index % PACE == PACE - 1:
                self.clock.advance(LINGER)

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

    def feed_lockstep(self, request: bytes, count: int) -> None:
        protocol = self.protocol
        transport = self.transport
        for _ in range(count):
            protocol.dataReceived(request)
            transport.clear()

    def close(self) -> None:
        pass


class LockStep:
    """A server fed one request per read instead of batches: ``feed`` of
    ``batches`` batches sends as many requests, each on its own."""

    def __init__(self, bench: Bench | BareBench) -> None:
        self.bench = bench

    def feed(self, batch: bytes, batches: int) -> None:
        request = SET if batch is SETS else GET
        self.bench.feed_lockstep(request, batches * BATCH)

    def close(self) -> None:
        self.bench.close()


def per_item(
    bench: Bench | BareBench | LockStep, batches: int, shallow: bool = False
) -> tuple[float, float]:
    """Microseconds per set and per get, on a fresh server: all the sets,
    then all the gets (a queue ``batches * 100`` deep), or with
    ``shallow``, a batch of gets after each batch of sets."""
    try:
        # Every line known, every code path warm.
        bench.feed(SETS, 1)
        bench.feed(GETS, 1)
        if shallow:
            sets = gets = 0.0
            clock = time.perf_counter
            for _ in range(batches):
                began = clock()
                bench.feed(SETS, 1)
                middle = clock()
                bench.feed(GETS, 1)
                sets += middle - began
                gets += clock() - middle
            items = batches * BATCH
            return sets / items * 1e6, gets / items * 1e6
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


def rss_anon() -> int:
    """Anonymous resident memory of this process, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def fill_and_drain(kind: str, count: int, trace: bool) -> dict[str, float]:
    """One measurement, in this process: ``count`` 64-byte items into one
    queue of ``kind`` (``list``: the baseline, ``memory``: a queue without
    a journal, ``journal``: with one), then out again."""
    datas = (b"%064d" % i for i in range(count))
    queue: Any = None
    bench: Bench | None = None
    if kind == "journal":
        # Every item in memory.
        bench = Bench("never", max_memory_size=64 * count + (64 << 20))
        queue = bench.service.create_queue("inproc")
    elif kind == "memory":
        queue = Queue("inproc", Clock())
    gc.collect()
    if trace:
        tracemalloc.start()
    traced = tracemalloc.get_traced_memory()[0]
    rss = rss_anon()
    began = time.perf_counter()
    if queue is None:
        held = list(datas)
    else:
        put = queue.put
        for index, data in enumerate(datas):
            put(data)
            if bench is not None and index % 1000 == 999:
                bench.clock.advance(LINGER)
        if bench is not None:
            bench.clock.advance(LINGER)
    filled = time.perf_counter() - began
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced
    rss = rss_anon() - rss
    if trace:
        tracemalloc.stop()
    began = time.perf_counter()
    if queue is None:
        taken = len(held)
        held.clear()
    else:
        taken = 0
        get = queue.get
        while get() is not None:
            taken += 1
    drained = time.perf_counter() - began
    if taken != count:
        raise RuntimeError(f"{taken} items out of {count}")
    if bench is not None:
        bench.close()
    return {
        "traced": traced / count - 64,
        "rss": rss / count - 64,
        "rss_mib": rss / (1 << 20),
        "put": filled / count * 1e6,
        "get": drained / count * 1e6,
    }


def memory(count: int) -> None:
    print(
        f"{count} items of 64 bytes; bytes an item beyond its data "
        "(tracemalloc, RssAnon growth), us per put and get; "
        "baseline: a list of bytes"
    )
    for kind in ("list", "memory", "journal"):
        figures: dict[str, float] = {}
        for trace in (False, True):
            command = [sys.executable, "-m", "benchmarks.inprocess", "--memory-one"]
            command += [kind, "--items", str(count)] + (["--trace"] if trace else [])
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            one = json.loads(out.stdout)
            # Timings from the run without tracemalloc, which slows it.
            figures.update(one if not trace else {"traced": one["traced"]})
        print(
            f"{kind:8}: {figures['traced']:6.1f} B traced, {figures['rss']:6.1f} B "
            f"RSS (+{figures['rss_mib']:.0f} MiB), put {figures['put']:.2f} us, "
            f"get {figures['get']:.2f} us"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sync", choices=("always", "never"), default="always")
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=("set", "get"))
    parser.add_argument("--shallow", action="store_true")
    parser.add_argument(
        "--lockstep", action="store_true", help="one request per read, not batches"
    )
    parser.add_argument(
        "--loop",
        choices=("erq", "bare"),
        help="one run of one server only, untimed (for instruction counts)",
    )
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--memory-one", choices=("list", "memory", "journal"))
    parser.add_argument("--trace", action="store_true")
    options = parser.parse_args(argv)
    if options.memory_one:
        figures = fill_and_drain(options.memory_one, options.items, options.trace)
        print(json.dumps(figures))
        return
    if options.memory:
        memory(options.items)
        return
    if options.profile:
        profile(options.sync, options.batches, options.profile)
        return

    def serve(server: Bench | BareBench) -> Bench | BareBench | LockStep:
        return LockStep(server) if options.lockstep else server

    if options.loop:
        server = Bench(options.sync) if options.loop == "erq" else BareBench()
        per_item(serve(server), options.batches, options.shallow)
        return
    runs = []
    bare_runs = []
    for _ in range(options.repeat):
        bench = serve(Bench(options.sync))
        runs.append(per_item(bench, options.batches, options.shallow))
        bare_runs.append(per_item(serve(BareBench()), options.batches, options.shallow))
    depth = "one batch deep" if options.shallow else "all sets, then all gets"
    how = "one request per read" if options.lockstep else "pipelined"
    print(
        f"best of {options.repeat}, {options.batches} x {BATCH} {how} "
        f"({depth}), erq with sync {options.sync}; baseline: benchmarks/bare.py"
    )
    for index, name in enumerate(("set", "get")):
        erq = min(run[index] for run in runs)
        bare = min(run[index] for run in bare_runs)
        print(
            f"{name}: erq {erq:.2f} us/item, bare {bare:.2f} us/item, {erq / bare:.1f}x"
        )


if __name__ == "__main__":
    main()
