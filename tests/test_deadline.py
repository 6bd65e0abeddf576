"""Tests for erq.deadline: one delayed call set for a deadline."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.deadline import DeadlineTimer, delay_to


class DelayTests(SynchronousTestCase):
    @given(
        st.floats(min_value=0.0, max_value=1e9, allow_nan=False),
        st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    )
    def test_a_delay_lands_on_its_deadline(self, now: float, timeout: float) -> None:
        deadline = now + timeout
        self.assertEqual(now + delay_to(deadline, now), deadline)

    def test_a_deadline_gone_by_is_due_now(self) -> None:
        self.assertEqual(delay_to(1.0, 2.0), 0.0)
        self.assertEqual(delay_to(2.0, 2.0), 0.0)


class DeadlineTimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fired: list[float] = []
        self.timer = DeadlineTimer(self.clock, self.fired.append)

    def test_fires_once_at_its_deadline_with_it(self) -> None:
        self.timer.set(2.0)
        self.assertEqual(self.timer.deadline, 2.0)
        self.clock.advance(1.5)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.5)
        self.assertEqual(self.fired, [2.0])
        self.assertIsNone(self.timer.deadline)
        self.clock.advance(10)
        self.assertEqual(self.fired, [2.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_moved_rather_than_made_again(self) -> None:
        self.timer.set(5.0)
        call = self.timer.call
        self.timer.set(1.0)
        self.assertIs(self.timer.call, call)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.0)
        self.assertEqual(self.fired, [1.0])

    def test_cancelled_leaves_nothing(self) -> None:
        self.timer.set(1.0)
        self.timer.cancel()
        self.timer.cancel()
        self.assertIsNone(self.timer.deadline)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(2)
        self.assertEqual(self.fired, [])

    def test_not_a_hair_before_its_deadline(self) -> None:
        """Set from a clock stepped in fractions that floats do not hold
        exactly, it fires on its deadline and not before."""
        for _ in range(6):
            self.clock.advance(0.05)
        due = self.clock.seconds() + 0.25
        self.clock.advance(0.1)
        self.timer.set(due)
        self.clock.advance(0.15 - 1e-12)
        self.assertEqual(self.fired, [])
        self.clock.advance(due - self.clock.seconds())
        self.assertEqual(self.fired, [due])
