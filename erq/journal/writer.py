"""The journal writer: one thread that writes the records of every queue
of a server, in the order the reactor made them, with group commit.

Writing
-------
One ``JournalWriter`` serves every queue of a server.  The reactor encodes
records and appends them to the pending batch; when no batch is in flight,
the batch goes to the writer's single thread at once, and while one batch is
written and fsynced the next one fills (group commit: one thread hop and one
fsync per file per batch).  The thread touches files only.

The thread leaves a finished batch for the reactor and wakes it (with
``callFromThread``) only when something waits for the batch: a durable add,
a read, a close, a failure to retry, or the reactor itself, which has more
to send or is stopping.  Otherwise the reactor takes the batch back, and
runs its completions in order, when it next journals something (before it
looks at what is in flight).  So lock-step requests cost one wake-up of the
thread each, not also one of the reactor.  When the writer runs its own thread,
its one thread runs a loop fed by a ``SimpleQueue``, cheaper to wake than a
pool job.

Backlog
-------
The writer counts the bytes of items journaled and not yet written
(``backlog``).  When a connection stores an item past ``max_backlog`` the
protocol stops reading it and asks ``when_drained`` to be told once half is
written; while anyone waits for that, the thread and the engine wake the
reactor after each batch, as they would for a durable add.  So a disk slower
than the producers bounds the server's memory instead of filling it.

The thread's file work is in ``erq.journal.files``; the C engine that takes
plain appends and fsyncs off the Python loop is in ``erq.journal.engine``.
"""

from __future__ import annotations

import enum
import os
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from queue import SimpleQueue
from typing import Protocol, cast

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorCore,
    IReactorFDSet,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from erq.config import MiB
from erq.journal.engine import Engine, _Engine, _engine_steps, _EngineDone
from erq.journal.files import (
    _LINGER_BYTES,
    FileOps,
    _awaited,
    _Chunk,
    _close_all,
    _run_batch,
    _SegmentFile,
    _Sync,
    _Write,
)

# The namespace of the whole package, as before it was split.
_log = Logger(namespace="erq.journal")

#: Bytes of items a writer may have journaled and not yet written before
#: connections that store more are paused (see ``JournalWriter.backlog``).
MAX_BACKLOG = 16 * MiB
#: How long a server lets records that nothing waits for gather before
#: handing them to the writer thread: a couple of milliseconds turn one
#: thread wake-up per request into one per hundreds of requests, and widen
#: by no more than that the window in which a crash of the process (not of
#: the machine) loses what ``sync_journal = "never"`` acknowledged.
LINGER = 0.002
#: Longest the reactor waits at shutdown for the writer's last batch; past
#: it the process stops without it (as after a crash: replay recovers).
SHUTDOWN_TIMEOUT = 60.0


def _cancel(call: IDelayedCall | None) -> None:
    """Cancel a delayed call that may be pending, or gone, or absent."""
    if call is not None and call.active():
        call.cancel()


class _Reactor(Protocol):
    """What the writer needs of its reactor."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object
    ) -> IDelayedCall: ...

    def callFromThread(
        self, callable: Callable[..., object], *args: object
    ) -> None: ...


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


class _Life(enum.Enum):
    """Where a writer is in its life.

    ==========  ===============================  ==========================
    state       records journaled meanwhile      leaves for
    ==========  ===============================  ==========================
    RUNNING     written (the thread starts       STOPPING on ``stop``
                with the first batch)
    STOPPING    written: the last batches        CLOSING once nothing is
                                                 pending or on the thread
    CLOSING     held for a restart, else         STOPPED when the files
                refused                          are closed (RUNNING again
                                                 if ``start`` came meanwhile)
    STOPPED     refused                          RUNNING on ``start``
    ==========  ===============================  ==========================
    """

    RUNNING = "running"
    STOPPING = "stopping"
    CLOSING = "closing"
    STOPPED = "stopped"


# One class, longer than the others: it is the hand-off between the reactor
# and the writer's thread, one state machine (where each batch is, what may
# be sent, what is taken back) whose every transition reads and changes the
# same few fields.  Cut into parts, a reader would have to hold them all at
# once to see that no batch is forgotten; the thread's file work and the C
# engine's side are already apart (``erq.journal.files``,
# ``erq.journal.engine``).
class JournalWriter:
    """Writes the journals of every queue of a server on one thread, with
    group commit.  Records reach disk in exactly the order the reactor made
    them.

    The hand-off
    ------------
    A batch is in one of three places: pending on the reactor
    (``_pending``), on the thread's Python loop (``_in_flight``: at most
    one), or in the C engine (``_engine_batches``: any number, oldest
    first).  Which of them may take the next batch is decided in one place,
    ``_send``:

    - while a batch is on the Python loop, nothing else goes anywhere;
    - while the engine has batches, only a batch the engine can run joins
      them; anything else waits until the engine's batches are back;
    - otherwise the batch goes to the engine if it can run it, else to the
      Python loop.

    Finished batches come back in the order they were sent, one at a time:
    while one batch's completions run (``_completing``), no other batch is
    taken back and nothing is sent (what the completions journal joins the
    next batch).  The one exception is decided before the completions run:
    when something waits in what is pending, it is sent first, so that the
    thread writes it while the reactor answers the batch that came back.
    After the completions, whatever finished meanwhile is taken back, then
    what is pending is sent.  A batch is so never forgotten: it leaves
    ``_in_flight`` or ``_engine_batches`` only in ``_collect`` or ``_reap``,
    which run its completions.
    """

    def __init__(
        self,
        reactor: _Reactor,
        pool: _Pool | None = None,
        file_ops: FileOps | None = None,
        retry_delay: float = 1.0,
        linger: float = 0.0,
        engine: _Engine | None = None,
    ) -> None:
        self.reactor = reactor
        # Without a pool the writer runs its own thread (see ``start``).
        self._pool = pool
        self._thread: threading.Thread | None = None
        self._shutdown_trigger: object | None = None
        self.file_ops = file_ops if file_ops is not None else FileOps()
        self.retry_delay = retry_delay
        #: How long records that nothing waits for (removals, adds that are
        #: not synced) may gather on the reactor before they go to the
        #: thread.  When it is not zero, records that are waited for (a
        #: durable add, a read-back) wait for the end of the reactor's turn,
        #: so that everything every connection asked for in one turn shares
        #: a batch.  Zero sends every record at once.
        self.linger = linger
        self._linger_call: IDelayedCall | None = None
        # Something pending is waited for: send it at the end of the turn.
        self._urgent = False
        # The timer above is set for the end of the turn.
        self._linger_urgent = False
        # The timer went off: what is pending goes now.
        self._released = False
        self._pending: list[_Chunk] = []
        # Something new to write; a retry alone waits for the retry timer or
        # the next record, so a full disk is not hammered in a loop.
        self._fresh = False
        self._retry_call: IDelayedCall | None = None
        # Open segment files; only the writer thread touches this set.
        self._files: set[_SegmentFile] = set()
        self._life = _Life.RUNNING
        # ``start`` came while stopping: start again once the files are
        # closed.
        self._restart = False
        self._stop_waiters: list[Deferred[None]] = []
        # The batch on the Python loop, if any.
        self._in_flight: list[_Chunk] | None = None
        # That batch once the thread has finished it, with the failure of a
        # crash: set on the thread, taken back on the reactor (``_collect``).
        self._finished: tuple[list[_Chunk], Failure | None] | None = None
        # The reactor waits for the batch in flight: the thread must wake it.
        self._waiting = False
        # A batch's completions are running (see "The hand-off").
        self._completing = False
        # The writer thread's jobs, while it runs ``_serve`` (own thread).
        self._jobs: SimpleQueue[_Job | None] | None = None
        #: Batches handed to the thread so far.
        self.batches = 0
        # The C engine, while the thread serves it (or one passed in), and
        # the batches it has, oldest first.
        self._engine: _Engine | None = engine
        self._engine_done: _EngineDone | None = None
        self._engine_batches: deque[list[_Chunk]] = deque()
        #: Batches the engine ran.
        self.engine_batches = 0
        #: Bytes of items journaled and not yet written.  Past
        #: ``max_backlog`` (the disk is slower than what comes in),
        #: connections that store more stop being read until it is down to
        #: half (see ``when_drained``): memory stays bounded however fast
        #: producers are.
        self.backlog = 0
        self.max_backlog = MAX_BACKLOG
        self._drain_waiters: list[Callable[[], object]] = []
        self._watching = False

    # -- life ----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (a pool passed in is the caller's to
        start).  A writer can be started again after ``stop``, even before
        the stop has finished."""
        life = self._life
        if life is _Life.STOPPING or life is _Life.CLOSING:
            # What is journaled meanwhile waits for the files to be closed.
            self._restart = True
            return
        self._life = _Life.RUNNING
        if self._pool is not None or self._thread is not None:
            return
        # The thread is a daemon: a writer stuck on a dead disk must not keep
        # the process alive once the reactor has stopped.  A clean stop waits
        # for it through the shutdown trigger below.
        self._jobs = SimpleQueue()
        self._start_engine()
        self._thread = threading.Thread(
            target=_serve,
            args=(self._jobs, self._engine),
            name="erq-journal",
            daemon=True,
        )
        self._thread.start()
        # The reactor waits for the last batch before it stops.
        if IReactorCore.providedBy(self.reactor) and self._shutdown_trigger is None:
            core = cast(IReactorCore, self.reactor)
            self._shutdown_trigger = core.addSystemEventTrigger(
                "before", "shutdown", self._shutdown
            )

    def _start_engine(self) -> None:
        # Only with the real file operations (tests that fake them see every
        # step) and a reactor that can watch the eventfd.
        if (
            Engine is None
            or type(self.file_ops) is not FileOps
            or not IReactorFDSet.providedBy(self.reactor)
        ):
            return
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._engine = Engine(fd)
        self._engine_done = _EngineDone(self, fd)
        cast(IReactorFDSet, self.reactor).addReader(self._engine_done)

    def _stop_engine(self) -> None:
        done = self._engine_done
        if self._engine is None or done is None:
            return
        self._engine.interrupt()
        self._engine = self._engine_done = None
        cast(IReactorFDSet, self.reactor).removeReader(done)
        os.close(done.fd)

    @property
    def uses_engine(self) -> bool:
        """Whether appends and fsyncs run in the C engine."""
        return self._engine is not None

    def _shutdown(self) -> Deferred[None]:
        self._shutdown_trigger = None
        stopped: Deferred[None] = Deferred()
        self.stop().chainDeferred(stopped)

        def gave_up(failure: Failure) -> None:
            failure.trap(TimeoutError)
            _log.error(
                "journal writer did not finish within {seconds} s; stopping without it",
                seconds=SHUTDOWN_TIMEOUT,
            )

        clock = cast(IReactorTime, self.reactor)
        return stopped.addTimeout(SHUTDOWN_TIMEOUT, clock).addErrback(gave_up)

    def stop(self) -> Deferred[None]:
        """Write what is pending, sync and close every file, stop the
        thread.  Records that arrive after this are refused, until
        ``start``."""
        d: Deferred[None] = Deferred()
        self._restart = False
        if self._life is _Life.STOPPED:
            d.callback(None)
            return d
        self._stop_waiters.append(d)
        if self._life is _Life.RUNNING:
            self._life = _Life.STOPPING
        self._cancel_retry()
        self._fresh = True
        self._kick()
        self._maybe_stopped()
        return d

    def _maybe_stopped(self) -> None:
        if self._life is not _Life.STOPPING or self._completing:
            return
        if self._in_flight is not None or self._engine_batches:
            # Taking the batches back comes here again.
            self._land()
            return
        if self._pending:
            self._fresh = True
            self._kick()
            return
        self._life = _Life.CLOSING
        if self._pool is None and self._jobs is None:
            # The thread never started: no file is open.
            self._closed(_close_all(self._files, self.file_ops))
            return
        self._on_thread(self._closed_on_thread, _close_all, self._files, self.file_ops)

    def _closed_on_thread(self, ok: bool, result: object) -> None:
        self.reactor.callFromThread(self._closed, result)

    def _closed(self, result: object) -> None:
        _cancel(self._linger_call)
        self._linger_call = None
        if isinstance(result, Failure):
            _log.failure("journal writer could not close its files", result)
        elif result:
            _log.error(
                "journal writer: closing files failed: {errors}",
                errors="; ".join(cast(list[str], result)),
            )
        self._life = _Life.STOPPED
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None
            self._stop_engine()
        self._thread = None
        if self._shutdown_trigger is not None:
            core = cast(IReactorCore, self.reactor)
            core.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        waiters = self._stop_waiters
        self._stop_waiters = []
        for waiter in waiters:
            waiter.callback(None)
        if self._restart:
            self._restart = False
            self.start()
        # Anything journaled while the files were being closed is refused,
        # unless the writer started again.
        self._fresh = True
        self._kick()

    # -- what journals call ---------------------------------------------------

    def enqueue(self, chunk: _Chunk) -> None:
        """A journal's share of the next batch; it fills until sent."""
        self._pending.append(chunk)

    def wake(self) -> None:
        """Something new is pending: send it when it may go."""
        self._fresh = True
        self._kick()

    def urge(self) -> None:
        """Something waits for what is pending (a durable add, a read, a
        close): send it by the end of this turn of the reactor."""
        if not self._pending:
            return
        self._urgent = True
        self._fresh = True
        self._kick()

    # -- sending ---------------------------------------------------------------

    def _lingered(self) -> None:
        self._linger_call = None
        self._released = True
        self._fresh = True
        self._kick()

    def _kick(self) -> None:
        """Send what is pending if it may go now; during a batch's
        completions it goes once they are done."""
        if not self._completing:
            self._send()

    def _send(self) -> None:
        if not self._pending or not self._fresh:
            return
        life = self._life
        if not self._released and life is _Life.RUNNING and self.linger > 0:
            # Many records per hand-off: a thread wake-up costs more than
            # writing one record.
            call = self._linger_call
            if call is None:
                self._linger_urgent = self._urgent
                delay = 0.0 if self._urgent else self.linger
                self._linger_call = self.reactor.callLater(delay, self._lingered)
            elif self._urgent and not self._linger_urgent:
                self._linger_urgent = True
                call.reset(0.0)
            return
        if self._in_flight is not None:
            # Nothing goes while the Python loop has a batch; taking it back
            # sends what is pending.
            self._land()
            return
        if self._engine_batches:
            # Batches the engine finished go back first, in order (which
            # sends what is pending).
            if self._reap(wake=False):
                return
            if not _engine_steps(self._pending):
                # Only the Python loop can run this, after the engine.
                self._reap(wake=True)
                return
        if life is _Life.CLOSING and self._restart:
            return
        batch = self._pending
        self._pending = []
        self._urgent = self._released = False
        _cancel(self._linger_call)
        self._linger_call = None
        if life is _Life.CLOSING or life is _Life.STOPPED:
            for chunk in batch:
                chunk.journal.seal(chunk)
                for step in chunk.steps:
                    step.abandon(chunk.journal, "journal writer stopped")
            return
        self._fresh = False
        report = False
        for chunk in batch:
            journal = chunk.journal
            journal.seal(chunk)
            if journal.failing is not None:
                # So that "writing again" is said when it is true.
                report = True
        self.batches += 1
        if self._pool is None and self._thread is None:
            self.start()
        engine = self._engine
        if engine is not None and not report and _engine_steps(batch):
            self._to_engine(engine, batch)
            return
        self._in_flight = batch
        self._on_thread(
            partial(self._ran, batch, report),
            _run_batch,
            batch,
            self.file_ops,
            self._files,
        )
        if self._finished is not None:
            # A pool that ran the batch at once.
            self._collect()

    def _on_thread(
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
            assert self._pool is not None
            self._pool.callInThreadWithCallback(on_result, func, *args)

    def _ran(self, batch: list[_Chunk], report: bool, ok: bool, result: object) -> None:
        """On the writer thread, after the batch: leave it for the reactor,
        and wake the reactor only when something waits for it.  Otherwise the
        reactor takes it back with its next record (``_land``): one thread
        hop per batch instead of two."""
        self._finished = (batch, None if ok else cast(Failure, result))
        # Read after the store above; ``_land`` does the opposite, so one of
        # the two sees the other.
        if self._waiting or report or not ok or self._drain_waiters or _awaited(batch):
            self.reactor.callFromThread(self._collect)

    def _to_engine(self, engine: _Engine, batch: list[_Chunk]) -> None:
        ops: list[tuple[int, bytes | None]] = []
        notify = False
        written = 0
        for chunk in batch:
            for step in chunk.steps:
                if type(step) is _Write:
                    write = cast(_Write, step)
                    f = write.file
                    data = b"".join(write.bufs)
                    # The joined copy is all a retry needs: the items' own
                    # bytes need not be held as well until the batch is back.
                    write.bufs = [data]
                    write.offset_before = f.offset
                    f.offset += len(data)
                    written += len(data)
                    ops.append((cast(int, f.fd), data))
                    if write.waiters:
                        notify = True
                else:
                    ops.append((cast(int, cast(_Sync, step).file.fd), None))
        self._engine_batches.append(batch)
        self.engine_batches += 1
        engine.submit(
            ops, notify or written > _LINGER_BYTES or bool(self._drain_waiters)
        )

    # -- taking batches back ---------------------------------------------------

    def engine_finished(self) -> None:
        """The engine said that batches are done: take them back."""
        self._reap(wake=False)

    def _land(self) -> None:
        """With batches on the thread: take back those it has finished (which
        sends what is pending); have it wake the reactor for the rest."""
        if self._in_flight is None:
            self._reap(wake=True)
            return
        if self._finished is None:
            self._waiting = True
            if self._finished is None:
                return
        self._collect()

    def _collect(self) -> None:
        """On the reactor: take back the batch the Python loop has finished,
        if it was not taken back already."""
        finished = self._finished
        if finished is None or self._completing:
            # Not yet; or after the completions running now.
            return
        self._finished = None
        batch, failure = finished
        self._in_flight = None
        self._waiting = False
        if (
            failure is None
            and self._urgent
            and self._pending
            and self._life is _Life.RUNNING
            and all(chunk.error is None for chunk in batch)
        ):
            # Something waits in what is pending: the thread writes and
            # syncs it while the reactor answers this batch.  (Not after a
            # failure: what is retried must go before what is pending.)
            self._released = True
            self._send()
        self._complete([(batch, failure)])

    def _reap(self, wake: bool) -> bool:
        """On the reactor: take back the batches the engine has finished, in
        order; with ``wake``, have the engine wake the reactor when it
        finishes the next.  Whether any came back."""
        engine = self._engine
        if engine is None or not self._engine_batches or self._completing:
            return False
        results = engine.poll(wake)
        if not results:
            return False
        batches = [self._engine_batches.popleft() for _ in results]
        failed = next((i for i, error in enumerate(results) if error), None)
        done: list[tuple[list[_Chunk], Failure | None]] = []
        for batch in batches[:failed]:
            for chunk in batch:
                for step in chunk.steps:
                    step.done = True
            done.append((batch, None))
        if failed is not None:
            # Everything from the failure on is undone and retried; what
            # came before it is done.  Latest first: each batch's retries go
            # in front of what is pending, so the oldest end up first.
            self._undo_engine(batches[failed:], results[failed])
            engine.resume()
            done.extend((batch, None) for batch in reversed(batches[failed:]))
        self._complete(done)
        return True

    def _undo_engine(self, batches: list[list[_Chunk]], error: int) -> None:
        """Undo the appends of batches the engine failed or did not run: the
        good bytes of each file end where the first of them started."""
        ends: dict[_SegmentFile, int] = {}
        for batch in batches:
            for chunk in batch:
                chunk.error = OSError(error, os.strerror(error))
                for step in chunk.steps:
                    step.done = False
                    if type(step) is _Write:
                        write = cast(_Write, step)
                        if write.offset_before >= 0:
                            f = write.file
                            ends[f] = min(ends.get(f, f.offset), write.offset_before)
                            write.offset_before = -1
        for f, offset in ends.items():
            f.offset = offset
            f.needs_cut = True

    def _complete(self, done: list[tuple[list[_Chunk], Failure | None]]) -> None:
        """Run the completions of batches taken back, in order; then take
        back what finished meanwhile, or send what is pending."""
        self._completing = True
        try:
            for batch, failure in done:
                self._batch_done(batch, failure)
        finally:
            self._completing = False
        if self._finished is not None:
            self._collect()
            return
        if self._engine_batches and self._reap(wake=False):
            return
        self._kick()
        self._maybe_stopped()
        self._watch_backlog()

    def _batch_done(self, batch: list[_Chunk], failure: Failure | None) -> None:
        if failure is not None:
            # A bug on the thread, not an I/O error: fail what did not run.
            _log.failure("journal writer batch crashed", failure)
            for chunk in batch:
                if chunk.error is None and not all(s.done for s in chunk.steps):
                    chunk.error = failure.value
        retried: list[_Chunk] = []
        for chunk in batch:
            try:
                again = chunk.journal.chunk_done(chunk)
            except Exception:
                _log.failure(
                    "journal {directory}: chunk completion failed",
                    directory=chunk.journal.directory,
                )
                continue
            if again is not None:
                retried.append(again)
        if retried:
            # What failed is older than anything pending: it goes first, in
            # the order it had.
            ids = {id(chunk) for chunk in retried}
            self._pending = retried + [c for c in self._pending if id(c) not in ids]

    # -- backlog and retries -----------------------------------------------------

    def when_drained(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the backlog is down to half of
        ``max_backlog`` (at once if it is)."""
        self._drain_waiters.append(callback)
        self._watch_backlog()

    def _watch_backlog(self) -> None:
        """Call the drain callbacks if it is time; if not, take back what
        the thread has finished, and have it wake the reactor when it
        finishes more."""
        if self._watching:
            return
        self._watching = True
        try:
            while self._drain_waiters:
                if self.backlog <= self.max_backlog // 2:
                    waiters = self._drain_waiters
                    self._drain_waiters = []
                    for waiter in waiters:
                        try:
                            waiter()
                        except Exception:
                            _log.failure("journal writer: a drain callback failed")
                    continue
                before = self.backlog
                self._land()
                if self.backlog >= before:
                    # Nothing was back yet: the thread says when it is.
                    break
        finally:
            self._watching = False

    def schedule_retry(self) -> None:
        """A journal's batch failed: send its retried records after
        ``retry_delay``, unless something new sends them sooner."""
        if self._retry_call is None and self._life is _Life.RUNNING:
            self._retry_call = self.reactor.callLater(self.retry_delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self.urge()

    def _cancel_retry(self) -> None:
        _cancel(self._retry_call)
        self._retry_call = None

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called and the writer has not started
        again."""
        return self._life is not _Life.RUNNING
