"""Tests for erq.limits: a queue's max_items and max_size, refusing or
discarding the oldest."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.config import QueueSettings
from erq.holding import Holding
from erq.items import Item
from erq.limits import Limits
from tests.support import FakeJournal


class LimitsTests(SynchronousTestCase):
    memory_limit = 1024

    def setUp(self) -> None:
        self.journal = FakeJournal()
        self.holding = Holding(
            "q",
            lambda: self.journal,
            lambda: self.memory_limit,
            lambda: None,
            lambda: None,
            lambda count: None,
        )
        self.discarded: list[int] = []
        self.limits = Limits(self.holding, lambda item: self.discarded.append(item.id))
        self.next_id = 1

    def put(self, data: bytes) -> None:
        """Hold a new item as a put that makes no one wait does."""
        item = Item(self.next_id, data, 0, None, 0.0)
        self.next_id += 1
        held = self.holding.reserve(item)
        self.journal.add(item, held)
        if held:
            self.holding.items.append(item)

    def held(self) -> list[bytes]:
        return [item.data for item in self.holding.items]

    def test_room_while_under_the_limits(self) -> None:
        settings = QueueSettings(max_items=2, max_size=4)
        self.put(b"ab")
        self.assertTrue(self.limits.make_room(settings, 2))
        self.assertFalse(self.limits.make_room(settings, 3))
        self.assertEqual((self.held(), self.limits.discarded), ([b"ab"], 0))

    def test_full_refuses_without_discard_old(self) -> None:
        settings = QueueSettings(max_items=1)
        self.put(b"a")
        self.assertFalse(self.limits.make_room(settings, 1))
        self.assertEqual((self.held(), self.discarded), ([b"a"], []))

    def test_discard_old_drops_the_oldest_until_it_fits(self) -> None:
        settings = QueueSettings(max_size=5, discard_old_when_full=True)
        for data in [b"ab", b"cd", b"e"]:
            self.put(data)
        self.assertTrue(self.limits.make_room(settings, 4))
        self.assertEqual(self.held(), [b"e"])
        self.assertEqual((self.discarded, self.limits.discarded), ([1, 2], 2))

    def test_what_would_not_fit_empty_is_refused_and_nothing_dropped(self) -> None:
        self.put(b"a")
        for settings, size in [
            (QueueSettings(max_size=2, discard_old_when_full=True), 3),
            (QueueSettings(max_items=0, discard_old_when_full=True), 1),
        ]:
            self.assertFalse(self.limits.make_room(settings, size))
        self.assertEqual((self.held(), self.discarded), ([b"a"], []))

    def test_overfull_while_the_oldest_are_on_disk(self) -> None:
        self.memory_limit = 4
        settings = QueueSettings(max_items=2, discard_old_when_full=True)
        for data in [b"abcd", b"ef", b"gh"]:
            self.put(data)
        self.holding.pop()
        self.assertEqual(self.holding.behind_items, 2)
        # The two on disk fill the queue: the new item is let in at once.
        self.assertTrue(self.limits.make_room(settings, 2))
        self.assertTrue(self.limits.overfull)
        self.put(b"ij")
        self.journal.read_back(2)
        self.limits.trim(settings)
        self.assertFalse(self.limits.overfull)
        self.assertEqual((self.holding.count, self.discarded), (2, [2]))
        self.assertEqual(self.holding.items.head[0].data, b"gh")
