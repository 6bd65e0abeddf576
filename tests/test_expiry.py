"""Tests for erq.expiry: a queue's expired items, dropped, counted and
passed on."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.expiry import Expiry
from erq.holding import Holding
from erq.items import Item


class ExpiryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.holding = Holding(
            "q", lambda: None, lambda: 1024, lambda: None, lambda: None, lambda n: None
        )
        self.removed: list[int] = []
        self.expiry = Expiry(
            self.clock, self.holding, lambda item: self.removed.append(item.id)
        )
        self.sunk: list[int] = []

    def hold(self, *expiries: float | None) -> None:
        """Hold an item for each expiry time, ids from 1, oldest first."""
        for id, expiry in enumerate(expiries, 1):
            item = Item(id, b"x", 0, expiry, 1000.0)
            self.holding.reserve(item)
            self.holding.items.append(item)

    def held(self) -> list[int]:
        return [item.id for item in self.holding.items]

    def test_the_head_is_dropped_up_to_the_first_item_still_due(self) -> None:
        self.hold(1001, 1002, None, 1001)
        self.clock.advance(5)
        self.assertEqual(self.expiry.drop_head(), 2)
        self.assertEqual((self.held(), self.removed), ([3, 4], [1, 2]))
        self.assertEqual(self.expiry.count, 2)

    def test_at_most_limit_are_dropped_from_the_head(self) -> None:
        self.hold(1001, 1001, 1001)
        self.clock.advance(5)
        self.assertEqual(self.expiry.drop_head(2), 2)
        self.assertEqual(self.held(), [3])

    def test_flush_expired_drops_them_from_anywhere(self) -> None:
        self.hold(None, 1001, 2000, 1001)
        self.clock.advance(5)
        self.assertEqual(self.expiry.flush_expired(), 2)
        self.assertEqual((self.held(), self.removed), ([1, 3], [2, 4]))

    def test_each_expired_item_goes_to_the_sink(self) -> None:
        self.expiry.sink = lambda item: self.sunk.append(item.id)
        self.hold(1001, None)
        self.clock.advance(5)
        self.expiry.drop_head()
        self.assertEqual(self.sunk, [1])

    def test_an_item_never_journaled_is_not_recorded_as_removed(self) -> None:
        self.expiry.sink = lambda item: self.sunk.append(item.id)
        self.expiry.expire(Item(7, b"x", 0, 999.0, 1000.0), journaled=False)
        self.assertEqual((self.removed, self.sunk, self.expiry.count), ([], [7], 1))
