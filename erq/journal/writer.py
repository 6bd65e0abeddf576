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
pool job.  A batch that is one durable set and nothing else crosses no
thread at all: with the C engine idle, the reactor writes and syncs it
itself at the end of its turn (see "A lone durable write" in
``erq.journal.engine``).

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
from collections.abc import Callable
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
from erq.journal.engine import (
    Engine,
    _Engine,
    _engine_steps,
    _EngineDone,
    _EngineRunner,
    shared_device,
)
from erq.journal.files import (
    FileOps,
    _Chunk,
    _close_all,
    _SegmentFile,
    _Write,
)
from erq.journal.loop import _Done, _Job, _PythonLoop, _serve

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


def _written(batch: list[_Chunk]) -> int:
    """Bytes a batch taken back wrote: the thread (or the engine's
    submit) joined each write's buffers into one, so this costs a step,
    not a record."""
    return sum(
        sum(map(len, step.bufs))
        for chunk in batch
        for step in chunk.steps
        if step.done and isinstance(step, _Write)
    )


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


class _Runner(Protocol):
    """One of the two ways the writer's thread runs a batch: the Python
    loop (any step, one batch at a time) or the C engine (appends and
    fsyncs only, any number of batches).  The writer decides which takes a
    batch (``JournalWriter._send``) and takes batches back from either the
    same way."""

    def busy(self) -> bool:
        """Whether batches sent to it are not taken back yet."""

    def can_run(self, batch: list[_Chunk]) -> bool:
        """Whether it can run this batch at all."""

    def submit(self, batch: list[_Chunk], hurry: bool) -> None:
        """Run the batch; when done, wake the reactor if something waits
        for the batch, or if ``hurry``."""

    def take_back(self, wake: bool) -> list[_Done]:
        """The batches it has finished, oldest first; with ``wake``, have
        the reactor woken when it finishes the next."""


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


# The states as plain globals: the send path reads one per record.
_RUNNING = _Life.RUNNING
_STOPPING = _Life.STOPPING
_CLOSING = _Life.CLOSING
_STOPPED = _Life.STOPPED


# One class, longer than the others: it is the hand-off between the reactor
# and the writer's thread, one state machine (where each batch is, what may
# be sent, what is taken back) whose every transition reads and changes the
# same few fields.  Cut into parts, a reader would have to hold them all at
# once to see that no batch is forgotten; the thread's file work, the Python
# loop and the C engine (the two `_Runner`s) are already apart
# (``erq.journal.files``, ``erq.journal.loop``, ``erq.journal.engine``).
class JournalWriter:
    """Writes the journals of every queue of a server on one thread, with
    group commit.  Records reach disk in exactly the order the reactor made
    them.

    The hand-off
    ------------
    A batch is in one of three places: pending on the reactor
    (``_pending``), on the thread's Python loop (at most one), or in the C
    engine (any number, oldest first).  Both of the last two are `_Runner`s;
    which of them may take the next batch is decided in one place,
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
    what is pending is sent.  A batch is so never forgotten: it leaves a
    runner only in ``_take_back``, which runs its completions.
    """

    def __init__(
        self,
        reactor: _Reactor,
        pool: _Pool | None = None,
        file_ops: FileOps | None = None,
        retry_delay: float = 1.0,
        linger: float = 0.0,
        engine: _Engine | None = None,
        data_dir: str | None = None,
        shared_flushes: bool | None = None,
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
        self._life = _RUNNING
        # ``start`` came while stopping: start again once the files are
        # closed.
        self._restart = False
        self._stop_waiters: list[Deferred[None]] = []
        self._loop = _PythonLoop(
            reactor, self._on_thread, self._files, self._ops, self._collect
        )
        # A batch's completions are running (see "The hand-off").
        self._completing = False
        # The writer thread's jobs, while it runs ``_serve`` (own thread).
        self._jobs: SimpleQueue[_Job | None] | None = None
        #: Batches handed to the thread so far.
        self.batches = 0
        # Where the journals are: its file system says whether the files
        # of a batch may share one cache flush (see "Shared flushes" in
        # ``erq.journal.engine``), unless ``shared_flushes`` says.
        self._data_dir = data_dir
        self._shared_flushes = shared_flushes
        # The C engine, while the thread serves it (or one passed in).
        self._engine: _EngineRunner | None = None
        if engine is not None:
            self._engine = _EngineRunner(engine, bool(shared_flushes))
        self._engine_done: _EngineDone | None = None
        #: Bytes of items journaled and not yet written.  Past
        #: ``max_backlog`` (the disk is slower than what comes in),
        #: connections that store more stop being read until it is down to
        #: half (see ``when_drained``): memory stays bounded however fast
        #: producers are.
        self.backlog = 0
        self.max_backlog = MAX_BACKLOG
        self._drain_waiters: list[Callable[[], object]] = []
        self._watching = False
        #: Told of each batch taken back: the seconds since it left for the
        #: thread (its writes and fsyncs, and its wait to be taken back),
        #: and the bytes it wrote.  For the admin server's histograms.
        self.on_batch: Callable[[float, int], object] | None = None
        # When each batch in flight left, while ``on_batch`` is set.
        self._sent_at: dict[int, float] = {}

    # -- life ----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (a pool passed in is the caller's to
        start).  A writer can be started again after ``stop``, even before
        the stop has finished."""
        life = self._life
        if life is _STOPPING or life is _CLOSING:
            # What is journaled meanwhile waits for the files to be closed.
            self._restart = True
            return
        self._life = _RUNNING
        if self._pool is not None or self._thread is not None:
            return
        # The thread is a daemon: a writer stuck on a dead disk must not keep
        # the process alive once the reactor has stopped.  A clean stop waits
        # for it through the shutdown trigger below.
        self._jobs = SimpleQueue()
        self._start_engine()
        self._thread = threading.Thread(
            target=_serve,
            args=(self._jobs, None if self._engine is None else self._engine.engine),
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
        device = shared_device(self._data_dir, self._shared_flushes)
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._engine = _EngineRunner(
            Engine(fd, shared_device=device), device is not None, device
        )
        self._engine_done = _EngineDone(self, fd)
        cast(IReactorFDSet, self.reactor).addReader(self._engine_done)

    def _stop_engine(self) -> None:
        done = self._engine_done
        if self._engine is None or done is None:
            return
        self._engine.engine.interrupt()
        self._engine = self._engine_done = None
        cast(IReactorFDSet, self.reactor).removeReader(done)
        os.close(done.fd)

    @property
    def uses_engine(self) -> bool:
        """Whether appends and fsyncs run in the C engine."""
        return self._engine is not None

    @property
    def shares_flushes(self) -> bool:
        """Whether the files of a batch may share one cache flush (see
        "Shared flushes" in ``erq.journal.engine``)."""
        return self._engine is not None and self._engine.shares

    @property
    def engine_batches(self) -> int:
        """Batches the engine ran."""
        return 0 if self._engine is None else self._engine.count

    @property
    def inline_batches(self) -> int:
        """Batches the reactor ran itself, on the engine (see "A lone
        durable write" in ``erq.journal.engine``)."""
        return 0 if self._engine is None else self._engine.inline

    @property
    def on_thread(self) -> int:
        """Batches sent to the thread and not taken back yet."""
        engine = 0 if self._engine is None else len(self._engine.batches)
        return int(self._loop.busy()) + engine

    def _ops(self) -> FileOps:
        return self.file_ops

    def _busy(self) -> _Runner | None:
        """The runner that has batches on the thread (never both)."""
        # Each runner's ``busy``, read from its fields: this is asked twice
        # a batch.
        loop = self._loop
        if loop.in_flight is not None:
            return loop
        engine = self._engine
        if engine is not None and engine.batches:
            return engine
        return None

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
        if self._life is _STOPPED:
            d.callback(None)
            return d
        self._stop_waiters.append(d)
        if self._life is _RUNNING:
            self._life = _STOPPING
        self._cancel_retry()
        self._fresh = True
        self._kick()
        self._maybe_stopped()
        return d

    def _maybe_stopped(self) -> None:
        if self._life is not _STOPPING or self._completing:
            return
        if self._busy() is not None:
            # Taking the batches back comes here again.
            self._land()
            return
        if self._pending:
            self._fresh = True
            self._kick()
            return
        self._life = _CLOSING
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
        self._life = _STOPPED
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
        if not self._completing:
            self._send()

    def urge(self) -> None:
        """Something waits for what is pending (a durable add, a read, a
        close): send it by the end of this turn of the reactor."""
        if not self._pending:
            return
        self._urgent = True
        self._fresh = True
        # ``_kick``, inlined: this runs once per durable set.
        if not self._completing:
            self._send()

    # -- sending ---------------------------------------------------------------

    def _lingered(self) -> None:
        self._linger_call = None
        self._released = True
        self._fresh = True
        if not self._completing:
            # The end of a turn, outside of any caller: the one place where
            # a batch may come back before ``_send`` returns.
            self._send(alone=True)

    def _kick(self) -> None:
        """Send what is pending if it may go now; during a batch's
        completions it goes once they are done."""
        if not self._completing:
            self._send()

    def _send(self, alone: bool = False) -> None:
        """Send what is pending where it may go (see "The hand-off").  With
        ``alone``, a batch that is one durable set and nothing else runs on
        the reactor's own thread, if the engine is idle (see "A lone
        durable write" in ``erq.journal.engine``)."""
        if not self._pending or not self._fresh:
            return
        life = self._life
        if not self._released and life is _RUNNING and self.linger > 0:
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
        busy = self._busy()
        if busy is self._loop:
            # Nothing goes while the Python loop has a batch; taking it back
            # sends what is pending.
            self._land()
            return
        engine = self._engine
        if busy is not None:
            assert engine is not None
            # Batches the engine finished go back first, in order (which
            # sends what is pending).
            if self._take_back(engine, wake=False):
                return
            if not engine.can_run(self._pending):
                # Only the Python loop can run this, after the engine.
                self._take_back(engine, wake=True)
                return
        if life is _CLOSING and self._restart:
            return
        batch = self._pending
        self._pending = []
        self._urgent = self._released = False
        call = self._linger_call
        if call is not None:
            # Gone already when it is what sends the batch.
            _cancel(call)
            self._linger_call = None
        if life is _CLOSING or life is _STOPPED:
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
            if journal._failing is not None:
                # So that "writing again" is said when it is true.
                report = True
        self.batches += 1
        if self.on_batch is not None:
            self._sent_at[id(batch)] = self.reactor.seconds()
        if self._pool is None and self._thread is None:
            self.start()
        engine = self._engine
        hurry = bool(self._drain_waiters)
        if engine is not None and not report:
            # ``lone`` asks, of a lone set, all that ``can_run`` would.
            if alone and engine.lone(batch):
                done = engine.run_now(batch)
                if done:
                    if self.on_batch is not None:
                        self._observe(done)
                    self._complete(done)
                return
            if _engine_steps(batch):
                engine.submit(batch, hurry)
                return
        self._loop.submit(batch, report or hurry)
        if self._loop.finished is not None:
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
                self._engine.engine.interrupt()
        else:
            assert self._pool is not None
            self._pool.callInThreadWithCallback(on_result, func, *args)

    # -- taking batches back ---------------------------------------------------

    def engine_finished(self) -> None:
        """The engine said that batches are done: take them back."""
        if self._engine is not None:
            self._take_back(self._engine, wake=False)

    def _collect(self) -> None:
        """The thread says the Python loop's batch is done: take it back."""
        self._take_back(self._loop, wake=False)

    def _land(self) -> None:
        """With batches on the thread: take back those it has finished (which
        sends what is pending); have it wake the reactor for the rest."""
        busy = self._busy()
        if busy is not None:
            self._take_back(busy, wake=True)

    def _take_back(self, runner: _Runner, wake: bool) -> bool:
        """On the reactor: take back the batches ``runner`` has finished and
        run their completions; with ``wake``, have the reactor woken when it
        finishes the next.  Whether any came back."""
        if self._completing:
            # After the completions running now (``_complete`` looks again).
            return False
        done = runner.take_back(wake)
        if not done:
            return False
        if self.on_batch is not None:
            self._observe(done)
        if (
            self._urgent
            and self._pending
            and self._life is _RUNNING
            and not runner.busy()
            and all(
                failure is None and all(chunk.error is None for chunk in batch)
                for batch, failure in done
            )
        ):
            # Something waits in what is pending: the thread writes and
            # syncs it while the reactor answers these batches.  (Not after
            # a failure: what is retried must go before what is pending.)
            self._released = True
            self._send()
        self._complete(done)
        return True

    def _observe(self, done: list[_Done]) -> None:
        now = self.reactor.seconds()
        for batch, _ in done:
            sent = self._sent_at.pop(id(batch), None)
            if sent is not None and self.on_batch is not None:
                self.on_batch(now - sent, _written(batch))

    def _complete(self, done: list[tuple[list[_Chunk], Failure | None]]) -> None:
        """Run the completions of batches taken back, in order; then take
        back what finished meanwhile, or send what is pending."""
        self._completing = True
        try:
            engine = self._engine
            if engine is not None and engine.durables:
                # Their replies first, with nothing between the fsync and
                # them (see ``erq.durable``).
                durables = engine.durables
                engine.durables = []
                for durable in durables:
                    durable.durable()
            for batch, failure in done:
                self._batch_done(batch, failure)
        finally:
            self._completing = False
        # What finished meanwhile goes back first, in order.
        busy = self._busy()
        if busy is not None and self._take_back(busy, wake=False):
            return
        # Each of the three below does nothing unless its test holds: they
        # are asked here first, since this runs once a batch, even a lone
        # durable set's.
        if self._pending:
            self._kick()
        if self._life is _STOPPING:
            self._maybe_stopped()
        if self._drain_waiters:
            self._watch_backlog()

    def _batch_done(self, batch: list[_Chunk], failure: Failure | None) -> None:
        if failure is not None:
            # A bug on the thread, not an I/O error: fail what did not run.
            _log.failure("journal writer batch crashed", failure)
            for chunk in batch:
                if chunk.error is None and not all(s.done for s in chunk.steps):
                    chunk.error = failure.value
        retried: list[_Chunk] | None = None
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
                if retried is None:
                    retried = []
                retried.append(again)
        if retried is not None:
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
        if self._retry_call is None and self._life is _RUNNING:
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
        return self._life is not _RUNNING
