"""Doubles and helpers for the journal's tests: a clock that takes calls
from a thread, thread pools that run work at once or when told, file
operations that count or fail, and a test case with writers and replay."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from erq import journal as journal_module
from erq.journal import (
    FileOps,
    Journal,
    JournalWriter,
)
from erq.queue import Item

reactor: Any = _reactor


class FakeReactor(Clock):
    """A clock that also takes calls "from a thread" (run at once)."""

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)


class SyncPool:
    """A thread pool that runs the work at once, on the calling thread."""

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: object,
    ) -> None:
        try:
            result: object = func(*args)
        except Exception:
            onResult(False, Failure())
        else:
            onResult(True, result)


class ManualPool:
    """A thread pool whose work runs only when the test says so."""

    def __init__(self) -> None:
        self.work: deque[tuple[Callable[..., object], tuple[object, ...]]] = deque()

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: object,
    ) -> None:
        def run() -> None:
            try:
                result: object = func(*args)
            except Exception:
                onResult(False, Failure())
            else:
                onResult(True, result)

        self.work.append((run, ()))

    def run_one(self) -> None:
        run, _ = self.work.popleft()
        run()

    def run_all(self) -> None:
        while self.work:
            self.run_one()


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
        return JournalWriter(
            self.clock,
            pool if pool is not None else SyncPool(),  # type: ignore[arg-type]
            file_ops=ops,
        )

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
