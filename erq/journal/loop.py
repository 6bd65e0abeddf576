"""The writer thread's Python loop: one of the two ways the thread runs a
batch (the C engine of ``erq.journal.engine`` is the other).  It runs any
step, one batch at a time, and hands the finished batch back through a
one-slot mailbox."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol, cast

from twisted.logger import Logger
from twisted.python.failure import Failure

from erq.journal.files import FileOps, _awaited, _Chunk, _run_batch, _SegmentFile

# The namespace of the whole package, as before it was split.
_log = Logger(namespace="erq.journal")

#: A batch taken back from the thread, with the failure of a crash there.
_Done = tuple[list[_Chunk], Failure | None]


class _ThreadCalls(Protocol):
    def callFromThread(
        self, callable: Callable[..., object], *args: object
    ) -> None: ...


class _PythonLoop:
    """The writer thread's Python loop as a `_Runner`: one batch at a time,
    of any steps.

    The thread leaves the finished batch in ``finished`` and wakes the
    reactor only when something waits for it; ``waiting`` is the reactor
    saying that it does.  Each side writes its own field, then reads the
    other's, so one of the two always sees the other (the GIL orders
    them)."""

    def __init__(
        self,
        reactor: _ThreadCalls,
        on_thread: Callable[..., None],
        files: set[_SegmentFile],
        file_ops: Callable[[], FileOps],
        collect: Callable[[_PythonLoop], object],
    ) -> None:
        self._reactor = reactor
        self._on_thread = on_thread
        self._files = files
        self._file_ops = file_ops
        # What the reactor calls, with this loop, to take its batch back.
        self._collect = collect
        # The batch on the thread, if any.
        self.in_flight: list[_Chunk] | None = None
        # That batch once the thread has finished it.
        self.finished: _Done | None = None
        # The reactor waits for the batch in flight.
        self.waiting = False

    def busy(self) -> bool:
        return self.in_flight is not None

    def can_run(self, batch: list[_Chunk]) -> bool:
        return True

    def submit(self, batch: list[_Chunk], hurry: bool) -> None:
        self.in_flight = batch
        self._on_thread(
            partial(self._ran, batch, hurry),
            _run_batch,
            batch,
            self._file_ops(),
            self._files,
        )

    def _ran(self, batch: list[_Chunk], hurry: bool, ok: bool, result: object) -> None:
        """On the writer thread, after the batch: leave it for the reactor,
        and wake the reactor only when something waits for it.  Otherwise the
        reactor takes it back with its next record: one thread hop per
        batch instead of two."""
        self.finished = (batch, None if ok else cast(Failure, result))
        if self.waiting or hurry or not ok or _awaited(batch):
            self._reactor.callFromThread(self._collect, self)

    def take_back(self, wake: bool) -> list[_Done]:
        if self.finished is None:
            if not wake:
                return []
            self.waiting = True
            if self.finished is None:
                return []
        done = self.finished
        self.finished = None
        self.in_flight = None
        self.waiting = False
        return [done]
