"""Tests for erq.arrivals: durable puts held back until the journal has
them, placed in the order they were put."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from erq.arrivals import Arrival, Arrivals
from erq.items import Item


def item(id: int, size: int = 1) -> Item:
    return Item(id, b"x" * size, 0, None, 0.0)


class ArrivalsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.placed: list[list[int]] = []
        self.refused: list[tuple[int, bool]] = []
        self.arrivals = Arrivals(self.place, self.refuse)

    def place(self, stored: list[list[Item]]) -> None:
        self.placed.append([i.id for held in stored for i in held])

    def refuse(self, arrival: Arrival, waiting: bool) -> None:
        self.refused.append((arrival.count, waiting))

    def test_without_a_wait_items_are_placed_at_once(self) -> None:
        self.assertIs(self.arrivals.arrive([item(1)], [True], None), True)
        self.assertEqual(self.placed, [[1]])
        self.assertFalse(self.arrivals)
        self.assertEqual(self.arrivals.held, 0)

    def test_held_until_durable(self) -> None:
        durable: Deferred[None] = Deferred()
        result = self.arrivals.arrive([item(1), item(2)], [True, False], durable)
        self.assertIs(result, durable)
        self.assertTrue(self.arrivals)
        self.assertEqual(self.arrivals.held, 1)
        self.assertEqual(self.placed, [])
        durable.callback(None)
        self.assertEqual(self.placed, [[1]])
        self.assertEqual(self.arrivals.held, 0)

    def test_placed_in_put_order_whatever_the_journal_answers(self) -> None:
        first: Deferred[None] = Deferred()
        second: Deferred[None] = Deferred()
        self.arrivals.arrive([item(1)], [True], first)
        self.arrivals.arrive([item(2)], [True], second)
        # Not durable itself: it waits for the ones ahead of it.
        self.arrivals.arrive([item(3)], [True], None)
        second.callback(None)
        self.assertEqual(self.placed, [])
        first.callback(None)
        self.assertEqual(self.placed, [[1, 2, 3]])

    def test_refused_items_are_never_placed(self) -> None:
        first: Deferred[None] = Deferred()
        second: Deferred[None] = Deferred()
        self.arrivals.arrive([item(1), item(2)], [True, True], first)
        self.arrivals.arrive([item(3)], [True], second)
        second.callback(None)
        first.errback(Failure(OSError("disk full")))
        self.assertEqual(self.refused, [(2, True)])
        self.assertEqual(self.placed, [[3]])
        self.failureResultOf(first, OSError)

    def test_dropped_arrivals_stay_dropped(self) -> None:
        """After a flush, neither a late success nor a failure places or
        uncounts anything a second time."""
        stored: Deferred[None] = Deferred()
        refused: Deferred[None] = Deferred()
        self.arrivals.arrive([item(1)], [True], stored)
        self.arrivals.arrive([item(2)], [True], refused)
        self.arrivals.drop_all()
        self.assertFalse(self.arrivals)
        self.assertEqual(self.arrivals.held, 0)
        stored.callback(None)
        refused.errback(Failure(OSError("disk full")))
        self.failureResultOf(refused, OSError)
        self.assertEqual(self.placed, [])
        self.assertEqual(self.refused, [(1, False)])

    def test_arrival_counts_what_is_behind(self) -> None:
        arrival = Arrival([item(1, 3), item(2, 5), item(3, 7)], [True, False, False])
        self.assertEqual([i.id for i in arrival.held], [1])
        self.assertEqual(arrival.held_bytes, 3)
        self.assertEqual((arrival.behind_count, arrival.behind_bytes), (2, 12))
        self.assertEqual(arrival.count, 3)
