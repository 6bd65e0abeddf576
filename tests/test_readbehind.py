"""Tests for erq.journal.readbehind: items past the memory limit read
back from disk."""

from __future__ import annotations

from erq.journal import (
    Journal,
)
from erq.queue import Item
from tests.support import (
    JournalTestCase,
    ManualPool,
    ids,
    item,
    segment_files,
)


class ReadBehindTests(JournalTestCase):
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
