"""Tests for erq.openreads: what a queue has handed out open, until each
read is confirmed or aborted."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.config import QueueSettings
from erq.items import Item
from erq.queue import Queue
from tests.support import FakeJournal


class OpenReadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.journal = FakeJournal()
        self.queue = Queue(
            "q", self.clock, QueueSettings(open_timeout=2.0), self.journal
        )
        self.reads = self.queue.open_reads

    def open(self, id: int, data: bytes) -> Item:
        """An item handed out as an open read, as the queue does it."""
        item = Item(id, data, 0, None, 1000.0)
        self.reads.opened(item)
        return item

    def counts(self) -> tuple[int, int, int, int]:
        reads = self.reads
        return (reads.count, reads.bytes, reads.transactions, reads.canceled)

    def test_opened_reads_are_counted_until_they_end(self) -> None:
        first, second = self.open(1, b"abc"), self.open(2, b"de")
        self.assertEqual(self.counts(), (2, 5, 2, 0))
        self.reads.confirm(first)
        self.assertEqual(self.counts(), (1, 2, 2, 0))
        self.reads.abort([second])
        self.assertEqual(self.counts(), (0, 0, 2, 1))

    def test_a_confirmed_read_is_gone_for_good(self) -> None:
        item = self.open(1, b"abc")
        self.clock.advance(5)
        self.reads.confirm(item)
        self.assertEqual(self.journal.calls, [("remove", 1)])
        self.assertEqual((self.queue.items, self.queue.removed_items), (0, 1))
        # A command on the queue: not idle before it.
        self.assertFalse(self.queue.is_idle_since(1004))
        self.assertTrue(self.queue.is_idle_since(1005))

    def test_aborted_reads_go_back_to_the_head_in_order(self) -> None:
        self.queue.put(b"c")
        self.reads.abort([self.open(1, b"a"), self.open(2, b"b")])
        self.assertEqual(self.journal.calls[-2:], [("abort", 2), ("abort", 1)])
        self.assertEqual([item.data for item in self.queue._items], [b"a", b"b", b"c"])

    def test_the_holder_forgets_a_late_read_before_it_is_back(self) -> None:
        item = self.open(1, b"a")
        seen: list[tuple[Queue, Item, int, int]] = []
        self.reads.time_open(
            item,
            lambda queue, item: seen.append(
                (queue, item, queue.items, queue.open_items)
            ),
        )
        self.clock.advance(2)
        self.assertEqual(seen, [(self.queue, item, 0, 1)])
        self.assertEqual((self.queue.items, self.counts()), (1, (0, 0, 1, 1)))

    def test_closed_reads_time_nothing(self) -> None:
        self.reads.time_open(self.open(1, b"a"), lambda queue, item: None)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.reads.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
