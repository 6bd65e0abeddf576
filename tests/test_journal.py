"""Tests for erq.journal.journal (and the writer under it): group commit,
batches, backlog, lingering, sync policies, write failures and erase."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Generator
from typing import Any, cast

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure

from erq.journal import (
    HEADER_SIZE,
    FileOps,
    Journal,
    JournalError,
    JournalWriter,
    compaction,
    readbehind,
    writer,
)
from erq.journal import journal as journal_class_module
from erq.queue import Item
from tests.support import (
    CountingOps,
    GatedOps,
    JournalTestCase,
    ManualPool,
    ids,
    item,
    reactor,
    segment_files,
)


class GroupCommitTests(JournalTestCase):
    def test_one_batch_one_sync(self) -> None:
        """While one batch is written, the next fills; all the adds in it
        share one write and one fsync."""
        pool = ManualPool()
        ops = CountingOps()
        writer = self.fake_writer(pool, ops)
        journal = Journal(self.dir, writer, sync="always")
        fired: list[int] = []
        first = journal.add(item(1))
        assert first is not None
        first.addCallback(lambda _: fired.append(1))
        self.assertEqual(len(pool.work), 1)

        def note(_: None, i: int) -> None:
            fired.append(i)

        for i in range(2, 1002):
            d = journal.add(item(i))
            assert d is not None
            d.addCallback(note, i)
        # Nothing more goes to the thread while the first batch is out.
        self.assertEqual(len(pool.work), 1)
        pool.run_one()
        self.assertEqual(fired, [1])
        self.assertEqual(len(pool.work), 1)
        syncs_before = ops.syncs
        pool.run_one()
        self.assertEqual(len(fired), 1001)
        self.assertEqual(ops.syncs - syncs_before, 1)
        self.assertEqual(writer.batches, 2)
        self.assertEqual(ops.writes, 2)

    def test_many_queues_share_a_batch(self) -> None:
        pool = ManualPool()
        ops = CountingOps()
        writer = self.fake_writer(pool, ops)
        first = Journal(os.path.join(self.dir, "a"), writer)
        first.add(item(1))
        journals = [Journal(os.path.join(self.dir, str(n)), writer) for n in range(5)]
        ds = [j.add(item(i)) for j in journals for i in range(1, 4)]
        pool.run_one()
        self.assertEqual(len(pool.work), 1)
        pool.run_one()
        self.assertTrue(all(d is not None and d.called for d in ds))
        # One sync per file in the batch.
        self.assertEqual(writer.batches, 2)

    @inlineCallbacks
    def test_real_thread(self) -> Generator[Deferred[Any], Any, None]:
        ops = GatedOps()
        writer = self.real_writer(ops)
        journal = Journal(self.dir, writer, sync="always")
        ds = [journal.add(item(i)) for i in range(1, 5001)]
        # However fast the thread, the first batch is still on it.
        ops.gate.set()
        yield gatherResults([d for d in ds if d is not None])
        # The first add left alone, the rest together.
        self.assertEqual(writer.batches, 2)
        self.assertLessEqual(ops.syncs, 4)
        yield journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 5001)))

    @inlineCallbacks
    def test_stop_writes_and_closes(self) -> Generator[Deferred[Any], Any, None]:
        writer = JournalWriter(reactor, file_ops=CountingOps())
        writer.start()
        journal = Journal(self.dir, writer, sync="never")
        for i in range(1, 101):
            journal.add(item(i))
        yield writer.stop()
        self.assertEqual(writer._thread.files, set())
        _, replayed = self.replay()
        self.assertEqual(len(replayed.items), 100)
        # After stop, durable adds are refused.
        late = Journal(os.path.join(self.dir, "late"), writer)
        d = late.add(item(1))
        assert d is not None
        yield self.assertFailure(d, JournalError)
        self.assertIsNone(writer._thread.shutdown_trigger)

    @inlineCallbacks
    def test_restart(self) -> Generator[Deferred[Any], Any, None]:
        writer = JournalWriter(reactor)
        writer.start()
        first = Journal(os.path.join(self.dir, "a"), writer)
        yield first.close()
        yield writer.stop()
        writer.start()
        self.addCleanup(writer.stop)
        second = Journal(os.path.join(self.dir, "b"), writer)
        added = second.add(item(1))
        assert added is not None
        yield added
        yield second.close()
        self.assertEqual(segment_files(os.path.join(self.dir, "b")), ["00000001.seg"])


class RemoveManyTests(JournalTestCase):
    def test_remove_many_is_remove_for_each(self) -> None:
        segment = HEADER_SIZE + 10 * 60
        journal = Journal(self.dir, self.fake_writer(), segment_size=segment)
        items = [item(i) for i in range(1, 41)]
        for it in items:
            journal.add(it)
        self.assertEqual(len(segment_files(self.dir)), 4)
        journal.open(items[30])
        journal.remove_many(items[:30])
        journal.remove_many([])
        # The segments whose items are all gone are deleted.
        self.assertEqual(len(segment_files(self.dir)), 2)
        journal.remove_many([items[30], items[35]])
        journal.close()
        _, replayed = self.replay(segment_size=segment)
        self.assertEqual(ids(replayed.items), [32, 33, 34, 35, 37, 38, 39, 40])


class RecordSizeTests(JournalTestCase):
    def test_records_after_removes_are_where_the_journal_says(self) -> None:
        """Every record counts in its segment's size, where the next one's
        offset is taken: items left on disk after removes are read back
        whole, and the journal's size is what its files hold."""
        pool = ManualPool()
        journal = Journal(self.dir, self.fake_writer(pool), sync="never")
        # While the writer's thread is busy, the records gather.
        for i in range(1, 11):
            journal.add(item(i))
        for i in range(1, 6):
            journal.remove(item(i))
        for i in range(11, 21):
            journal.add(item(i), in_memory=False)
        got: list[Item] = []
        journal.read_behind(1 << 20).addCallback(got.extend)
        pool.run_all()
        self.assertEqual(ids(got), list(range(11, 21)))
        self.assertEqual([it.data for it in got], [item(i).data for i in range(11, 21)])
        closed = journal.close()
        pool.run_all()
        self.successResultOf(closed)
        files = [os.path.join(self.dir, name) for name in segment_files(self.dir)]
        self.assertEqual(journal.size, sum(map(os.path.getsize, files)))


class AddManyTests(JournalTestCase):
    def test_one_deferred_for_a_run_across_segments(self) -> None:
        pool = ManualPool()
        ops = CountingOps()
        segment = HEADER_SIZE + 10 * 60
        writer = self.fake_writer(pool, ops)
        journal = Journal(self.dir, writer, sync="always", segment_size=segment)
        items = [item(i) for i in range(1, 31)]
        durable = journal.add_many(items, [True] * 20 + [False] * 10)
        assert durable is not None
        pool.run_all()
        self.assertTrue(durable.called)
        self.assertEqual(len(segment_files(self.dir)), 3)
        self.assertEqual(writer.batches, 1)
        journal.close()
        pool.run_all()
        _, replayed = self.replay(max_memory=200, segment_size=segment)
        # The last ten were added behind, as said.
        self.assertEqual(ids(replayed.items), list(range(1, 21)))
        self.assertEqual(replayed.behind_items, 10)

    def test_a_failed_write_fails_the_run(self) -> None:
        pool = ManualPool()
        ops = CountingOps()
        journal = Journal(self.dir, self.fake_writer(pool, ops), sync="always")
        ops.fail_writes = errno.ENOSPC
        durable = journal.add_many([item(1), item(2)], [True, True])
        assert durable is not None
        failed: list[Failure] = []
        durable.addErrback(failed.append)
        pool.run_all()
        self.assertEqual(len(failed), 1)
        self.assertIsInstance(failed[0].value, JournalError)


class BatchMemoryTests(JournalTestCase):
    def test_a_written_batch_holds_its_records_once(self) -> None:
        """Until the reactor takes a batch back, it keeps the bytes it wrote
        (for a retry), not also the data of every item in it."""
        pool = ManualPool()
        writer = self.fake_writer(pool)
        journal = Journal(self.dir, writer, sync="never")
        datas = [b"item %d " % i * 50 for i in range(1, 101)]
        for i in range(1, 101):
            journal.add(Item(i, datas[i - 1], 0, None, 1.0), in_memory=False)
        # The first batch makes the directory, which is waited for: taken
        # back at once, it sends the second.
        pool.run_one()
        pool.run_one()
        # Nothing waits for the second batch: the writer still holds it.
        self.assertEqual(writer._dispatch.on_thread, 1)
        controls = [bytes(400)]
        self.assertEqual(
            {sys.getrefcount(d) for d in datas}, {sys.getrefcount(c) for c in controls}
        )


class BacklogTests(JournalTestCase):
    """The bytes of items journaled and not yet written, and a word when
    half of a backlog past the limit is written."""

    def test_counted_until_written(self) -> None:
        pool = ManualPool()
        writer = self.fake_writer(pool)
        writer.max_backlog = 1000
        journal = Journal(self.dir, writer, sync="never")
        journal.replay(1 << 30)
        for i in range(30):
            journal.add(item(i, size=100))
        self.assertEqual(writer.backlog, 3000)
        drained: list[int] = []
        writer.when_drained(lambda: drained.append(writer.backlog))
        # The first item went at once; the rest wait for it.
        pool.run_one()
        self.assertEqual((writer.backlog, drained), (2900, []))
        pool.run_one()
        self.assertEqual((writer.backlog, drained), (0, [0]))
        self.assertFalse(pool.work)

    def test_said_at_once_under_half(self) -> None:
        writer = self.fake_writer()
        writer.max_backlog = 1000
        drained: list[int] = []
        writer.when_drained(lambda: drained.append(writer.backlog))
        self.assertEqual(drained, [0])

    def test_abandoned_writes_are_not_counted(self) -> None:
        pool = ManualPool()
        writer = self.fake_writer(pool)
        journal = Journal(self.dir, writer, sync="never")
        journal.replay(1 << 30)
        journal.add(item(1, size=100))
        pool.run_all()
        stopped = writer.stop()
        # Journaled while the writer closes its files: refused, and so not
        # waiting to be written either.
        journal.add(item(2, size=100))
        self.assertEqual(writer.backlog, 0)
        pool.run_all()
        self.successResultOf(stopped)


class LingerTests(JournalTestCase):
    """Records that nothing waits for gather for ``linger`` seconds and go
    to the thread together; anything waited for goes at once and takes them
    along, in order."""

    def lingering_writer(self, pool: ManualPool, ops: FileOps) -> JournalWriter:
        writer = self.fake_writer(pool, ops)
        writer.linger = 0.002
        return writer

    def test_unwaited_records_share_one_hand_off(self) -> None:
        pool = ManualPool()
        ops = CountingOps()
        writer = self.lingering_writer(pool, ops)
        journal = Journal(self.dir, writer, sync="never")
        items = [item(i) for i in range(1, 101)]
        for it in items:
            self.assertIsNone(journal.add(it))
        for it in items[:50]:
            journal.remove(it)
        self.assertEqual(len(pool.work), 0)
        self.clock.advance(0.001)
        self.assertEqual(len(pool.work), 0)
        self.clock.advance(0.001)
        self.assertEqual(len(pool.work), 1)
        pool.run_all()
        self.assertEqual((writer.batches, ops.writes, ops.syncs), (1, 1, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        journal.close()
        pool.run_all()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(51, 101)))

    def test_a_durable_add_waits_only_for_the_end_of_the_turn(self) -> None:
        pool = ManualPool()
        ops = CountingOps()
        writer = self.lingering_writer(pool, ops)
        journal = Journal(self.dir, writer, sync="always")
        journal.add(item(1))
        journal.remove(item(1))
        # Everything asked for in this turn of the reactor goes together,
        # the remove before the adds that follow it.
        adds = [journal.add(item(i)) for i in range(2, 102)]
        self.assertEqual(len(pool.work), 0)
        self.clock.advance(0)
        self.assertEqual(len(pool.work), 1)
        pool.run_all()
        self.assertTrue(all(d is not None and d.called for d in adds))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((writer.batches, ops.writes, ops.syncs), (1, 1, 1))
        # A durable add after a remove that is already lingering takes it
        # along at the end of the turn, not 2 ms later.
        journal.remove(item(2))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        late = journal.add(item(102))
        assert late is not None
        self.clock.advance(0)
        pool.run_all()
        self.assertTrue(late.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        journal.close()
        self.clock.advance(0)
        pool.run_all()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(3, 103)))

    def test_the_next_durable_batch_leaves_before_this_one_is_answered(
        self,
    ) -> None:
        pool = ManualPool()
        writer = self.lingering_writer(pool, CountingOps())
        journal = Journal(self.dir, writer, sync="always")
        first = journal.add(item(1))
        assert first is not None
        self.clock.advance(0)
        second = journal.add(item(2))
        assert second is not None
        self.clock.advance(0)
        # While the second waits for the first batch, the first completes:
        # the second is on its way to the thread before the first's
        # callbacks run.
        seen: list[int] = []
        first.addCallback(lambda _: seen.append(len(pool.work)))
        pool.run_one()
        self.assertEqual(seen, [1])
        self.assertFalse(second.called)
        pool.run_one()
        self.assertTrue(second.called)
        self.assertEqual(writer.batches, 2)

    def test_a_read_back_waits_only_for_the_end_of_the_turn(self) -> None:
        pool = ManualPool()
        writer = self.lingering_writer(pool, CountingOps())
        journal = Journal(self.dir, writer, sync="never")
        for i in range(1, 11):
            journal.add(item(i), in_memory=False)
        got: list[list[Item]] = []
        journal.read_behind(1 << 20).addCallback(got.append)
        self.clock.advance(0)
        pool.run_all()
        self.assertEqual([ids(g) for g in got], [list(range(1, 11))])

    @inlineCallbacks
    def test_stop_before_start_writes_what_lingers(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """A writer of its own thread that was never started (it starts
        with its first batch) writes what lingers when it is stopped, and
        stays stopped."""
        writer = JournalWriter(reactor, file_ops=CountingOps(), linger=60.0)
        journal = Journal(self.dir, writer, sync="never")
        for i in range(1, 11):
            journal.add(item(i))
        yield writer.stop()
        self.assertTrue(writer.stopping)
        self.assertIsNone(writer._thread.own)
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 11)))

    @inlineCallbacks
    def test_stop_does_not_wait_for_the_timer(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        writer = JournalWriter(reactor, file_ops=CountingOps(), linger=60.0)
        writer.start()
        journal = Journal(self.dir, writer, sync="never")
        for i in range(1, 11):
            journal.add(item(i))
        yield writer.stop()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 11)))


class SyncPolicyTests(JournalTestCase):
    def test_always(self) -> None:
        ops = CountingOps()
        journal = Journal(self.dir, self.fake_writer(ops=ops), sync="always")
        d = journal.add(item(1))
        self.assertIsInstance(d, Deferred)
        self.assertTrue(d is not None and d.called)
        self.assertEqual(ops.syncs, 1)
        self.assertIsNone(journal.remove(item(1)))  # type: ignore[func-returns-value]
        self.assertEqual((ops.syncs, ops.writes), (1, 2))
        # The next durable add's fsync covers the removal before it.
        journal.add(item(2))
        self.assertEqual((ops.syncs, ops.writes), (2, 3))

    def test_always_syncs_no_batch_without_a_durable_add(self) -> None:
        """Removals, opens and aborts are written but not fsynced on their
        own: nobody waits for them, and an fsync of theirs would hold up
        the next set's."""
        ops = CountingOps()
        journal = Journal(self.dir, self.fake_writer(ops=ops), sync="always")
        journal.add(item(1))
        journal.add(item(2))
        syncs = ops.syncs
        journal.open(item(1))
        journal.abort(item(1))
        journal.remove(item(1))
        journal.remove_many([item(2)])
        self.assertEqual(ops.syncs, syncs)
        self.assertEqual(ops.writes, 6)

    def test_never(self) -> None:
        ops = CountingOps()
        journal = Journal(self.dir, self.fake_writer(ops=ops), sync="never")
        for i in range(1, 50):
            self.assertIsNone(journal.add(item(i)))
        self.assertEqual((ops.syncs, ops.writes), (0, 49))
        journal.close()
        self.assertEqual(ops.syncs, 1)

    def test_interval(self) -> None:
        ops = CountingOps()
        writer = self.fake_writer(ops=ops)
        journal = Journal(self.dir, writer, sync=0.5)
        self.assertIsNone(journal.add(item(1)))
        self.assertEqual(ops.syncs, 0)
        self.clock.advance(0.2)
        journal.add(item(2))
        self.assertEqual(ops.syncs, 0)
        # A quiet journal still gets its sync, about 0.5 s after the last.
        self.clock.advance(0.299)
        self.assertEqual(ops.syncs, 0)
        self.clock.advance(0.001)
        self.assertEqual(ops.syncs, 1)
        # Nothing new: no more syncs.
        self.clock.advance(5)
        self.assertEqual(ops.syncs, 1)
        # A batch long after the last sync is synced as it goes.
        journal.add(item(3))
        self.assertEqual(ops.syncs, 2)
        journal.add(item(4))
        self.assertEqual(ops.syncs, 2)
        self.clock.advance(0.5)
        self.assertEqual(ops.syncs, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_policy(self) -> None:
        writer = self.fake_writer()
        self.assertRaises(ValueError, Journal, self.dir, writer, "sometimes")
        self.assertRaises(ValueError, Journal, self.dir, writer, -1.0)


class FailureTests(JournalTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.events: list[dict[str, Any]] = []
        log = Logger(observer=cast(ILogObserver, self.events.append))
        # Every part of the journal that logs.
        for module in (journal_class_module, writer, compaction, readbehind):
            self.patch(module, "_log", log)

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["log_level"] == LogLevel.error]

    def check_write_failure(self, partial: bool, on_sync: bool) -> None:
        ops = CountingOps()
        ops.partial = partial
        writer = self.fake_writer(ops=ops)
        # ``replay`` below makes a writer of its own, with its own clock.
        clock = self.clock
        journal = Journal(self.dir, writer, sync="always")
        for i in range(1, 4):
            journal.add(item(i))
        journal.remove(item(1))
        if on_sync:
            ops.fail_syncs = errno.EIO
        else:
            ops.fail_writes = errno.ENOSPC
        failed = [journal.add(item(i)) for i in range(4, 7)]
        journal.remove(item(2))
        journal.open(item(3))
        for d in failed:
            assert d is not None
            failure = self.failureResultOf(d, JournalError)
            expected = "input/output error" if on_sync else "no space left on device"
            self.assertEqual(str(failure.value), expected)
        self.assertEqual(len(self.errors()), 1)
        # Still failing: refused at once, without a record; no more log lines.
        more = journal.add(item(7))
        assert more is not None
        self.failureResultOf(more, JournalError)
        self.assertEqual(len(self.errors()), 1)
        # Nothing of the good part was lost or mangled.
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [2, 3])
        self.assertEqual(replayed.damage, [])
        # Item 4 (10 bytes) is still to be written, with the record of its
        # removal; 5 and 6 came after the failure and were never recorded.
        self.assertEqual(writer.backlog, 10)
        ops.fail_writes = ops.fail_syncs = None
        # The retry timer writes what was held back, with no new record.
        clock.advance(writer.retry_delay)
        self.assertEqual(writer.backlog, 0)
        good = journal.add(item(8))
        assert good is not None
        self.successResultOf(good)
        self.assertEqual(writer.backlog, 0)
        journal.close()
        _, replayed = self.replay()
        # What was acknowledged is there, in order (item 3 was open); what
        # was refused is not.
        self.assertEqual(ids(replayed.items), [3, 8])
        self.assertEqual(replayed.damage, [])

    def test_write_fails(self) -> None:
        self.check_write_failure(partial=False, on_sync=False)

    def test_partial_write_is_cut_back(self) -> None:
        self.check_write_failure(partial=True, on_sync=False)

    def test_sync_fails(self) -> None:
        self.check_write_failure(partial=False, on_sync=True)

    def test_a_refused_add_behind_memory_is_not_read_back(self) -> None:
        ops = CountingOps()
        writer = self.fake_writer(ops=ops)
        clock = self.clock
        journal = Journal(self.dir, writer, sync="always")
        journal.add(item(1))
        journal.add(item(2), in_memory=False)
        ops.fail_writes = errno.ENOSPC
        refused = journal.add(item(3), in_memory=False)
        assert refused is not None
        self.failureResultOf(refused, JournalError)
        ops.fail_writes = None
        clock.advance(writer.retry_delay)
        self.assertEqual(ids(self.successResultOf(journal.read_behind(1 << 20))), [2])
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2])

    def test_retry_timer(self) -> None:
        ops = CountingOps()
        writer = self.fake_writer(ops=ops)
        journal = Journal(self.dir, writer, sync="never")
        ops.fail_writes = errno.ENOSPC
        journal.add(item(1))
        self.assertEqual(writer.batches, 1)
        ops.fail_writes = None
        self.clock.advance(writer.retry_delay)
        self.assertEqual(writer.batches, 2)
        self.assertEqual(ops.writes, 1)
        self.assertEqual(
            [e["log_level"] for e in self.events], [LogLevel.error, LogLevel.info]
        )

    def test_failed_rotation_does_not_delete(self) -> None:
        """A write failure in a batch that also deletes a dead segment: the
        delete waits until the forwarded records are written."""
        ops = CountingOps()
        journal = Journal(self.dir, self.fake_writer(ops=ops), segment_size=300)
        held = item(1, 40)
        journal.add(held)
        journal.open(held)
        ops.fail_writes = errno.ENOSPC
        for i in range(2, 20):
            d = journal.add(item(i, 40))
            assert d is not None
            d.addErrback(lambda f: f.trap(JournalError))
            journal.remove(item(i, 40))
        self.assertEqual(segment_files(self.dir), ["00000001.seg"])
        ops.fail_writes = None
        self.clock.advance(1)
        self.assertNotIn("00000001.seg", segment_files(self.dir))
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1])
        self.assertEqual(replayed.reopened, 1)


class EraseTests(JournalTestCase):
    def test_erase(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        journal.add(item(1))
        d = journal.erase()
        self.successResultOf(d)
        self.assertFalse(os.path.exists(self.dir))
        # Nothing after the erase is written.
        late = journal.add(item(2))
        assert late is not None
        self.failureResultOf(late, JournalError)
        journal.remove(item(1))
        self.assertFalse(os.path.exists(self.dir))
        self.assertEqual(journal.size, 0)

    def test_recreate_after_erase(self) -> None:
        pool = ManualPool()
        writer = self.fake_writer(pool)
        journal = Journal(self.dir, writer)
        journal.add(item(1))
        erased = journal.erase()
        again = Journal(self.dir, writer)
        again.add(item(1, 5))
        pool.run_all()
        self.successResultOf(erased)
        again.close()
        pool.run_all()
        _, replayed = self.replay()
        self.assertEqual([it.data for it in replayed.items], [item(1, 5).data])

    def test_recreate_after_erase_while_failing(self) -> None:
        """The old queue's erase waits behind its failed writes; the new
        queue in the same directory must not get ahead of it."""
        pool = ManualPool()
        ops = CountingOps()
        writer = self.fake_writer(pool, ops)
        old = Journal(self.dir, writer, sync="never")
        old.add(item(1, 5))
        ops.fail_writes = errno.ENOSPC
        pool.run_all()
        erased = old.erase()
        new = Journal(self.dir, writer, sync="never")
        new.add(item(1, 7))
        pool.run_all()
        self.assertNoResult(erased)
        ops.fail_writes = None
        self.clock.advance(writer.retry_delay)
        pool.run_all()
        self.successResultOf(erased)
        new.close()
        pool.run_all()
        _, replayed = self.replay()
        self.assertEqual([it.data for it in replayed.items], [item(1, 7).data])

    def test_close_twice(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        journal.add(item(1))
        self.successResultOf(journal.close())
        self.successResultOf(journal.close())
        late = journal.add(item(2))
        assert late is not None
        self.failureResultOf(late, JournalError)
