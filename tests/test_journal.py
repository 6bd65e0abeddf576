"""Tests for erq.journal: replay, group commit, sync policies, damage,
compaction, read-behind and write failures."""

from __future__ import annotations

import errno
import os
import random
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from erq import journal as journal_module
from erq.journal import (
    FILE_HEADER,
    HEADER_SIZE,
    FileOps,
    Journal,
    JournalError,
    JournalWriter,
    compaction,
    files,
    readbehind,
    writer,
)
from erq.journal import journal as journal_class_module
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


class _Base(TestCase):
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


class ReplayTests(_Base):
    """What goes in comes back out, in order."""

    def test_round_trip(self) -> None:
        writer = self.fake_writer()
        journal = Journal(self.dir, writer, name="work")
        items = [item(1), item(2, 0), item(3, 100, expiry=1700000100.125), item(4)]
        items[1].flags = 2**32 - 1
        for it in items:
            journal.add(it)
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2, 3, 4])
        for got, want in zip(replayed.items, items, strict=True):
            self.assertEqual(
                (got.data, got.flags, got.expiry, got.added),
                (want.data, want.flags, want.expiry, want.added),
            )
        self.assertIsNone(replayed.items[0].expiry)
        self.assertEqual(replayed.next_id, 5)
        self.assertEqual((replayed.behind_items, replayed.damage), (0, []))
        with open(os.path.join(self.dir, "name")) as f:
            self.assertEqual(f.read(), "work\n")

    def test_empty_and_missing(self) -> None:
        _, replayed = self.replay()
        self.assertEqual((replayed.items, replayed.next_id), ([], 1))

    def test_remove_anywhere(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        items = [item(i) for i in range(1, 11)]
        for it in items:
            journal.add(it)
        for i in (1, 5, 10):
            journal.remove(items[i - 1])
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [2, 3, 4, 6, 7, 8, 9])
        self.assertEqual(replayed.next_id, 11)

    def test_open_reads_come_back_at_head_in_order(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        items = [item(i) for i in range(1, 8)]
        for it in items:
            journal.add(it)
        journal.remove(items[0])
        journal.open(items[1])
        journal.open(items[2])
        journal.remove(items[2])
        journal.open(items[3])
        journal.open(items[4])
        journal.close()
        journal2, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [2, 4, 5, 6, 7])
        self.assertEqual(replayed.reopened, 3)
        # The replay journaled the aborts: a second replay agrees, and the
        # items are no longer open.
        journal2.close()
        _, again = self.replay()
        self.assertEqual(ids(again.items), [2, 4, 5, 6, 7])
        self.assertEqual(again.reopened, 0)

    def test_abort_puts_back_at_head(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        items = [item(i) for i in range(1, 6)]
        for it in items:
            journal.add(it)
        journal.open(items[0])
        journal.open(items[1])
        journal.abort(items[0])
        journal.abort(items[1])
        # Reopened from the aborted head, and given back again.
        journal.open(items[1])
        journal.abort(items[1])
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [2, 1, 3, 4, 5])
        self.assertEqual(replayed.reopened, 0)

    def test_flush_keeps_open_reads(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        items = [item(i) for i in range(1, 6)]
        for it in items:
            journal.add(it)
        journal.open(items[0])
        journal.open(items[1])
        journal.abort(items[1])
        journal.flush()
        journal.add(item(6))
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 6])
        self.assertEqual(replayed.next_id, 7)

    def test_unknown_ids_are_ignored(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        journal.add(item(5))
        for it in (item(1), item(2), item(99)):
            journal.remove(it)
            journal.open(it)
            journal.abort(it)
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [5])
        self.assertEqual(replayed.next_id, 100)

    def test_appends_to_last_segment_after_replay(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        journal.add(item(1))
        journal.close()
        journal, replayed = self.replay()
        journal.add(item(replayed.next_id))
        journal.close()
        self.assertEqual(segment_files(self.dir), ["00000001.seg"])
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2])

    def test_randomized_against_a_model(self) -> None:
        """Random adds, opens, confirms, aborts, removes and flushes, with
        tiny segments (so compaction and forwarding run a lot), replayed
        and compared with a plain model of the queue."""
        for seed in range(12):
            rng = random.Random(seed)
            directory = os.path.join(self.dir, str(seed))
            writer = self.fake_writer()
            journal = Journal(
                directory, writer, sync="never", segment_size=rng.choice([300, 2000])
            )
            queued: deque[Item] = deque()
            opened: list[Item] = []
            next_id = 1
            for _ in range(1500):
                r = rng.random()
                if r < 0.45 or not (queued or opened):
                    it = item(next_id, rng.randrange(0, 40))
                    next_id += 1
                    journal.add(it)
                    queued.append(it)
                elif r < 0.55 and queued:
                    it = queued.popleft()
                    journal.open(it)
                    opened.append(it)
                elif r < 0.7 and opened:
                    it = opened.pop(rng.randrange(len(opened)))
                    journal.remove(it)
                elif r < 0.8 and opened:
                    it = opened.pop(rng.randrange(len(opened)))
                    journal.abort(it)
                    queued.appendleft(it)
                elif r < 0.95 and queued:
                    it = queued[rng.randrange(len(queued))]
                    queued.remove(it)
                    journal.remove(it)
                elif r < 0.96:
                    journal.flush()
                    queued.clear()
            journal.close()
            sizes = os.path.getsize
            on_disk = sum(
                sizes(os.path.join(directory, n)) for n in os.listdir(directory)
            )
            self.assertLess(on_disk, 40000, f"seed {seed}")
            for max_memory in (1 << 30, 50):
                replay_journal = Journal(directory, self.fake_writer(), sync="never")
                replayed = replay_journal.replay(max_memory)
                got = ids(replayed.items)
                behind: list[Item] = []
                while replayed.behind_items > len(behind):
                    d = replay_journal.read_behind(100)
                    d.addCallback(behind.extend)
                got += ids(behind)
                want = sorted(ids(opened)) + ids(list(queued))
                self.assertEqual(got, want, f"seed {seed} {max_memory}")
                self.assertEqual(replayed.reopened, len(opened))
                self.assertEqual(replayed.damage, [])
                self.assertGreaterEqual(replayed.next_id, next_id)
                replay_journal.close()
                # The replay journaled the open reads as aborted.
                opened.sort(key=lambda it: it.id)
                queued.extendleft(reversed(opened))
                opened = []

    def test_randomized_with_read_behind(self) -> None:
        """Like the queue: past a memory limit items are journaled only and
        read back as the head drains; compaction runs all the while."""
        for seed in range(8):
            rng = random.Random(1000 + seed)
            directory = os.path.join(self.dir, str(seed))
            journal = Journal(
                directory, self.fake_writer(), sync="never", segment_size=700
            )
            limit = 200
            memory: deque[Item] = deque()
            behind: deque[Item] = deque()
            opened: list[Item] = []
            next_id = 1

            for _ in range(3000):
                r = rng.random()
                if not memory and behind:
                    got = self.successResultOf(journal.read_behind(limit // 2))
                    self.assertEqual(ids(got), ids(list(behind)[: len(got)]))
                    self.assertTrue(got)
                    for _ in got:
                        memory.append(behind.popleft())
                if r < 0.45:
                    it = item(next_id, rng.randrange(1, 30))
                    next_id += 1
                    in_memory = sum(len(queued.data) for queued in memory)
                    keep = not behind and in_memory + len(it.data) <= limit
                    journal.add(it, in_memory=keep)
                    (memory if keep else behind).append(it)
                elif r < 0.6 and memory:
                    it = memory.popleft()
                    journal.open(it)
                    opened.append(it)
                elif r < 0.7 and opened:
                    journal.remove(opened.pop(rng.randrange(len(opened))))
                elif r < 0.75 and opened:
                    it = opened.pop(rng.randrange(len(opened)))
                    journal.abort(it)
                    memory.appendleft(it)
                elif r < 0.97 and memory:
                    journal.remove(memory.popleft())
                elif r >= 0.995:
                    journal.flush()
                    memory.clear()
                    behind.clear()
            journal.close()
            files = segment_files(directory)
            # A few segments of a tiny size; most hold the (deep) queue.
            self.assertLessEqual(len(files), 10, f"seed {seed}")
            replay_journal = Journal(directory, self.fake_writer(), sync="never")
            replayed = replay_journal.replay(limit)
            head = ids(replayed.items)
            rest: list[Item] = []
            while replayed.behind_items > len(rest):
                replay_journal.read_behind(limit // 2).addCallback(rest.extend)
            # Open reads come back first, in the order they were queued in.
            want = sorted(ids(opened)) + ids(list(memory)) + ids(list(behind))
            self.assertEqual(head + ids(rest), want, f"seed {seed}")
            self.assertEqual(replayed.damage, [])


class GroupCommitTests(_Base):
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
        self.assertEqual(writer._files, set())
        _, replayed = self.replay()
        self.assertEqual(len(replayed.items), 100)
        # After stop, durable adds are refused.
        late = Journal(os.path.join(self.dir, "late"), writer)
        d = late.add(item(1))
        assert d is not None
        yield self.assertFailure(d, JournalError)
        self.assertIsNone(writer._shutdown_trigger)

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


class RemoveManyTests(_Base):
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


class AddManyTests(_Base):
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


class BatchMemoryTests(_Base):
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
        self.assertIsNotNone(writer._finished)
        controls = [bytes(400)]
        self.assertEqual(
            {sys.getrefcount(d) for d in datas}, {sys.getrefcount(c) for c in controls}
        )


class BacklogTests(_Base):
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


class LingerTests(_Base):
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


class SyncPolicyTests(_Base):
    def test_always(self) -> None:
        ops = CountingOps()
        journal = Journal(self.dir, self.fake_writer(ops=ops), sync="always")
        d = journal.add(item(1))
        self.assertIsInstance(d, Deferred)
        self.assertTrue(d is not None and d.called)
        self.assertEqual(ops.syncs, 1)
        self.assertIsNone(journal.remove(item(1)))  # type: ignore[func-returns-value]
        self.assertEqual(ops.syncs, 2)

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


class DamageTests(_Base):
    def write_items(self, count: int, segment_size: int = 16 << 20) -> None:
        journal = Journal(
            self.dir, self.fake_writer(), sync="never", segment_size=segment_size
        )
        for i in range(1, count + 1):
            journal.add(item(i, 20))
        journal.close()

    def test_torn_tail(self) -> None:
        self.write_items(10)
        path = os.path.join(self.dir, "00000001.seg")
        size = os.path.getsize(path)
        record = 8 + 29 + 20
        os.truncate(path, size - record // 2)
        journal, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 10)))
        [message] = replayed.damage
        self.assertIn("torn record", message)
        self.assertIn(f"offset {size - record}", message)
        self.assertIn(f"cut {record - record // 2} bytes", message)
        self.assertEqual(os.path.getsize(path), size - record)
        self.assertEqual(os.listdir(self.dir).count("00000001.seg.cut"), 0)
        # Writing goes on after the cut, and the next replay is clean.
        journal.add(item(replayed.next_id))
        journal.close()
        _, again = self.replay()
        self.assertEqual(ids(again.items), list(range(1, 11)))
        self.assertEqual(again.damage, [])

    def test_torn_header(self) -> None:
        self.write_items(3, segment_size=100)
        files = segment_files(self.dir)
        with open(os.path.join(self.dir, "00000099.seg"), "wb") as f:
            f.write(FILE_HEADER[:3])
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2, 3])
        self.assertIn("torn header", replayed.damage[0])
        self.assertEqual(segment_files(self.dir), files)

    def test_flipped_byte_in_a_middle_segment(self) -> None:
        """Damage in an old segment: records before it are kept, the rest
        of that segment is cut (and saved), and later segments still
        count."""
        self.write_items(50, segment_size=600)
        files = segment_files(self.dir)
        self.assertGreater(len(files), 3)
        path = os.path.join(self.dir, files[1])
        with open(path, "rb") as f:
            raw = bytearray(f.read())
        record = 8 + 29 + 20
        in_segment = (len(raw) - HEADER_SIZE) // record
        first_id = 1 + (os.path.getsize(os.path.join(self.dir, files[0])) - 8) // record
        damaged_at = HEADER_SIZE + record * 2
        raw[damaged_at + 20] ^= 0x40
        with open(path, "wb") as f:
            f.write(raw)
        _, replayed = self.replay()
        lost = set(range(first_id + 2, first_id + in_segment))
        self.assertEqual(
            ids(replayed.items), [i for i in range(1, 51) if i not in lost]
        )
        [message] = replayed.damage
        self.assertIn(f"segment {files[1]}: corrupt record", message)
        self.assertIn(f"offset {damaged_at}", message)
        self.assertIn(f"cut {len(raw) - damaged_at} bytes", message)
        self.assertEqual(os.path.getsize(path), damaged_at)
        with open(os.path.join(self.dir, f"{files[1]}.cut-{damaged_at}"), "rb") as f:
            self.assertEqual(f.read(), bytes(raw[damaged_at:]))

    def test_flipped_byte_in_the_last_segment(self) -> None:
        self.write_items(10)
        path = os.path.join(self.dir, "00000001.seg")
        with open(path, "r+b") as f:
            f.seek(HEADER_SIZE + 57 * 4 + 40)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 1]))
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2, 3, 4])
        self.assertIn("checksum mismatch", replayed.damage[0])

    def test_foreign_file(self) -> None:
        self.write_items(3)
        with open(os.path.join(self.dir, "00000002.seg"), "wb") as f:
            f.write(b"hello, this is not a journal")
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2, 3])
        self.assertIn("not an erq segment", replayed.damage[0])
        self.assertTrue(os.path.exists(os.path.join(self.dir, "00000002.seg.bad")))


class ZerosAheadTests(_Base):
    """A segment synced after every batch is written with zeros ahead of its
    appends, so that an fsync need not also record a new file size."""

    def path(self) -> str:
        return os.path.join(self.dir, "00000001.seg")

    def tail(self, path: str, start: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read()

    def test_synced_appends_have_zeros_ahead(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i))
        end = journal.size
        # Written after the first append, and the later ones went over them.
        zeroed = HEADER_SIZE + 8 + 29 + 10 + files._ZERO_AHEAD
        self.assertEqual(os.path.getsize(self.path()), zeroed)
        self.assertEqual(self.tail(self.path(), end), bytes(zeroed - end))
        # Closing drops them: the file ends where its records do.
        journal.close()
        self.assertEqual(os.path.getsize(self.path()), end)

    def test_unsynced_appends_have_none(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="never")
        for i in range(1, 11):
            journal.add(item(i))
        self.assertEqual(os.path.getsize(self.path()), journal.size)

    def test_zeros_stop_at_the_end_of_the_segment(self) -> None:
        segment_size = 400
        journal = Journal(
            self.dir, self.fake_writer(), sync="always", segment_size=segment_size
        )
        for i in range(1, 31):
            journal.add(item(i))
        files = segment_files(self.dir)
        self.assertGreater(len(files), 2)
        # Full segments are closed without their zeros.
        for name in files[:-1]:
            with open(os.path.join(self.dir, name), "rb") as f:
                self.assertNotEqual(f.read()[-1:], b"\0")
        current = journal._current
        assert current is not None
        self.assertEqual(
            os.path.getsize(current.file.path), max(segment_size, current.size)
        )

    def test_replay_takes_the_zeros_as_the_end(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i))
        # Not closed: what a crash leaves.
        size = os.path.getsize(self.path())
        again, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 11)))
        self.assertEqual(replayed.damage, [])
        self.assertEqual(os.path.getsize(self.path()), size)
        # Appends go on where the records end, and the next replay is clean.
        again.add(item(11))
        again.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 12)))
        self.assertEqual(replayed.damage, [])

    def test_a_record_torn_into_the_zeros_is_a_torn_tail(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i))
        end = journal.size
        record = 8 + 29 + 10
        # The last record's second half never reached the disk.
        with open(self.path(), "r+b") as f:
            f.seek(end - record // 2)
            f.write(bytes(record // 2))
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 10)))
        [message] = replayed.damage
        self.assertIn(f"(checksum mismatch) at offset {end - record}", message)
        self.assertNotIn("saved", message)
        self.assertEqual(os.path.getsize(self.path()), end - record)

    def test_zeros_with_a_record_after_them_are_damage(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i))
        end = journal.size
        stray = 1000
        with open(self.path(), "r+b") as f:
            f.seek(end + stray)
            f.write(b"x")
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 11)))
        [message] = replayed.damage
        self.assertIn(f"at offset {end}", message)
        self.assertIn(f"saved as 00000001.seg.cut-{end}", message)

    def test_read_behind_stops_at_the_zeros(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i), in_memory=False)
        items, cursor = readbehind._read_behind(
            [(1, self.path())], (1, HEADER_SIZE), 100, 1 << 20, frozenset()
        )
        self.assertEqual(ids(items), list(range(1, 11)))
        self.assertEqual(cursor, (1, HEADER_SIZE))


class CompactionTests(_Base):
    @inlineCallbacks
    def test_steady_produce_consume(self) -> Generator[Deferred[Any], Any, None]:
        writer = self.real_writer()
        journal = Journal(self.dir, writer, sync="always", segment_size=64 * 1024)
        live: deque[Item] = deque()
        most = 0
        for i in range(1, 200001):
            it = item(i, 16)
            d = journal.add(it)
            live.append(it)
            if len(live) > 50:
                journal.remove(live.popleft())
            if i % 20000 == 0:
                assert d is not None
                yield d
                files = segment_files(self.dir)
                most = max(most, len(files))
        yield journal.close()
        self.assertLessEqual(most, 3)
        self.assertLessEqual(len(segment_files(self.dir)), 2)
        self.assertLess(journal.size, 3 * 64 * 1024)
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), ids(list(live)))

    def test_open_item_is_forwarded(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), segment_size=500)
        held = item(1, 50)
        journal.add(held)
        journal.open(held)
        for i in range(2, 300):
            it = item(i, 20)
            journal.add(it)
            journal.remove(it)
        files = segment_files(self.dir)
        self.assertNotIn("00000001.seg", files)
        self.assertLessEqual(len(files), 3)
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1])
        self.assertEqual(replayed.items[0].data, held.data)
        self.assertEqual(replayed.items[0].added, held.added)
        self.assertEqual(replayed.reopened, 1)

    def test_forwarding_keeps_order(self) -> None:
        """Aborted items forwarded from a dead segment keep their place at
        the head, among aborted items that were not forwarded."""
        journal = Journal(self.dir, self.fake_writer(), segment_size=400)
        first = [item(i, 30) for i in (1, 2)]
        for it in first:
            journal.add(it)
            journal.open(it)
        for i in range(3, 40):
            it = item(i, 30)
            journal.add(it)
            if i == 30:
                journal.open(it)
                journal.abort(it)
            elif i < 35:
                journal.remove(it)
        journal.abort(first[1])
        later = item(35, 30)
        # Still open: forwarded as open, comes back first.
        journal.open(later)
        for i in range(40, 120):
            it = item(i, 30)
            journal.add(it)
            journal.remove(it)
        self.assertNotIn("00000001.seg", segment_files(self.dir))
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 35, 2, 30, 36, 37, 38, 39])
        self.assertEqual(replayed.reopened, 2)


class ReadBehindTests(_Base):
    def test_read_behind_in_order(self) -> None:
        """100,000 items of 1 KiB; the queue keeps 64 KiB in memory."""
        writer = self.fake_writer()
        journal = Journal(self.dir, writer, sync="never", segment_size=4 << 20)
        count = 100000
        in_memory = 64
        for i in range(1, count + 1):
            journal.add(item(i, 1024), in_memory=i <= in_memory)
        self.assertEqual(journal._behind_count, count - in_memory)
        for i in range(1, in_memory + 1):
            journal.remove(item(i, 1024))
        got: list[Item] = []
        while len(got) < count - in_memory:
            journal.read_behind(256 * 1024).addCallback(got.extend)
            # Consume what was read, as the queue would.
            for it in got[-256:]:
                journal.remove(it)
        self.assertEqual(ids(got), list(range(in_memory + 1, count + 1)))
        self.assertEqual(got[-1].data, item(count, 1024).data)
        self.assertEqual((journal._behind_count, journal._behind_bytes), (0, 0))
        d = journal.read_behind(1000)
        self.assertEqual(self.successResultOf(d), [])
        # Segments whose items are all read and gone were deleted.
        self.assertLessEqual(len(segment_files(self.dir)), 2)

    def test_replay_leaves_items_behind(self) -> None:
        writer = self.fake_writer()
        journal = Journal(self.dir, writer, sync="never", segment_size=4 << 20)
        count = 100000
        for i in range(1, count + 1):
            journal.add(item(i, 1024), in_memory=i <= 100)
        journal.remove(item(1, 1024))
        journal.close()
        journal, replayed = self.replay(max_memory=64 * 1024, segment_size=4 << 20)
        self.assertEqual(len(replayed.items), 64)
        self.assertEqual(ids(replayed.items), list(range(2, 66)))
        self.assertEqual(replayed.behind_items, count - 65)
        self.assertEqual(replayed.behind_bytes, (count - 65) * 1024)
        got: list[Item] = []
        while len(got) < replayed.behind_items:
            before = len(got)
            journal.read_behind(512 * 1024).addCallback(got.extend)
            self.assertGreater(len(got), before)
        self.assertEqual(ids(got), list(range(66, count + 1)))

    def test_replay_refills_as_items_go(self) -> None:
        """Items that were all in memory before the restart, most of them
        consumed since: replay reads the survivors back in as it goes."""
        journal = Journal(self.dir, self.fake_writer(), sync="never")
        for i in range(1, 1001):
            journal.add(item(i, 100))
        for i in range(1, 901):
            journal.remove(item(i, 100))
        # Removed out of FIFO order, far from the head (an expired item).
        journal.remove(item(990, 100))
        journal.close()
        journal, replayed = self.replay(max_memory=1000)
        self.assertEqual(ids(replayed.items), list(range(901, 911)))
        self.assertEqual(replayed.behind_items, 89)
        self.assertEqual(replayed.behind_bytes, 8900)
        got: list[Item] = []
        while len(got) < replayed.behind_items:
            journal.read_behind(1000).addCallback(got.extend)
        self.assertEqual(ids(got), [i for i in range(911, 1001) if i != 990])

    def test_behind_item_opened_before_restart(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="never")
        for i in range(1, 101):
            journal.add(item(i, 100))
        journal.open(item(50, 100))
        journal.close()
        _, replayed = self.replay(max_memory=1000)
        self.assertEqual(ids(replayed.items)[:11], [50] + list(range(1, 11)))

    def test_flush_drops_behind_items(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="never")
        for i in range(1, 101):
            journal.add(item(i), in_memory=i <= 10)
        journal.flush()
        self.assertEqual(self.successResultOf(journal.read_behind(1000)), [])
        journal.add(item(101))
        journal.close()
        _, replayed = self.replay(max_memory=50)
        self.assertEqual((ids(replayed.items), replayed.behind_items), ([101], 0))

    def test_cursor_segment_deleted(self) -> None:
        """The cursor at the very end of a segment whose items were all read
        and consumed: that segment goes, and reading goes on in the next."""
        journal = Journal(self.dir, self.fake_writer(), sync="never", segment_size=1000)
        items = [item(i, 100) for i in range(1, 21)]
        for it in items:
            journal.add(it, in_memory=False)
        first = self.successResultOf(journal.read_behind(800))
        self.assertEqual(ids(first), list(range(1, 9)))
        for it in first:
            journal.remove(it)
        self.assertNotIn("00000001.seg", segment_files(self.dir))
        rest = self.successResultOf(journal.read_behind(10000))
        self.assertEqual(ids(rest), list(range(9, 21)))

    def test_read_waits_for_pending_writes(self) -> None:
        pool = ManualPool()
        journal = Journal(self.dir, self.fake_writer(pool), sync="never")
        journal.add(item(1))
        for i in range(2, 6):
            journal.add(item(i), in_memory=False)
        d = journal.read_behind(1000)
        pool.run_all()
        self.assertEqual(ids(self.successResultOf(d)), [2, 3, 4, 5])


class FailureTests(_Base):
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


class EraseTests(_Base):
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
