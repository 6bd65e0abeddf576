"""Tests for erq.waiters: the gets that wait for an item."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.items import Item
from erq.waiters import Waiters


def item(id: int) -> Item:
    return Item(id, b"x", 0, None, 0.0)


class WaitersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.emptied = 0
        self.waiters = Waiters(self.empty)
        self.stock: list[Item] = []
        self.asked: list[tuple[bool, bool]] = []
        self.reading = False

    def empty(self) -> None:
        self.emptied += 1

    def take(self, open: bool, peek: bool) -> Item | None:
        self.asked.append((open, peek))
        return self.stock.pop(0) if self.stock else None

    def serve(self) -> None:
        self.waiters.serve(self.take, lambda: self.reading)

    def results(self, deferred: Deferred[Item | None]) -> list[Item | None]:
        fired: list[Item | None] = []
        deferred.addCallback(fired.append)
        return fired

    def test_first_come_first_served(self) -> None:
        first = self.results(self.waiters.wait(True, False, 10, self.clock))
        second = self.results(self.waiters.wait(False, True, 10, self.clock))
        self.assertEqual(len(self.waiters), 2)
        self.stock = [item(1)]
        self.serve()
        self.assertEqual([i.id for i in first if i], [1])
        self.assertEqual(second, [])
        self.assertEqual(self.asked, [(True, False), (False, True)])
        self.assertEqual(len(self.waiters), 1)

    def test_timeout_gives_none_and_tells_when_the_last_leaves(self) -> None:
        fired = self.results(self.waiters.wait(False, False, 5, self.clock))
        self.clock.advance(5)
        self.assertEqual(fired, [None])
        self.assertEqual(len(self.waiters), 0)
        self.assertEqual(self.emptied, 1)

    def test_cancel_leaves_the_line(self) -> None:
        deferred = self.waiters.wait(False, False, 5, self.clock)
        self.waiters.wait(False, False, 5, self.clock)
        deferred.cancel()
        self.failureResultOf(deferred)
        self.assertEqual(len(self.waiters), 1)
        self.assertEqual(self.emptied, 0)

    def test_untimed_waiters_released_when_nothing_more_is_read(self) -> None:
        untimed = self.results(self.waiters.wait(False, False, None, self.clock))
        timed = self.results(self.waiters.wait(False, False, 5, self.clock))
        self.reading = True
        self.serve()
        self.assertEqual(untimed, [])
        self.reading = False
        self.serve()
        self.assertEqual(untimed, [None])
        self.assertEqual(timed, [])
        self.assertEqual(len(self.waiters), 1)

    def test_a_waiter_served_inside_serving_does_not_recurse(self) -> None:
        """A waiter's callback that asks to serve again returns at once;
        the outer loop serves the next waiter."""
        first = self.waiters.wait(False, False, 10, self.clock)
        second = self.results(self.waiters.wait(False, False, 10, self.clock))
        calls: list[int] = []

        def again(result: object) -> object:
            calls.append(len(self.asked))
            self.serve()
            calls.append(len(self.asked))
            return result

        first.addCallback(again)
        self.stock = [item(1), item(2)]
        self.serve()
        self.assertEqual(calls, [1, 1])
        self.assertEqual([i.id for i in second if i], [2])

    def test_adopt(self) -> None:
        other = Waiters(self.empty)
        fired = self.results(other.wait(False, False, 5, self.clock))
        self.waiters.adopt(other)
        self.assertEqual((len(self.waiters), len(other)), (1, 0))
        self.stock = [item(7)]
        self.serve()
        self.assertEqual([i.id for i in fired if i], [7])

    def test_adopted_waiter_leaves_its_new_line(self) -> None:
        emptied: list[str] = []
        old = Waiters(lambda: emptied.append("old"))
        new = Waiters(lambda: emptied.append("new"))
        old.wait(False, False, 5, self.clock)
        new.adopt(old)
        self.clock.advance(5)
        self.assertEqual(emptied, ["new"])

    def test_one_timer_per_waiter_gone_once_served(self) -> None:
        """A waiter's timeout is one delayed call, cancelled when it is
        served or cancelled: nothing of it is left on the clock."""
        served = self.results(self.waiters.wait(False, False, 5, self.clock))
        cancelled = self.waiters.wait(False, False, 5, self.clock)
        untimed = self.waiters.wait(False, False, None, self.clock)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.stock = [item(1)]
        self.reading = True
        self.serve()
        self.assertEqual([i.id for i in served if i], [1])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        cancelled.cancel()
        self.failureResultOf(cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.waiters), 1)
        untimed.cancel()
        self.failureResultOf(untimed)

    def test_a_timed_out_waiter_gets_none_once(self) -> None:
        fired = self.results(self.waiters.wait(False, False, 0.5, self.clock))
        self.clock.advance(0.499)
        self.assertEqual(fired, [])
        self.clock.advance(0.002)
        self.assertEqual(fired, [None])
        # Served after its timeout: nothing more happens to it.
        self.stock = [item(1)]
        self.serve()
        self.assertEqual(fired, [None])
        self.assertEqual([i.id for i in self.stock], [1])
