"""Tests for erq.journal.compaction: dead segments deleted, open and
aborted items copied forward."""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from erq.journal import (
    Journal,
)
from erq.queue import Item
from tests.support import (
    JournalTestCase,
    ids,
    item,
    segment_files,
)


class CompactionTests(JournalTestCase):
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
