"""The journal writer's thread: a thread of its own, which runs the jobs
handed to it in order (and the C engine's batches between them), or a
thread pool passed in.

A thread of its own is cheaper to wake than a pool job: handing a job over
is one put on a C queue.  It is a daemon, so that a writer stuck on a dead
disk does not keep the process alive once the reactor has stopped; a clean
stop of the reactor waits for the writer's last batch (for at most
``SHUTDOWN_TIMEOUT``) through a "before shutdown" trigger that lives as
long as the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import TYPE_CHECKING, Protocol, cast

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from erq.journal.engine import _Engine
from erq.journal.files import _SegmentFile

if TYPE_CHECKING:
    from erq.journal.engine import Engine

# The namespace of the whole package, as before it was split.
_log = Logger(namespace="erq.journal")

#: Longest the reactor waits at shutdown for the writer's last batch; past
#: it the process stops without it (as after a crash: replay recovers).
SHUTDOWN_TIMEOUT = 60.0


class _Pool(Protocol):
    """What the writer needs of a thread pool (a ThreadPool, or a test
    double)."""

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object] | None,
        func: Callable[..., object],
        *args: object,
    ) -> None: ...


#: A job for the writer thread: what to call with the outcome (on the thread),
#: the function and its arguments.
_Job = tuple[
    Callable[[bool, object], object], Callable[..., object], tuple[object, ...]
]


def _serve(jobs: SimpleQueue[_Job | None], engine: Engine | None) -> None:
    """The writer thread's loop, when the writer runs its own thread: the jobs in
    the order they came, until ``None``.  Handing a job over is one put on a
    C queue, instead of a trip through the pool's coordinator.  With an
    engine, the thread runs the engine's batches until a job is put (and
    the engine interrupted)."""
    while True:
        if engine is not None:
            engine.serve()
        job = jobs.get()
        if job is None:
            return
        on_result, func, args = job
        try:
            result = func(*args)
            ok = True
        except BaseException:
            result = Failure()
            ok = False
        try:
            on_result(ok, result)
        except BaseException:
            _log.failure("journal writer thread: reporting a job failed")


class _WriterThread:
    """Where the writer's jobs run: the ``pool`` it was given (the caller's
    to start and stop), or else its ``own`` thread, from ``start`` to
    ``stop``; and the segment files open there."""

    def __init__(self, reactor: object, pool: _Pool | None) -> None:
        self._reactor = reactor
        self.pool = pool
        #: The thread of its own, while it runs.
        self.own: threading.Thread | None = None
        # That thread's jobs.
        self._jobs: SimpleQueue[_Job | None] | None = None
        # The C engine that thread serves between jobs.
        self._engine: _Engine | None = None
        #: What has the reactor wait for the writer as it stops.
        self.shutdown_trigger: object | None = None
        #: The segment files open on the thread; only the thread touches
        #: this set.
        self.files: set[_SegmentFile] = set()

    def start(self, engine: _Engine | None, stop: Callable[[], Deferred[None]]) -> None:
        """Start a thread of its own, serving ``engine`` between jobs; the
        reactor, as it stops, calls ``stop`` (the writer's) and waits for
        it."""
        self._jobs = SimpleQueue()
        self._engine = engine
        self.own = threading.Thread(
            target=_serve, args=(self._jobs, engine), name="erq-journal", daemon=True
        )
        self.own.start()
        if IReactorCore.providedBy(self._reactor) and self.shutdown_trigger is None:
            core = cast(IReactorCore, self._reactor)
            self.shutdown_trigger = core.addSystemEventTrigger(
                "before", "shutdown", self._shutdown, stop
            )

    def run(
        self,
        on_result: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: object,
    ) -> None:
        """Run ``func`` on the writer thread, then ``on_result`` there too."""
        jobs = self._jobs
        if jobs is not None:
            jobs.put((on_result, func, args))
            if self._engine is not None:
                # Out of the engine, to the job.
                self._engine.interrupt()
        else:
            assert self.pool is not None
            self.pool.callInThreadWithCallback(on_result, func, *args)

    def stop(self) -> bool:
        """End the thread of its own once it has run the jobs before;
        whether there was one (whose engine the caller then interrupts, to
        let it end)."""
        jobs = self._jobs
        self.own = self._jobs = self._engine = None
        if self.shutdown_trigger is not None:
            core = cast(IReactorCore, self._reactor)
            core.removeSystemEventTrigger(self.shutdown_trigger)
            self.shutdown_trigger = None
        if jobs is None:
            return False
        jobs.put(None)
        return True

    def _shutdown(self, stop: Callable[[], Deferred[None]]) -> Deferred[None]:
        self.shutdown_trigger = None
        stopped: Deferred[None] = Deferred()
        stop().chainDeferred(stopped)

        def gave_up(failure: Failure) -> None:
            failure.trap(TimeoutError)
            _log.error(
                "journal writer did not finish within {seconds} s; stopping without it",
                seconds=SHUTDOWN_TIMEOUT,
            )

        clock = cast(IReactorTime, self._reactor)
        return stopped.addTimeout(SHUTDOWN_TIMEOUT, clock).addErrback(gave_up)
