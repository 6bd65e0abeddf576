"""The journal writer's hand-off between the reactor and its thread, one
interleaving at a time.

Every test here runs the thread's side by hand: a pool whose jobs run when
the test says, an engine double whose batches finish when the test says,
and a reactor whose calls "from the thread" wait until the test runs them.
So each interleaving that a loaded machine can produce is reproduced
exactly, and the checks do not depend on timing."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import textwrap
from collections import deque

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from erq.config import SyncPolicy
from erq.durable import Durable
from erq.journal import FileOps, Journal, JournalError, JournalWriter
from erq.journal.engine import WRITE_OUT, Ops
from erq.queue import Item
from tests.support import ManualPool, SyncPool, ThreadCallsReactor


class StepEngine:
    """The C engine's contract, run by hand: submitted groups run in order
    when the test says; after a failure nothing more runs (later groups
    come back ``ECANCELED``) until ``resume``."""

    def __init__(self) -> None:
        self.queued: deque[Ops] = deque()
        self.done: list[int] = []
        self.halted = False
        #: Times the engine would have written its eventfd.
        self.notified = 0
        #: ``run`` says that the engine is not idle.
        self.refuse_run = False
        #: The error ``run`` fails its job with, writing nothing (0: none).
        self.run_error = 0
        #: The jobs run at once (``run``).
        self.ran_now: list[Ops] = []
        #: Every job submitted, run or not.
        self.submitted: list[Ops] = []
        #: The replies of each job run at once with replies
        #: (``run_and_reply``).
        self.replied_now: list[list[tuple[int, bytes]]] = []
        #: The replies sent as batches were taken back (``reply``).
        self.replied_back: list[list[tuple[int, bytes]]] = []
        #: The most bytes of each reply that its socket takes.
        self.reply_room = 1 << 20
        self._wake = False
        self._notify: deque[bool] = deque()

    def submit(self, ops: Ops, notify: bool) -> None:
        self.queued.append(ops)
        self.submitted.append(ops)
        self._notify.append(notify)

    def run(self, ops: Ops) -> int:
        """A job run at once by its caller, while nothing is queued."""
        if self.refuse_run:
            raise RuntimeError("the engine has jobs of its own")
        assert not self.queued and not self.done and not self.halted
        self.ran_now.append(ops)
        if self.run_error:
            return self.run_error
        self._run_ops(ops)
        return 0

    def run_and_reply(
        self, ops: Ops, replies: list[tuple[int, bytes]]
    ) -> tuple[int, list[int]]:
        """``run``, then the replies sent, as far as their sockets take
        them, if the job succeeded."""
        error = self.run(ops)
        self.replied_now.append(replies)
        if error:
            return error, [0] * len(replies)
        return 0, self._sent(replies)

    def reply(self, replies: list[tuple[int, bytes]]) -> list[int]:
        """The replies sent, as far as their sockets take them."""
        self.replied_back.append(replies)
        return self._sent(replies)

    def _sent(self, replies: list[tuple[int, bytes]]) -> list[int]:
        return [min(len(data), self.reply_room) for _, data in replies]

    def _run_ops(self, ops: Ops) -> None:
        for fd, data in ops:
            if isinstance(data, bytes):
                os.write(fd, data)
            elif type(data) is int:
                # A write-out: advice to the kernel, nothing to do here.
                pass
            else:
                os.fdatasync(fd)

    def run_one(self, error: int = 0) -> bool:
        if not self.queued:
            return False
        ops = self.queued.popleft()
        notify = self._notify.popleft()
        if self.halted:
            result = errno.ECANCELED
        elif error:
            result = error
            self.halted = True
        else:
            self._run_ops(ops)
            result = 0
        self.done.append(result)
        if notify or self._wake:
            self._wake = False
            self.notified += 1
        return True

    def poll(self, wake: bool) -> list[int]:
        done, self.done = self.done, []
        if not done and wake:
            self._wake = True
        return done

    def resume(self) -> None:
        self.halted = False

    def interrupt(self) -> None:
        pass


def item(i: int, size: int = 10) -> Item:
    return Item(i, (b"%d:" % i + b"x" * size)[:size], 0, None, 1700000000.0 + i)


def engine_finished(writer: JournalWriter) -> None:
    """What the engine's eventfd does once batches are done: take them
    back (see ``_Dispatch.start_engine``)."""
    dispatch = writer._dispatch
    if dispatch.engine is not None:
        dispatch.take_back(dispatch.engine, wake=False)


def stop_quietly(
    writer: JournalWriter,
    pool: ManualPool,
    engine: StepEngine,
    reactor: ThreadCallsReactor,
) -> None:
    """Stop the writer, however a test left it, closing its files."""
    writer.stop()
    for _ in range(1000):
        busy = pool.run_next()
        busy = engine.run_one() or busy
        engine_finished(writer)
        busy = reactor.run_calls() > 0 or busy
        if not busy:
            return


class HandOffCase(SynchronousTestCase):
    #: What the writer is told of its file system (see "Shared flushes" in
    #: ``erq.journal.engine``).
    shared_flushes: bool | None = None

    def setUp(self) -> None:
        self.reactor = ThreadCallsReactor()
        self.pool = ManualPool()
        self.engine = StepEngine()
        self.writer = JournalWriter(
            self.reactor,
            self.pool,  # type: ignore[arg-type]
            engine=self.engine,
            shared_flushes=self.shared_flushes,
        )
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.addCleanup(stop_quietly, self.writer, self.pool, self.engine, self.reactor)

    def journal(self, name: str, sync: SyncPolicy = "always") -> Journal:
        return Journal(os.path.join(self.base, name), self.writer, sync=sync)

    def settle(self, limit: int = 1000) -> None:
        """Let the thread and the reactor run until neither has work: the
        engine's notifications reach the reactor as its eventfd would."""
        for _ in range(limit):
            busy = self.pool.run_next()
            busy = self.engine.run_one() or busy
            if self.engine.notified:
                self.engine.notified = 0
                engine_finished(self.writer)
                busy = True
            busy = self.reactor.run_calls() > 0 or busy
            if not busy:
                return
        self.fail("the writer never settled")

    def fired(self, d: Deferred[None] | None) -> list[object]:
        assert d is not None
        results: list[object] = []
        d.addBoth(results.append)
        return results

    def replayed(self, name: str) -> list[bytes]:
        writer = JournalWriter(Clock(), SyncPool())  # type: ignore[arg-type]
        journal = Journal(os.path.join(self.base, name), writer, sync="never")
        return [i.data for i in journal.replay(1 << 30).items]

    def opened(self, name: str) -> Journal:
        """A durable journal whose file is open, so that its appends can go
        to the engine."""
        journal = self.journal(name)
        first = self.fired(journal.add(item(1)))
        self.settle()
        self.assertEqual(first, [None])
        return journal


class InterleavingTests(HandOffCase):
    def test_two_engine_batches_back_in_one_poll(self) -> None:
        """The engine returns two batches at once, and what waited behind
        them can only run on the Python loop: it goes there once, and is
        neither forgotten nor overwritten by a later batch."""
        first = self.opened("a")
        one = self.fired(first.add(item(2)))
        two = self.fired(first.add(item(3)))
        self.assertEqual(len(self.engine.queued), 2)
        # A new queue's first record needs its directory made: Python only.
        second = self.journal("b")
        fresh = self.fired(second.add(item(1)))
        self.assertEqual(self.pool.work, deque())
        self.engine.run_one()
        self.engine.run_one()
        engine_finished(self.writer)
        self.assertEqual((one, two), ([None], [None]))
        self.assertEqual(len(self.pool.work), 1)
        # While that batch is on the thread, more arrives for both paths.
        later = self.fired(first.add(item(4)))
        third = self.journal("c")
        newer = self.fired(third.add(item(1)))
        self.assertEqual(len(self.pool.work), 1)
        self.assertEqual(len(self.engine.queued), 0)
        # The thread finishes before the reactor hears of it.
        self.pool.run_next()
        self.settle()
        self.assertEqual((fresh, later, newer), ([None], [None], [None]))
        self.assertEqual(self.writer.backlog, 0)
        stopped = self.fired(self.writer.stop())
        self.settle()
        self.assertEqual(stopped, [None])
        self.assertEqual(self.replayed("a"), [item(i).data for i in range(1, 5)])

    def test_retry_timer_while_a_batch_is_on_the_thread(self) -> None:
        """The retry timer fires while the retried records are already on
        the thread, and that batch's completions journal more: the writer
        sends it, and stops when asked."""
        ops = FailingOps()
        self.writer.file_ops = ops
        journal = self.journal("a", sync="never")
        journal.add(item(1))
        ops.failing = errno.ENOSPC
        self.settle()
        ops.failing = 0
        # Something waited for sends the retry before its timer ...
        closed = self.journal("b").close()
        durable: list[Deferred[None] | None] = []
        closed.addCallback(lambda _: durable.append(self.journal("c").add(item(1))))
        self.assertEqual(len(self.pool.work), 1)
        # ... which fires while they are on the thread, with nothing pending.
        self.reactor.advance(self.writer.retry_delay)
        self.settle()
        self.assertEqual(len(durable), 1)
        self.assertEqual(self.fired(durable[0]), [None])
        journal.add(item(2))
        stopped = self.fired(self.writer.stop())
        self.settle()
        self.assertEqual(stopped, [None])
        self.assertEqual(self.replayed("a"), [item(1).data, item(2).data])

    def test_python_batch_finishes_while_engine_batches_complete(self) -> None:
        """A batch sent to the Python loop before the engine's batch is
        answered (something waited for it) finishes, and the reactor hears
        of it, while that answer runs: it is taken back after, in order."""
        first = self.opened("a")
        answered: list[str] = []
        durable = first.add(item(2))
        assert durable is not None
        durable.addCallback(lambda _: answered.append("engine"))
        # A new queue's first record makes its directory: Python only, so
        # it waits for the engine's batch.
        later = self.journal("b").add(item(1))
        assert later is not None
        later.addCallback(lambda _: answered.append("python"))
        ran: list[bool] = []

        def thread_finishes_meanwhile(_: object) -> None:
            ran.append(self.pool.run_next())
            self.reactor.run_calls()
            self.assertEqual(answered, ["engine"])

        durable.addCallback(thread_finishes_meanwhile)
        self.engine.run_one()
        engine_finished(self.writer)
        self.assertEqual(ran, [True])
        self.settle()
        self.assertEqual(answered, ["engine", "python"])
        self.assertEqual(self.writer.backlog, 0)

    def test_stop_while_batches_are_on_the_thread(self) -> None:
        for path in ("engine", "python"):
            writer = self.writer
            journal = self.opened(path) if path == "engine" else self.journal(path)
            pending = self.fired(journal.add(item(9)))
            stopped = self.fired(writer.stop())
            self.assertEqual((pending, stopped), ([], []))
            self.settle()
            self.assertEqual(pending, [None], path)
            self.assertEqual(stopped, [None], path)
            refused = self.fired(journal.add(item(10)))
            self.assertIsInstance(refused[0], Failure)
            writer.start()

    def test_a_batch_that_failed_before_the_stop_is_retried_once(self) -> None:
        """Removals failed on a full disk while the writer was asked to stop;
        the disk has room by the time the failed batch comes back: they are
        written.  If it fails again the writer still stops."""
        for room in (True, False):
            self.setUp()
            ops = FailingOps()
            self.writer.file_ops = ops
            journal = self.journal("a", sync="never")
            for i in (1, 2, 3):
                journal.add(item(i))
            self.settle()
            journal.remove(item(1))
            stopped = self.fired(self.writer.stop())
            self.engine.run_one(error=errno.ENOSPC)
            if not room:
                ops.failing = errno.ENOSPC
            self.settle()
            self.assertEqual(stopped, [None])
            expected = [2, 3] if room else [1, 2, 3]
            self.assertEqual(self.replayed("a"), [item(i).data for i in expected])

    def test_engine_failure_with_batches_behind_it(self) -> None:
        """The engine fails one batch: it and those queued behind it are
        undone and retried on the Python loop, oldest first."""
        journal = self.opened("a")
        never = self.journal("b", sync="never")
        never.add(item(1))
        self.settle()
        never.add(item(2))
        never.add(item(3))
        self.assertEqual(len(self.engine.queued), 2)
        self.engine.run_one(error=errno.EIO)
        self.engine.run_one()
        engine_finished(self.writer)
        self.reactor.advance(self.writer.retry_delay)
        self.settle()
        later = self.fired(journal.add(item(2)))
        self.settle()
        self.assertEqual(later, [None])
        self.writer.stop()
        self.settle()
        self.assertEqual(self.replayed("b"), [item(1).data, item(2).data, item(3).data])


class LoneCase(HandOffCase):
    """Journals whose batches leave at the end of the reactor's turn."""

    def opened(self, name: str) -> Journal:
        # Opened without a linger, which the rest of each test has.
        self.writer.linger = 0
        journal = super().opened(name)
        self.writer.linger = 0.002
        return journal

    def end_of_turn(self) -> None:
        self.reactor.advance(0)


class LoneWriteTests(LoneCase):
    """A batch that one durable add alone waits for, at the end of the
    reactor's turn, runs on the reactor itself while the engine is idle;
    anything else goes to the engine's thread, in order."""

    def test_a_lone_durable_add_is_answered_in_the_same_turn(self) -> None:
        journal = self.opened("a")
        durable = self.fired(journal.add(item(2)))
        self.assertEqual(durable, [])
        self.end_of_turn()
        # Written, synced and answered without the thread.
        self.assertEqual(durable, [None])
        self.assertEqual(len(self.engine.ran_now), 1)
        self.assertEqual(self.engine.queued, deque())
        self.assertEqual(self.engine.notified, 0)
        self.assertEqual(self.writer._dispatch.inline_batches, 1)
        self.assertEqual(self.writer._dispatch.on_thread, 0)
        self.assertEqual(self.writer.backlog, 0)
        self.assertEqual(self.replayed("a"), [item(1).data, item(2).data])

    def test_adds_that_several_wait_for_go_to_the_thread(self) -> None:
        first = self.opened("a")
        second = self.opened("b")
        one = self.fired(first.add(item(2)))
        two = self.fired(second.add(item(2)))
        self.end_of_turn()
        # The reactor reads on while their fdatasyncs run.
        self.assertEqual((one, two), ([], []))
        self.assertEqual(self.engine.ran_now, [])
        self.assertEqual(len(self.engine.queued), 1)
        self.settle()
        self.assertEqual((one, two), ([None], [None]))

    def test_a_set_beside_anything_else_goes_to_the_thread(self) -> None:
        """A run of sets from one client, or a get's removal in the same
        turn: the reactor reads on while they are synced."""
        journal = self.opened("a")
        run = self.fired(journal.add_many([item(2), item(3)], [True, True]))
        self.end_of_turn()
        self.assertEqual((run, self.engine.ran_now), ([], []))
        self.settle()
        self.assertEqual(run, [None])
        journal.remove(item(1))
        beside = self.fired(journal.add(item(4)))
        self.end_of_turn()
        self.assertEqual((beside, self.engine.ran_now), ([], []))
        self.settle()
        self.assertEqual(beside, [None])
        self.assertEqual(self.replayed("a"), [item(i).data for i in (2, 3, 4)])

    def test_not_while_the_engine_has_batches(self) -> None:
        """A lone add behind a batch on the thread waits its turn there:
        its completion cannot overtake the older one's."""
        first = self.opened("a")
        journal = self.opened("b")
        answered: list[int] = []
        other = first.add(item(2))
        assert other is not None
        other.addCallback(lambda _: answered.append(0))
        for i in (2, 3):
            d = journal.add(item(i))
            assert d is not None
            d.addCallback(lambda _, i: answered.append(i), i)
        self.end_of_turn()
        self.assertEqual(len(self.engine.queued), 1)
        d = journal.add(item(4))
        assert d is not None
        d.addCallback(lambda _: answered.append(4))
        self.end_of_turn()
        self.assertEqual(self.engine.ran_now, [])
        self.assertEqual(len(self.engine.queued), 2)
        self.settle()
        self.assertEqual(answered, [0, 2, 3, 4])
        # Idle again: the next lone add is the reactor's.
        d = journal.add(item(5))
        assert d is not None
        d.addCallback(lambda _: answered.append(5))
        self.end_of_turn()
        self.assertEqual(answered, [0, 2, 3, 4, 5])
        self.assertEqual(len(self.engine.ran_now), 1)

    def test_a_lone_add_that_fails_is_refused_and_cut_back(self) -> None:
        """The reactor's own run of a lone add fails as one on the thread
        would: the add is refused, the append is cut back, and the next
        batch writes again."""
        journal = self.opened("a")
        segment = journal._current
        assert segment is not None
        f = segment.file
        before = f.offset
        self.engine.run_error = errno.EIO
        refused = self.fired(journal.add(item(2)))
        self.end_of_turn()
        self.assertEqual(len(self.engine.ran_now), 1)
        self.assertIsInstance(refused[0], Failure)
        self.assertEqual((f.offset, f.needs_cut), (before, True))
        self.engine.run_error = 0
        self.reactor.advance(self.writer.retry_delay)
        self.settle()
        later = self.fired(journal.add(item(3)))
        self.end_of_turn()
        self.settle()
        self.assertEqual(later, [None])
        self.assertEqual(self.replayed("a"), [item(1).data, item(3).data])

    def test_a_lone_add_past_the_zeros_goes_to_the_python_loop(self) -> None:
        """Only the Python loop writes zeros ahead of the appends (see
        "Zeros ahead" in ``erq.journal.files``): a lone add that would run
        past them is its to write, like any batch the engine cannot run."""
        journal = self.opened("a")
        segment = journal._current
        assert segment is not None
        f = segment.file
        # Zeros that end where the appends do.
        f.zeroed = f.offset
        durable = self.fired(journal.add(item(2)))
        self.end_of_turn()
        self.assertEqual((self.engine.ran_now, self.engine.queued), ([], deque()))
        self.settle()
        self.assertEqual(durable, [None])
        self.assertGreater(f.zeroed, f.offset)
        self.assertEqual(self.replayed("a"), [item(1).data, item(2).data])

    def test_an_engine_that_is_not_idle_takes_the_batch(self) -> None:
        journal = self.opened("a")
        self.engine.refuse_run = True
        durable = self.fired(journal.add(item(2)))
        self.end_of_turn()
        self.assertEqual(len(self.engine.queued), 1)
        self.assertEqual(self.writer._dispatch.inline_batches, 0)
        self.settle()
        self.assertEqual(durable, [None])
        self.assertEqual(self.replayed("a"), [item(1).data, item(2).data])

    def test_never_inside_the_call_that_journals(self) -> None:
        """Without a linger the batch leaves from ``add`` itself: it goes
        to the thread, so that the add's caller is not answered before it
        has its Deferred."""
        journal = self.opened("a")
        self.writer.linger = 0
        durable = self.fired(journal.add(item(2)))
        self.assertEqual(durable, [])
        self.assertEqual(self.engine.ran_now, [])
        self.settle()
        self.assertEqual(durable, [None])

    # What answers a durable add over the wire runs as soon as the writer
    # knows the add is durable, before the batch's completions: before its
    # bytes leave the backlog and before the add's callbacks (see
    # ``erq.durable``); on the reactor's own run or after the engine's.

    def add(self, journal: Journal, i: int) -> tuple[list[object], list[object]]:
        """A durable add: what its reply saw when it ran (whether the
        add's callbacks had run, and the backlog), and its result."""
        d = journal.add(item(i))
        assert isinstance(d, Durable)
        results = self.fired(d)
        seen: list[object] = []
        d.first.append(lambda: seen.append((list(results), self.writer.backlog)))
        return seen, results

    def test_the_reply_of_a_lone_add_first(self) -> None:
        journal = self.opened("a")
        seen, results = self.add(journal, 2)
        self.end_of_turn()
        self.assertEqual(len(self.engine.ran_now), 1)
        self.assertEqual(seen, [([], 10)])
        self.assertEqual((results, self.writer.backlog), ([None], 0))

    def test_the_replies_of_an_engine_batch_first(self) -> None:
        first = self.opened("a")
        second = self.opened("b")
        one, one_results = self.add(first, 2)
        two, two_results = self.add(second, 2)
        self.end_of_turn()
        self.assertEqual(len(self.engine.queued), 1)
        self.engine.run_one()
        self.assertEqual((one, two), ([], []))
        engine_finished(self.writer)
        # Both replies before either add's callbacks.
        self.assertEqual((one, two), ([([], 20)], [([], 20)]))
        self.assertEqual((one_results, two_results), ([None], [None]))

    def test_a_reply_that_journals_is_sent_after_the_completions(self) -> None:
        """What a reply does to a journal waits until the batches taken
        back are completed, as anything done from their callbacks does."""
        journal = self.opened("a")
        d = journal.add(item(2))
        assert isinstance(d, Durable)
        results = self.fired(d)
        later: list[list[object]] = []
        batches: list[int] = []

        def reply() -> None:
            later.append(self.fired(journal.add(item(3))))
            batches.append(len(self.engine.ran_now) + len(self.engine.queued))

        d.first.append(reply)
        self.end_of_turn()
        self.assertEqual((results, batches), ([None], [1]))
        self.settle()
        self.assertEqual(later, [[None]])
        self.assertEqual(self.replayed("a"), [item(i).data for i in (1, 2, 3)])

    def test_no_reply_first_when_a_lone_add_fails(self) -> None:
        journal = self.opened("a")
        self.engine.run_error = errno.EIO
        seen, results = self.add(journal, 2)
        self.end_of_turn()
        self.assertEqual(seen, [])
        self.assertIsInstance(results[0], Failure)

    def test_no_reply_first_when_an_engine_batch_fails(self) -> None:
        first = self.opened("a")
        second = self.opened("b")
        one, one_results = self.add(first, 2)
        two, two_results = self.add(second, 2)
        self.end_of_turn()
        self.engine.run_one(error=errno.EIO)
        engine_finished(self.writer)
        self.assertEqual((one, two), ([], []))
        self.assertIsInstance(one_results[0], Failure)
        self.assertIsInstance(two_results[0], Failure)


class Replying:
    """A durable add's reply, as the wire hands it over to be sent at
    once (``erq.durable.DirectReply``)."""

    def __init__(self, fd: int = 7) -> None:
        self.reply = b"STORED\r\n"
        self.fd = fd
        self.asked = 0
        self.counts: list[int] = []

    def socket(self) -> int:
        self.asked += 1
        return self.fd

    def sent(self, count: int) -> None:
        self.counts.append(count)


class RepliesAtOnceTests(LoneCase):
    """The reactor's own run of a lone durable add sends the add's reply
    itself, as soon as the add is durable, where the wire says its socket
    takes it now (see ``Durable.direct``)."""

    def replying(
        self, journal: Journal, i: int, fd: int = 7
    ) -> tuple[Replying, list[object], list[list[int]]]:
        d = journal.add(item(i))
        assert isinstance(d, Durable)
        direct = d.direct = Replying(fd)
        results = self.fired(d)
        # What the reply's own Python found when it ran.
        seen: list[list[int]] = []
        d.first.append(lambda: seen.append(list(direct.counts)))
        return direct, results, seen

    def test_the_reply_leaves_with_the_run(self) -> None:
        journal = self.opened("a")
        direct, results, seen = self.replying(journal, 2)
        self.end_of_turn()
        self.assertEqual(self.engine.replied_now, [[(7, b"STORED\r\n")]])
        # Sent before any Python of the reply ran.
        self.assertEqual(seen, [[8]])
        self.assertEqual(results, [None])
        engine = self.writer._dispatch.engine
        assert engine is not None
        self.assertEqual((engine.inline, engine.replied), (1, 1))
        self.assertEqual(self.replayed("a"), [item(1).data, item(2).data])

    def test_what_the_socket_does_not_take(self) -> None:
        journal = self.opened("a")
        self.engine.reply_room = 3
        direct, results, seen = self.replying(journal, 2)
        self.end_of_turn()
        self.assertEqual((direct.counts, seen, results), ([3], [[3]], [None]))

    def test_a_socket_that_cannot_take_it_now(self) -> None:
        journal = self.opened("a")
        direct, results, seen = self.replying(journal, 2, fd=-1)
        self.end_of_turn()
        self.assertEqual(direct.asked, 1)
        self.assertEqual((self.engine.replied_now, len(self.engine.ran_now)), ([], 1))
        self.assertEqual((direct.counts, seen, results), ([], [[]], [None]))

    def test_no_reply_when_the_run_fails(self) -> None:
        journal = self.opened("a")
        self.engine.run_error = errno.EIO
        direct, results, seen = self.replying(journal, 2)
        self.end_of_turn()
        self.assertEqual(len(self.engine.replied_now), 1)
        self.assertEqual((direct.counts, seen), ([], []))
        self.assertIsInstance(results[0], Failure)

    def on_the_thread(
        self, fds: tuple[int, int] = (7, 8)
    ) -> tuple[list[Replying], list[list[object]], list[list[list[int]]]]:
        """Two durable adds, each on a journal of its own: their batch goes
        to the engine's thread, which has run it, not yet taken back."""
        journals = [self.opened(name) for name in "ab"]
        replying = [
            self.replying(journal, 2, fd)
            for journal, fd in zip(journals, fds, strict=True)
        ]
        self.end_of_turn()
        self.assertEqual(len(self.engine.queued), 1)
        self.assertTrue(self.engine.run_one())
        directs, results, seen = (list(part) for part in zip(*replying, strict=True))
        # The thread never sends: the reactor may be reading a request.
        self.assertEqual([direct.asked for direct in directs], [0, 0])
        self.assertEqual((self.engine.replied_back, results), ([], [[], []]))
        return directs, results, seen

    def test_replies_leave_as_the_batch_is_taken_back(self) -> None:
        directs, results, seen = self.on_the_thread()
        engine_finished(self.writer)
        self.assertEqual(
            self.engine.replied_back, [[(7, b"STORED\r\n"), (8, b"STORED\r\n")]]
        )
        # Sent in one call, before any Python of the replies ran.
        self.assertEqual(seen, [[[8]], [[8]]])
        self.assertEqual(results, [[None], [None]])
        engine = self.writer._dispatch.engine
        assert engine is not None
        self.assertEqual(
            (engine.inline, engine.replied, engine.replied_back), (0, 0, 2)
        )
        self.assertEqual(self.replayed("b"), [item(1).data, item(2).data])

    def test_taken_back_what_the_socket_does_not_take(self) -> None:
        self.engine.reply_room = 3
        directs, results, seen = self.on_the_thread()
        engine_finished(self.writer)
        self.assertEqual([direct.counts for direct in directs], [[3], [3]])
        self.assertEqual((seen, results), ([[[3]], [[3]]], [[None], [None]]))

    def test_taken_back_a_socket_that_cannot_take_it_now(self) -> None:
        directs, results, seen = self.on_the_thread(fds=(-1, 8))
        engine_finished(self.writer)
        self.assertEqual([direct.asked for direct in directs], [1, 1])
        # The first goes the usual way; the second leaves at once.
        self.assertEqual(self.engine.replied_back, [[(8, b"STORED\r\n")]])
        self.assertEqual((seen, results), ([[[]], [[8]]], [[None], [None]]))

    def test_no_reply_when_the_batch_on_the_thread_fails(self) -> None:
        journals = [self.opened(name) for name in "ab"]
        replying = [self.replying(journal, 2) for journal in journals]
        self.end_of_turn()
        self.assertTrue(self.engine.run_one(error=errno.EIO))
        engine_finished(self.writer)
        self.assertEqual(self.engine.replied_back, [])
        self.settle()
        self.assertEqual(self.engine.replied_back, [])
        self.assertEqual([direct.asked for direct, _, _ in replying], [0, 0])
        # Refused the usual way, none of their replies' Python run first.
        for direct, results, seen in replying:
            (result,) = results
            self.assertIsInstance(result, Failure)
            self.assertEqual((direct.counts, seen), ([], []))


class SharedSyncTests(HandOffCase):
    """Which of its syncs the engine may cover with another file's flush:
    those of appends that overwrite what one of its full syncs made durable,
    on a file system that says that files may share a flush (see "Shared
    flushes" in ``erq.journal.engine``)."""

    shared_flushes = True

    def syncs(self) -> list[bytes | bool | int | None]:
        (ops,) = self.engine.queued
        return [data for _, data in ops if not isinstance(data, bytes)]

    def test_appends_within_what_a_full_sync_covered(self) -> None:
        self.assertTrue(self.writer._dispatch.shares_flushes)
        journal = self.opened("a")
        segment = journal._current
        assert segment is not None
        f = segment.file
        # The zeros written ahead were synced on the Python loop, which
        # does not say so: the engine's first sync is full.
        self.assertGreater(f.zeroed, f.offset)
        self.assertEqual(f.covered, 0)
        journal.add(item(2))
        self.assertEqual(self.syncs(), [None])
        self.settle()
        self.assertEqual(f.covered, f.zeroed)
        # Now an append over those zeros needs no metadata.
        journal.add(item(3))
        self.assertEqual(self.syncs(), [False])
        self.settle()
        # A cut drops what was covered past it.
        f.covered = f.offset + 5
        f.needs_cut = True
        journal.add(item(4))
        self.assertEqual(self.engine.queued, deque())
        self.settle()
        self.assertLessEqual(f.covered, f.offset)
        self.assertEqual(self.replayed("a"), [item(i).data for i in (1, 2, 3, 4)])

    def test_a_lone_add_asks_for_the_same_syncs(self) -> None:
        """The reactor's own run of a lone add (see "A lone durable write"
        in ``erq.journal.engine``) shares a flush where the thread's would."""
        journal = self.opened("a")
        segment = journal._current
        assert segment is not None
        f = segment.file
        self.writer.linger = 0.002
        for i in (2, 3):
            durable = self.fired(journal.add(item(i)))
            self.reactor.advance(0)
            self.assertEqual(durable, [None])
        syncs = [
            [data for _, data in ops if not isinstance(data, bytes)]
            for ops in self.engine.ran_now
        ]
        self.assertEqual(syncs, [[None], [False]])
        self.assertEqual(f.covered, f.zeroed)
        self.assertEqual(self.replayed("a"), [item(i).data for i in (1, 2, 3)])

    def test_files_known_on_the_device_are_not_asked_again(self) -> None:
        """Which device a file is on is asked once, as it is opened; the
        engine is told which files are on its device, instead of asking
        each batch."""
        runner = self.writer._dispatch.engine
        assert runner is not None
        device = os.stat(self.base).st_dev
        runner.device = device
        journal = self.opened("a")
        segment = journal._current
        assert segment is not None
        f = segment.file
        self.assertEqual(f.device, device)
        journal.add(item(2))
        self.settle()
        journal.add(item(3))
        (ops,) = self.engine.queued
        assert f.fd is not None
        self.assertEqual(ops[-1], (f.fd, True))
        self.settle()
        # A file on another device is synced in full: nothing to ask.
        f.device = device + 1
        journal.add(item(4))
        self.assertEqual(self.syncs(), [None])
        self.settle()
        self.assertEqual(self.replayed("a"), [item(i).data for i in (1, 2, 3, 4)])

    def test_a_failed_full_sync_covers_nothing(self) -> None:
        journal = self.opened("a")
        segment = journal._current
        assert segment is not None
        refused = self.fired(journal.add(item(2)))
        self.engine.run_one(error=errno.EIO)
        engine_finished(self.writer)
        self.assertIsInstance(refused[0], Failure)
        self.assertEqual(segment.file.covered, 0)


class UnsharedSyncTests(HandOffCase):
    """On a file system where files may not share a flush (btrfs, zfs,
    overlayfs, tmpfs, nfs, fuse, or one unknown), every sync the engine is
    asked for is a full fdatasync of its own."""

    shared_flushes = False

    def syncs(self) -> list[bytes | bool | int | None]:
        (ops,) = self.engine.queued
        return [data for _, data in ops if not isinstance(data, bytes)]

    def test_every_sync_in_full(self) -> None:
        self.assertFalse(self.writer._dispatch.shares_flushes)
        journal = self.opened("a")
        segment = journal._current
        assert segment is not None
        f = segment.file
        for i in range(2, 6):
            journal.add(item(i))
            self.assertEqual(self.syncs(), [None])
            self.settle()
            # Within what an earlier sync covered, and still in full.
            self.assertLess(f.offset, f.covered)
        self.assertEqual(self.replayed("a"), [item(i).data for i in range(1, 6)])

    def test_unless_told_a_writer_shares_no_flush(self) -> None:
        writer = JournalWriter(
            self.reactor,
            self.pool,  # type: ignore[arg-type]
            engine=StepEngine(),
        )
        self.assertFalse(writer._dispatch.shares_flushes)


class WriteOutTests(HandOffCase):
    """A file appended to and not synced is written out (the kernel told to
    start writing it to the disk) once each time ``WRITE_OUT`` more bytes
    have gathered, not with every batch: see "Writing out what is not
    synced" in ``erq.journal.engine``."""

    size = 100_000

    def add_all(self, journal: Journal, count: int) -> None:
        """Items 1 to ``count``, each batch run as it goes."""
        for i in range(1, count + 1):
            journal.add(item(i, self.size))
            self.settle()

    def write_outs(self) -> list[tuple[int, int, int]]:
        """Of each write-out asked for: its end, where the file's appends
        ended once its job's had run (counted from the engine's first
        append), and how many ops followed it in its job."""
        found = []
        appended = 0
        for job in self.engine.submitted:
            appended += sum(len(data) for _, data in job if isinstance(data, bytes))
            for index, (_, data) in enumerate(job):
                if type(data) is int:
                    found.append((data, appended, len(job) - index - 1))
        return found

    def test_a_file_not_synced_is_written_out_every_write_out_bytes(self) -> None:
        journal = self.journal("n", sync="never")
        count = 3 * WRITE_OUT // self.size + 2
        self.add_all(journal, count)
        segment = journal._current
        assert segment is not None
        f = segment.file
        # The first item's batch opened the file on the Python loop.
        self.assertGreater(len(self.engine.submitted), count - 3)
        first = f.offset - sum(
            len(data)
            for job in self.engine.submitted
            for _, data in job
            if isinstance(data, bytes)
        )
        outs = self.write_outs()
        self.assertEqual(len(outs), 3)
        last = 0
        for end, appended, after in outs:
            # Each once a megabyte more gathered, up to the file's end then,
            # after everything else its job does.
            self.assertEqual(end, first + appended)
            self.assertGreaterEqual(end - last, WRITE_OUT)
            self.assertLess(end - last, WRITE_OUT + self.size + 100)
            self.assertEqual(after, 0)
            last = end
        self.assertEqual(f.written_out, last)
        self.assertLess(f.offset - last, WRITE_OUT)
        self.assertEqual(
            self.replayed("n"), [item(i, self.size).data for i in range(1, count + 1)]
        )

    def test_a_synced_file_is_not_written_out(self) -> None:
        journal = self.opened("a")
        for i in range(2, 3 * WRITE_OUT // self.size + 2):
            self.fired(journal.add(item(i, self.size)))
            self.settle()
        self.assertGreater(len(self.engine.submitted), 3)
        self.assertEqual(self.write_outs(), [])

    def test_a_lone_sync_counts_as_written_out(self) -> None:
        """The reactor's own sync of a lone durable set counts as the
        engine's do: removals alone after a megabyte of such sets are not
        written out."""
        journal = self.opened("l")
        # A linger, so that the end of each turn sends a lone set.
        self.writer.linger = 0.002
        size = 4_000
        for i in range(2, WRITE_OUT // size + 12):
            self.assertEqual(self.fired(journal.add(item(i, size))), [])
            self.reactor.advance(0)
            self.settle()
        # Over a megabyte of sets was synced by the reactor.
        self.assertGreater(len(self.engine.ran_now) * size, WRITE_OUT)
        segment = journal._current
        assert segment is not None
        self.assertEqual(segment.file.written_out, segment.file.offset)
        for i in range(2, 12):
            journal.remove(item(i, size))
        self.assertEqual(len(self.engine.queued), 0)
        self.reactor.advance(0.01)
        self.settle()
        self.assertEqual(self.write_outs(), [])

    def test_a_sync_counts_as_written_out(self) -> None:
        """Between the syncs of a period, a write-out is asked for only once
        a megabyte gathered since the last sync."""
        journal = self.journal("p", sync=0.05)
        half = WRITE_OUT // 2 // self.size
        self.add_all(journal, half)
        self.reactor.advance(0.05)
        self.settle()
        segment = journal._current
        assert segment is not None
        synced = segment.file.offset
        self.assertEqual(segment.file.written_out, synced)
        for i in range(half + 1, 2 * half + 2):
            journal.add(item(i, self.size))
            self.settle()
        self.assertEqual(self.write_outs(), [])
        self.assertLess(segment.file.offset - synced, WRITE_OUT + self.size)


class FailingOps(FileOps):
    def __init__(self) -> None:
        self.failing = 0

    def write(self, fd: int, data: bytes) -> None:
        if self.failing:
            raise OSError(self.failing, os.strerror(self.failing))
        super().write(fd, data)


POLICIES: list[SyncPolicy] = ["always", "never"]


class RandomInterleavingTests(HandOffCase):
    """Many random schedules of records, failures, timers and thread steps:
    in each, every durable add is answered exactly once, the writer stops,
    and replay finds every item whose add succeeded and no other."""

    def test_random_schedules(self) -> None:
        for seed in range(150):
            self.run_schedule(seed)

    def run_schedule(self, seed: int) -> None:
        rnd = random.Random(seed)
        self.setUp()
        ops = FailingOps()
        self.writer.file_ops = ops
        journals = {
            name: self.journal(name, sync=rnd.choice(POLICIES))
            for name in ("a", "b", "c")
        }
        answers: dict[tuple[str, int], list[object]] = {}
        next_id = dict.fromkeys(journals, 1)
        for _ in range(80):
            action = rnd.random()
            if action < 0.35:
                name = rnd.choice(list(journals))
                i = next_id[name]
                next_id[name] += 1
                d = journals[name].add(item(i))
                if d is not None:
                    answers[(name, i)] = self.fired(d)
            elif action < 0.45:
                ops.failing = errno.ENOSPC if ops.failing == 0 else 0
            elif action < 0.6:
                self.pool.run_next()
            elif action < 0.72:
                self.engine.run_one()
            elif action < 0.8:
                if self.engine.notified:
                    self.engine.notified = 0
                engine_finished(self.writer)
            elif action < 0.9:
                self.reactor.run_calls()
            else:
                self.reactor.advance(rnd.choice([0.0, self.writer.retry_delay]))
        ops.failing = 0
        self.reactor.advance(self.writer.retry_delay)
        stopped = self.fired(self.writer.stop())
        self.settle()
        self.assertEqual(stopped, [None], f"seed {seed}")
        for key, result in answers.items():
            self.assertEqual(len(result), 1, f"seed {seed}: {key} not answered")
            if isinstance(result[0], Failure):
                result[0].trap(JournalError)
        self.assertEqual(self.writer.backlog, 0, f"seed {seed}")


class BatchObserverTests(HandOffCase):
    """``on_batch`` hears of each batch as the reactor takes it back: how
    long since it left for the thread, and the bytes it wrote."""

    def observe(self) -> list[tuple[float, int]]:
        seen: list[tuple[float, int]] = []
        self.writer.on_batch = lambda seconds, size: seen.append((seconds, size))
        return seen

    def test_a_python_loop_batch(self) -> None:
        seen = self.observe()
        journal = self.journal("a")
        durable = self.fired(journal.add(item(1)))
        self.assertEqual(len(self.pool.work), 1)
        self.reactor.advance(0.25)
        self.pool.run_next()
        self.assertEqual(seen, [])
        self.reactor.run_calls()
        self.assertEqual(durable, [None])
        # The segment's header and the record: all the journal holds.
        self.assertEqual(seen, [(0.25, journal.size)])

    def test_two_engine_batches_back_in_one_poll(self) -> None:
        journal = self.opened("a")
        size = journal.size
        seen = self.observe()
        self.fired(journal.add(item(2)))
        self.reactor.advance(0.25)
        self.fired(journal.add(item(3)))
        self.assertEqual(len(self.engine.queued), 2)
        self.reactor.advance(0.5)
        self.engine.run_one()
        self.engine.run_one()
        engine_finished(self.writer)
        record = (journal.size - size) // 2
        self.assertEqual(seen, [(0.75, record), (0.5, record)])

    def test_a_failed_batch_wrote_nothing(self) -> None:
        journal = self.opened("a")
        seen = self.observe()
        durable = self.fired(journal.add(item(2)))
        self.engine.run_one(error=errno.ENOSPC)
        engine_finished(self.writer)
        self.assertIsInstance(durable[0], Failure)
        self.assertEqual(seen, [(0.0, 0)])

    def test_batches_sent_before_the_observer_are_not_told(self) -> None:
        journal = self.journal("a")
        self.fired(journal.add(item(1)))
        seen = self.observe()
        self.settle()
        self.assertEqual(seen, [])
        self.fired(journal.add(item(2)))
        self.settle()
        self.assertEqual(len(seen), 1)
        self.assertEqual(self.writer._dispatch.sent_at, {})

    def test_without_an_observer_nothing_is_kept(self) -> None:
        journal = self.journal("a")
        for i in range(1, 4):
            self.fired(journal.add(item(i)))
        self.assertEqual(self.writer._dispatch.sent_at, {})
        self.settle()


class DaemonThreadTests(SynchronousTestCase):
    def test_a_stuck_writer_does_not_keep_the_process_alive(self) -> None:
        """A writer whose disk never answers: the process still exits once
        its main code is done."""
        script = textwrap.dedent(
            """
            import threading
            from twisted.internet.task import Clock
            from erq.journal import FileOps, Journal, JournalWriter
            from erq.queue import Item

            class Hung(FileOps):
                def write(self, fd, data):
                    threading.Event().wait()

            class Reactor(Clock):
                def callFromThread(self, f, *args):
                    pass

            writer = JournalWriter(Reactor(), file_ops=Hung())
            Journal(DIRECTORY, writer, sync="never").add(
                Item(1, b"x", 0, None, 0.0)
            )
            print("journaled", flush=True)
            """
        ).replace("DIRECTORY", repr(os.path.abspath(self.mktemp())))
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            timeout=60,
            text=True,
        )
        self.assertEqual((done.returncode, done.stdout), (0, "journaled\n"))
