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
``erq.journal.engine``).  Nor does a batch that carries the sets of every
connection storing to one queue in lock-step: a batch that something waits
for first waits for those connections (see ``erq.journal.cohort``), so
that they share one fsync instead of taking turns.

Backlog
-------
The writer counts the bytes of items journaled and not yet written
(``backlog``).  When a connection stores an item past ``max_backlog`` the
protocol stops reading it and asks ``when_drained`` to be told once half is
written; while anyone waits for that, the thread and the engine wake the
reactor after each batch, as they would for a durable add.  So a disk slower
than the producers bounds the server's memory instead of filling it.

The thread's file work is in ``erq.journal.files``; which of the thread's
two ways to run a batch takes it, and taking batches back from them, in
``erq.journal.dispatch``; the C engine that takes plain appends and fsyncs
off the Python loop is in ``erq.journal.engine``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from erq.config import MiB
from erq.journal.dispatch import _Dispatch, _Runner
from erq.journal.dispatch import _Reactor as _DispatchReactor
from erq.journal.engine import _Engine
from erq.journal.files import FileOps, _Chunk, _close_all
from erq.journal.gather import Gathering
from erq.journal.loop import _Done
from erq.journal.thread import SHUTDOWN_TIMEOUT as SHUTDOWN_TIMEOUT
from erq.journal.thread import _Pool, _WriterThread

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


def _complete(batch: list[_Chunk], failure: Failure | None) -> list[_Chunk]:
    """Tell each journal of a batch taken back how its chunk went; the
    chunks to write again, in order.  ``failure`` is a bug on the thread,
    not an I/O error: what did not run fails with it."""
    if failure is not None:
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
    return retried


def _cancel(call: IDelayedCall | None) -> None:
    """Cancel a delayed call that may be pending, or gone, or absent."""
    if call is not None and call.active():
        call.cancel()


class _Reactor(_DispatchReactor, Protocol):
    """What the writer needs of its reactor."""

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object
    ) -> IDelayedCall: ...


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


class JournalWriter:
    """Writes the journals of every queue of a server on one thread, with
    group commit.  Records reach disk in exactly the order the reactor made
    them.

    The writer keeps what is pending on the reactor, and decides when it
    goes (``_send``): at once, or at the end of the turn, or once records
    have gathered for ``linger``; a ``_Dispatch`` decides where it runs and
    takes it back (see "The hand-off" in ``erq.journal.dispatch``), and the
    writer completes it: its journals are told, what failed is retried
    before anything pending.  The writer also owns its thread's life
    (``start``, ``stop``) and the backlog.
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
        self._thread = _WriterThread(reactor, pool)
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
        self._life = _RUNNING
        # ``start`` came while stopping: start again once the files are closed.
        self._restart = False
        self._stop_waiters: list[Deferred[None]] = []
        #: Batches handed to the thread so far.
        self.batches = 0
        # Where batches run, and taking them back.
        self._dispatch = _Dispatch(
            reactor,
            self._thread,
            self._ops,
            (self._send_first, self._batches_done, self._go_on),
            engine,
            data_dir,
            shared_flushes,
        )
        #: Bytes of items journaled and not yet written.  Past
        #: ``max_backlog`` (the disk is slower than what comes in),
        #: connections that store more stop being read until it is down to
        #: half (see ``when_drained``): memory stays bounded however fast
        #: producers are.
        self.backlog = 0
        self.max_backlog = MAX_BACKLOG
        self._drain_waiters: list[Callable[[], object]] = []
        self._watching = False
        #: Waits for connections in lock-step (see ``erq.journal.gather``).
        self.gathering = Gathering(reactor, self._dispatch, self._gathered)

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
        self._start_thread()

    def _start_thread(self) -> None:
        """Start the thread of its own that the writer runs on, unless it
        has one, or a pool."""
        thread = self._thread
        if thread.pool is not None or thread.own is not None:
            return
        dispatch = self._dispatch
        dispatch.start_engine(self.file_ops)
        engine = dispatch.engine
        thread.start(None if engine is None else engine.engine, self.stop)

    @property
    def on_batch(self) -> Callable[[float, int], object] | None:
        """Told of each batch taken back: the seconds since it left for the
        thread (its writes and fsyncs, and its wait to be taken back), and
        the bytes it wrote.  For the admin server's histograms."""
        return self._dispatch.on_batch

    @on_batch.setter
    def on_batch(self, observer: Callable[[float, int], object] | None) -> None:
        self._dispatch.on_batch = observer

    def _ops(self) -> FileOps:
        return self.file_ops

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
        dispatch = self._dispatch
        if self._life is not _STOPPING or dispatch.completing:
            return
        if dispatch.busy() is not None:
            # Taking the batches back comes here again.
            dispatch.land()
            return
        if self._pending:
            self._fresh = True
            self._kick()
            return
        self._life = _CLOSING
        thread = self._thread
        if thread.pool is None and thread.own is None:
            # The thread never started: no file is open.
            self._closed(_close_all(thread.files, self.file_ops))
            return
        thread.run(self._closed_on_thread, _close_all, thread.files, self.file_ops)

    def _closed_on_thread(self, ok: bool, result: object) -> None:
        self.reactor.callFromThread(self._closed, result)

    def _closed(self, result: object) -> None:
        _cancel(self._linger_call)
        self._linger_call = None
        self.gathering.cancel()
        if isinstance(result, Failure):
            _log.failure("journal writer could not close its files", result)
        elif result:
            _log.error(
                "journal writer: closing files failed: {errors}",
                errors="; ".join(cast(list[str], result)),
            )
        self._life = _STOPPED
        if self._thread.stop():
            self._dispatch.stop_engine()
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
        if not self._dispatch.completing:
            self._send()

    def urge(self) -> None:
        """Something waits for what is pending (a durable add, a read, a
        close): send it by the end of this turn of the reactor."""
        if not self._pending:
            return
        self._urgent = True
        self._fresh = True
        # ``_kick``, inlined: this runs once per durable set.
        if not self._dispatch.completing:
            self._send()

    # -- sending ---------------------------------------------------------------

    def _lingered(self) -> None:
        self._linger_call = None
        self._released = True
        self._fresh = True
        if not self._dispatch.completing:
            # The end of a turn, outside of any caller: the one place where
            # a batch may come back before ``_send`` returns.
            self._send(alone=True)

    def _gathered(self) -> None:
        """What is pending waited for connections in lock-step: it goes."""
        self._fresh = True
        if not self._dispatch.completing:
            self._send(alone=True)

    def _kick(self) -> None:
        """Send what is pending if it may go now; during a batch's
        completions it goes once they are done."""
        if not self._dispatch.completing:
            self._send()

    def _send(self, alone: bool = False) -> None:
        """Send what is pending, if it may go now (see "The hand-off" in
        ``erq.journal.dispatch``).  With
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
        if self._urgent and life is _RUNNING and self.gathering.holds(self._pending):
            return
        dispatch = self._dispatch
        if dispatch.holds(self._pending):
            return
        if life is _CLOSING and self._restart:
            return
        batch = self._pending
        self._pending = []
        self._urgent = self._released = False
        whole = self.gathering.leaving(batch, alone)
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
        thread = self._thread
        if thread.pool is None and thread.own is None:
            # Never started, or stopping before it started: the batch
            # needs the thread either way.
            self._start_thread()
        dispatch.send(batch, alone, report, bool(self._drain_waiters), whole)

    # -- completing batches taken back ------------------------------------------

    def _send_first(self, runner: _Runner, done: list[_Done]) -> None:
        """Batches came back from ``runner``, their completions not run yet:
        if something waits in what is pending, send it now, so that the
        thread writes and syncs it while the reactor answers these
        batches.  (Not after a failure: what is retried must go before what
        is pending.)"""
        if (
            self._urgent
            and self._pending
            and self._life is _RUNNING
            and not self.gathering.expecting(self._pending)
            and not runner.busy()
            and all(
                failure is None and all(chunk.error is None for chunk in batch)
                for batch, failure in done
            )
        ):
            self._released = True
            self._send()

    def _batches_done(self, done: list[_Done]) -> bool:
        """The completions of batches taken back, in order: each journal is
        told how its chunk went, and what failed is retried.  Whether the
        writer has more to do once they are over (see ``_go_on``): asked
        here, since this runs once a batch, even a lone durable set's."""
        for batch, failure in done:
            retried = _complete(batch, failure)
            if retried:
                # What failed is older than anything pending: it goes first,
                # in the order it had.
                ids = {id(chunk) for chunk in retried}
                pending = self._pending
                self._pending = retried + [c for c in pending if id(c) not in ids]
        return bool(self._pending or self._life is _STOPPING or self._drain_waiters)

    def _go_on(self) -> None:
        """After the completions of batches taken back (and of those that
        finished meanwhile): send what is pending, go on stopping, let
        paused producers go, each only if its test holds."""
        if self._pending:
            self._kick()
        if self._life is _STOPPING:
            self._maybe_stopped()
        if self._drain_waiters:
            self._watch_backlog()

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
                self._dispatch.land()
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
