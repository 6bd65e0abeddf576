"""Tests for erq.opentimeouts: when open reads are due back, on one timer."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.items import Item
from erq.opentimeouts import OpenTimeouts
from tests.support import ids, item


class OpenTimeoutsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1700000000)
        self.late: list[list[tuple[Item, str]]] = []
        self.timeouts: OpenTimeouts[str] = OpenTimeouts(self.clock, self.late.append)

    def taken_back(self) -> list[int]:
        return [it.id for batch in self.late for it, _ in batch]

    def test_due_at_the_deadline_not_before(self) -> None:
        self.timeouts.start(item(1), 2.0, "a")
        self.clock.advance(1.99)
        self.assertEqual(self.late, [])
        self.clock.advance(0.01)
        self.assertEqual(len(self.late), 1)
        [(got, holder)] = self.late[0]
        self.assertEqual((got.id, holder), (1, "a"))
        self.assertEqual(len(self.timeouts), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_timer_for_many_reads(self) -> None:
        for i in range(1, 1001):
            self.timeouts.start(item(i), 5.0, "a")
            self.clock.advance(0.001)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(len(self.timeouts), 1000)
        self.clock.advance(4.0)
        self.assertEqual(self.late, [])
        self.clock.advance(0.5)
        # Those opened in the first half second, in the order opened, in
        # the one call of the one timer.
        self.assertEqual(len(self.late), 1)
        self.assertEqual(self.taken_back(), list(range(1, len(self.late[0]) + 1)))
        self.assertTrue(499 <= len(self.late[0]) <= 501, len(self.late[0]))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.0)
        self.assertEqual(self.taken_back(), list(range(1, 1001)))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopping_the_last_read_cancels_the_timer(self) -> None:
        first, second = item(1), item(2)
        self.timeouts.start(first, 1.0, "a")
        self.timeouts.start(second, 1.0, "b")
        self.timeouts.stop(first)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.timeouts.stop(second)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.late, [])

    def test_stopping_a_read_not_timed_does_nothing(self) -> None:
        self.timeouts.stop(item(1))
        self.timeouts.start(item(2), 1.0, "a")
        self.timeouts.stop(item(3))
        self.clock.advance(1.0)
        self.assertEqual(self.taken_back(), [2])

    def test_after_the_oldest_ends_the_timer_moves_on(self) -> None:
        first, second = item(1), item(2)
        self.timeouts.start(first, 1.0, "a")
        self.clock.advance(0.5)
        self.timeouts.start(second, 1.0, "b")
        self.timeouts.stop(first)
        # Fires for nothing where the first was due, and is set again.
        self.clock.advance(0.5)
        self.assertEqual(self.late, [])
        self.assertEqual(self.timeouts.next_deadline, self.clock.seconds() + 0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.taken_back(), [2])

    def test_a_shorter_timeout_opened_later_is_due_first(self) -> None:
        """As after a reload that shortens open_timeout."""
        self.timeouts.start(item(1), 10.0, "a")
        self.clock.advance(1)
        self.timeouts.start(item(2), 2.0, "b")
        self.timeouts.start(item(3), 10.0, "c")
        self.assertEqual(self.timeouts.next_deadline, self.clock.seconds() + 2)
        self.clock.advance(2)
        self.assertEqual(self.taken_back(), [2])
        self.clock.advance(6.9)
        self.assertEqual(self.taken_back(), [2])
        self.clock.advance(0.1)
        self.assertEqual(self.taken_back(), [2, 1])
        self.clock.advance(1)
        self.assertEqual(self.taken_back(), [2, 1, 3])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_late_together_in_the_order_due(self) -> None:
        """Reads of both timeouts found late by one call of the timer (a
        busy reactor runs it late) go back in the order they were due."""
        self.timeouts.start(item(1), 3.0, "a")
        self.clock.advance(1)
        self.timeouts.start(item(2), 1.0, "b")
        self.clock.advance(5)
        self.assertEqual(
            [ids([it for it, _ in batch]) for batch in self.late], [[2, 1]]
        )

    def test_clear_forgets_every_read(self) -> None:
        self.timeouts.start(item(1), 1.0, "a")
        self.timeouts.clear()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.timeouts), 0)
        self.clock.advance(2)
        self.assertEqual(self.late, [])

    def test_a_read_taken_back_may_be_opened_again_at_once(self) -> None:
        again = item(1)

        def take_back(late: list[tuple[Item, str]]) -> None:
            self.late.append(late)
            if len(self.late) == 1:
                self.timeouts.start(again, 1.0, "b")

        timeouts: OpenTimeouts[str] = OpenTimeouts(self.clock, take_back)
        self.timeouts = timeouts
        timeouts.start(again, 1.0, "a")
        self.clock.advance(1)
        self.assertEqual(len(timeouts), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1)
        self.assertEqual(
            [[holder for _, holder in batch] for batch in self.late], [["a"], ["b"]]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
