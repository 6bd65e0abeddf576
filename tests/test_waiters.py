"""Tests for erq.waiters: the gets that wait for an item."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.items import Item
from erq.waiters import Deadlines, Waiter, Waiters


def item(id: int) -> Item:
    return Item(id, b"x", 0, None, 0.0)


class WaitersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.emptied = 0
        self.waiters = Waiters(self.clock, self.empty)
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

    def wait(
        self, timeout: float | None, open: bool = False, peek: bool = False
    ) -> tuple[Waiter, list[Item | None]]:
        """A waiter answered through a plain callable, and its answers."""
        answers: list[Item | None] = []
        return self.waiters.wait_for(answers.append, open, peek, timeout), answers

    def test_first_come_first_served(self) -> None:
        first = self.results(self.waiters.wait(True, False, 10))
        second = self.results(self.waiters.wait(False, True, 10))
        self.assertEqual(len(self.waiters), 2)
        self.stock = [item(1)]
        self.serve()
        self.assertEqual([i.id for i in first if i], [1])
        self.assertEqual(second, [])
        self.assertEqual(self.asked, [(True, False), (False, True)])
        self.assertEqual(len(self.waiters), 1)

    def test_timeout_gives_none_and_tells_when_the_last_leaves(self) -> None:
        fired = self.results(self.waiters.wait(False, False, 5))
        self.clock.advance(5)
        self.assertEqual(fired, [None])
        self.assertEqual(len(self.waiters), 0)
        self.assertEqual(self.emptied, 1)

    def test_cancel_leaves_the_line(self) -> None:
        deferred = self.waiters.wait(False, False, 5)
        self.waiters.wait(False, False, 5)
        deferred.cancel()
        self.failureResultOf(deferred, CancelledError)
        self.assertEqual(len(self.waiters), 1)
        self.assertEqual(self.emptied, 0)

    def test_untimed_waiters_released_when_nothing_more_is_read(self) -> None:
        untimed = self.results(self.waiters.wait(False, False, None))
        timed = self.results(self.waiters.wait(False, False, 5))
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
        first = self.waiters.wait(False, False, 10)
        second = self.results(self.waiters.wait(False, False, 10))
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
        other = Waiters(self.clock, self.empty)
        fired = self.results(other.wait(False, False, 5))
        self.waiters.adopt(other)
        self.assertEqual((len(self.waiters), len(other)), (1, 0))
        self.stock = [item(7)]
        self.serve()
        self.assertEqual([i.id for i in fired if i], [7])

    def test_adopted_waiter_leaves_its_new_line(self) -> None:
        emptied: list[str] = []
        old = Waiters(self.clock, lambda: emptied.append("old"))
        new = Waiters(self.clock, lambda: emptied.append("new"))
        old.wait(False, False, 5)
        new.adopt(old)
        self.clock.advance(5)
        self.assertEqual(emptied, ["new"])

    def test_adopted_waiters_keep_their_deadlines(self) -> None:
        """Waiters taken over time out when they would have, their timer
        moved to the new line, in order with its own of the same timeout."""
        old = Waiters(self.clock, self.empty)
        _, early = self.wait(5)
        self.clock.advance(1)
        late: list[Item | None] = []
        old.wait_for(late.append, False, False, 5)
        old_first: list[Item | None] = []
        old.wait_for(old_first.append, False, False, 3)
        self.clock.advance(1)
        self.waiters.adopt(old)
        self.assertIsNone(old.next_deadline)
        self.assertEqual(self.waiters.next_deadline, 4)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2)
        self.assertEqual((old_first, early, late), ([None], [], []))
        self.clock.advance(1)
        self.assertEqual((early, late), ([None], []))
        self.clock.advance(1)
        self.assertEqual(late, [None])
        self.assertEqual(len(self.waiters), 0)

    def test_one_timer_for_the_line(self) -> None:
        """However many wait, the line has one delayed call, for the
        earliest deadline; a waiter due earlier moves it."""
        for timeout in [5, 7, 5, 9]:
            self.wait(timeout)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.waiters.next_deadline, 5)
        self.wait(2)
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 2)

    def test_a_served_waiter_leaves_the_timer_for_the_next(self) -> None:
        """Serving a waiter does not cancel the timer: the next waiter,
        due later, uses it as it is; it fires once for nothing and is set
        again for the waiter still there."""
        _, first = self.wait(5)
        [call] = self.clock.getDelayedCalls()
        self.stock = [item(1)]
        self.serve()
        self.assertEqual([i.id for i in first if i], [1])
        self.assertEqual(self.clock.getDelayedCalls(), [call])
        self.clock.advance(1)
        _, second = self.wait(5)
        self.assertEqual(self.clock.getDelayedCalls(), [call])
        self.assertEqual(call.getTime(), 5)
        self.clock.advance(4)
        self.assertEqual(second, [])
        self.assertEqual(self.waiters.next_deadline, 6)
        self.clock.advance(1)
        self.assertEqual(second, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_last_to_leave_takes_the_timer(self) -> None:
        """Once no waiter is timed because the last one left unserved,
        nothing is left on the clock; ``stop`` ends a timer left after a
        serve."""
        cancelled, _ = self.wait(5)
        untimed, _ = self.wait(None)
        cancelled.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        untimed.cancel()
        self.assertEqual(self.emptied, 1)
        _, served = self.wait(5)
        self.stock = [item(1)]
        self.serve()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.waiters.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.waiters.next_deadline)

    def test_a_waiter_that_left_is_not_answered(self) -> None:
        waiter, answers = self.wait(5)
        waiter.cancel()
        waiter.cancel()
        self.stock = [item(1)]
        self.serve()
        self.clock.advance(10)
        self.assertEqual(answers, [])
        self.assertEqual([i.id for i in self.stock], [1])
        self.assertEqual(self.emptied, 1)

    def test_left_out_of_turn_then_timed(self) -> None:
        """A waiter that leaves behind one of the same timeout still
        waiting does not hold up the timeout of the one behind it."""
        _, first = self.wait(5)
        self.clock.advance(1)
        second, _ = self.wait(5)
        self.clock.advance(1)
        _, third = self.wait(5)
        second.cancel()
        self.clock.advance(3)
        self.assertEqual((first, third), ([None], []))
        self.clock.advance(2)
        self.assertEqual(third, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_late_waiters_answered_earliest_deadline_first(self) -> None:
        """As if each had a delayed call of its own: by deadline, the first
        come first among equals, each answer's consequences before the
        next (a waiter served by them is not timed out)."""
        order: list[str] = []
        self.waiters.wait_for(lambda i: order.append(f"long {i}"), False, False, 3)
        self.clock.advance(1)
        self.waiters.wait_for(lambda i: order.append(f"short {i}"), False, False, 1)

        def then_an_item(result: Item | None) -> None:
            order.append("item comes")
            self.stock = [item(1)]
            self.serve()

        self.waiters.wait_for(then_an_item, False, False, 1)
        self.waiters.wait_for(lambda i: order.append(f"last {i}"), False, False, 4)
        self.clock.advance(5)
        self.assertEqual(
            order, ["short None", "item comes", f"long {item(1)}", "last None"]
        )

    def test_a_late_waiter_waits_for_an_earlier_call_of_the_clock(self) -> None:
        """When the clock goes past several deadlines at once, another call
        due between them runs between them."""
        order: list[str] = []
        self.waiters.wait_for(lambda _: order.append("first"), False, False, 1)
        self.waiters.wait_for(lambda _: order.append("third"), False, False, 3)
        self.clock.callLater(2, order.append, "second")
        self.clock.advance(5)
        self.assertEqual(order, ["first", "second", "third"])

    def test_a_timed_out_waiter_gets_none_once(self) -> None:
        fired = self.results(self.waiters.wait(False, False, 0.5))
        self.clock.advance(0.499)
        self.assertEqual(fired, [])
        self.clock.advance(0.002)
        self.assertEqual(fired, [None])
        # Served after its timeout: nothing more happens to it.
        self.stock = [item(1)]
        self.serve()
        self.assertEqual(fired, [None])
        self.assertEqual([i.id for i in self.stock], [1])

    def test_nothing_of_a_waiter_is_kept_once_it_is_gone(self) -> None:
        """Served, cancelled or timed out, in or out of turn, a waiter's
        answer (a connection's reply writer) is not held by the line."""
        answers: list[weakref.ref[Answer]] = []

        def wait(timeout: float | None) -> Waiter:
            answer = Answer()
            answers.append(weakref.ref(answer))
            return self.waiters.wait_for(answer, False, False, timeout)

        for _ in range(10):
            wait(5)
            self.stock = [item(1)]
            self.serve()
        self.assertEqual([ref() for ref in answers], [None] * 10)
        first = wait(5)
        cancelled = [wait(5), wait(None), wait(3)]
        wait(5)
        for waiter in cancelled:
            waiter.cancel()
        first.cancel()
        del first, cancelled, waiter
        self.stock = [item(2)]
        self.serve()
        wait(1)
        self.clock.advance(1)
        self.assertEqual([ref() for ref in answers], [None] * len(answers))

    def test_a_late_waiter_that_waits_again(self) -> None:
        """A waiter answered by its timeout may wait again at once (a
        client's next get): it is timed from then."""
        again: list[Item | None] = []

        def wait_again(result: Item | None) -> None:
            self.waiters.wait_for(again.append, False, False, 2)

        self.waiters.wait_for(wait_again, False, False, 1)
        self.clock.advance(1)
        self.assertEqual((len(self.waiters), self.waiters.next_deadline), (1, 3))
        self.clock.advance(2)
        self.assertEqual(again, [None])


class DeadlineTests(SynchronousTestCase):
    """A waiter times out when the clock reaches its deadline, to the last
    bit of the float: not a hair before, however the timer was set."""

    def test_a_timer_set_again_from_another_time_is_not_early(self) -> None:
        """A waiter that came at six steps of 50 ms with 250 ms to wait is
        due at 0.55; the clock, stepped on through a nearer deadline, stands
        at 0.5499999999999999: not there yet, however close."""
        clock = Clock()
        deadlines = Deadlines(clock)
        answers: list[str] = []
        first = Waiters(clock, lambda: None, deadlines)
        second = Waiters(clock, lambda: None, deadlines)
        for _ in range(6):
            clock.advance(0.05)
        due = clock.seconds() + 0.25
        first.wait_for(lambda _: answers.append("first"), False, False, 0.25)
        clock.advance(0.05)
        clock.advance(0.05)
        second.wait_for(lambda _: answers.append("second"), False, False, 0.1)
        clock.advance(0.15)
        self.assertLess(clock.seconds(), due)
        self.assertEqual(answers, ["second"])
        clock.advance(due - clock.seconds())
        self.assertEqual(clock.seconds(), due)
        self.assertEqual(answers, ["second", "first"])


class Answer:
    """A waiter's answer, as an object that can be watched."""

    def __call__(self, item: Item | None) -> None:
        pass


#: Timeouts and steps of time that add up exactly in floating point.
TIMEOUTS = st.sampled_from([None, 0.25, 0.5, 1.0, 1.5, 3.0])
STEPS = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0])


class WaitersMachine(RuleBasedStateMachine):
    """Waiters with different timeouts, served, cancelled and timed out in
    any order, against a list of them in the order they came."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.emptied = 0
        self.line = Waiters(self.clock, self.count_empty)
        self.stock: list[Item] = []
        self.next_item = 1
        self.reading = False
        #: Every answer given, in order: (waiter, item id or None).
        self.answers: list[tuple[int, int | None]] = []
        self.expected: list[tuple[int, int | None]] = []
        # The model: waiters still there in the order they came, as
        # (number, deadline or None, peek).
        self.model: list[tuple[int, float | None, bool]] = []
        self.handles: dict[int, Waiter] = {}
        self.model_emptied = 0

    def count_empty(self) -> None:
        self.emptied += 1

    def deliver_to(self, number: int) -> Callable[[Item | None], None]:
        def deliver(item: Item | None) -> None:
            self.answers.append((number, None if item is None else item.id))

        return deliver

    def take(self, open: bool, peek: bool) -> Item | None:
        if not self.stock:
            return None
        return self.stock[0] if peek else self.stock.pop(0)

    @rule(timeout=TIMEOUTS, peek=st.booleans())
    def wait(self, timeout: float | None, peek: bool) -> None:
        number = len(self.handles)
        deliver = self.deliver_to(number)
        self.handles[number] = self.line.wait_for(deliver, False, peek, timeout)
        deadline = None if timeout is None else self.clock.seconds() + timeout
        self.model.append((number, deadline, peek))

    @rule(count=st.integers(min_value=0, max_value=3), reading=st.booleans())
    def items_come(self, count: int, reading: bool) -> None:
        self.reading = reading
        for _ in range(count):
            self.stock.append(item(self.next_item))
            self.next_item += 1
        # The model: first come, first served, until the items run out;
        # then, if nothing more is read, the untimed get nothing.
        stock = list(self.stock)
        while self.model and stock:
            number, _, peek = self.model.pop(0)
            given = stock[0] if peek else stock.pop(0)
            self.expected.append((number, given.id))
        if self.model and not self.reading:
            for entry in [entry for entry in self.model if entry[1] is None]:
                self.model.remove(entry)
                self.expected.append((entry[0], None))
        self.line.serve(self.take, lambda: self.reading)
        assert self.stock == stock

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        number, _, _ = data.draw(st.sampled_from(self.model))
        self.handles[number].cancel()
        self.model = [entry for entry in self.model if entry[0] != number]
        if not self.model:
            self.model_emptied += 1

    @rule(step=STEPS)
    def time_passes(self, step: float) -> None:
        self.clock.advance(step)
        now = self.clock.seconds()
        late = [e for e in self.model if e[1] is not None and e[1] <= now]
        # Earliest deadline first, the first come among equals.
        for entry in sorted(late, key=lambda e: (e[1], e[0])):
            self.model.remove(entry)
            if not self.model:
                self.model_emptied += 1
            self.expected.append((entry[0], None))

    @invariant()
    def answered_as_the_model_says(self) -> None:
        assert self.answers == self.expected, (self.answers, self.expected)
        assert len(self.line) == len(self.model)
        assert self.emptied == self.model_emptied, (self.emptied, self.model_emptied)

    @invariant()
    def one_timer_set_in_time(self) -> None:
        calls = self.clock.getDelayedCalls()
        assert len(calls) <= 1, calls
        deadlines = [e[1] for e in self.model if e[1] is not None]
        if deadlines:
            assert calls and calls[0].getTime() <= min(deadlines), calls
        if not self.model and self.line.next_deadline is None:
            assert not calls


MACHINE_SETTINGS = settings(
    max_examples=int(os.environ.get("ERQ_PROPERTY_EXAMPLES", "200")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class WaitersModelTests(SynchronousTestCase):
    def test_against_the_model(self) -> None:
        run_state_machine_as_test(WaitersMachine, settings=MACHINE_SETTINGS)
