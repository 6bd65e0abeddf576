"""Tests for erq.queue: one FIFO with waiters, open reads, expiry and limits."""

from __future__ import annotations

import tracemalloc

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from erq.config import QueueSettings
from erq.journal import Journal
from erq.queue import Item, Queue
from erq.waiters import Waiter
from tests.support import (
    FakeJournal,
    JournalTestCase,
)


def results(deferred: Deferred[Item | None]) -> list[Item | None]:
    """Collects what ``deferred`` fires with."""
    fired: list[Item | None] = []
    deferred.addCallback(fired.append)
    return fired


class QueueTestCase(SynchronousTestCase):
    settings = QueueSettings()

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.journal = FakeJournal()
        self.queue = Queue("q", self.clock, self.settings, self.journal)

    def take(self, **options: bool) -> Item | None:
        """A get that must answer at once."""
        result = self.queue.get(**options)
        assert not isinstance(result, Deferred), result
        return result

    def take_data(self, **options: bool) -> bytes | None:
        item = self.take(**options)
        return None if item is None else item.data

    def wait(self, timeout: float, **options: bool) -> Deferred[Item | None]:
        result = self.queue.get(timeout, **options)
        assert isinstance(result, Deferred), result
        return result


class PutGetTests(QueueTestCase):
    def test_fifo(self) -> None:
        for data in [b"a", b"b", b"c"]:
            self.assertIs(self.queue.put(data), True)
        self.assertEqual(self.queue.items, 3)
        self.assertEqual([self.take_data() for i in range(4)], [b"a", b"b", b"c", None])
        self.assertEqual(self.queue.items, 0)

    def test_item_fields(self) -> None:
        self.queue.put(b"abc", 7)
        self.clock.advance(2)
        self.queue.put(b"d", expiry=5000)
        first, second = self.take(), self.take()
        assert first is not None and second is not None
        self.assertEqual(
            (first.data, first.flags, first.expiry, first.added),
            (b"abc", 7, None, 1000),
        )
        self.assertEqual((second.flags, second.expiry, second.added), (0, 5000, 1002))
        self.assertGreater(second.id, first.id)

    def test_counts(self) -> None:
        self.queue.put(b"abc")
        self.queue.put(b"de")
        self.assertEqual(
            (self.queue.items, self.queue.queued_bytes, self.queue.mem_items),
            (2, 5, 2),
        )
        self.assertEqual(self.queue.mem_bytes, 5)
        self.take()
        self.assertEqual((self.queue.items, self.queue.queued_bytes), (1, 2))
        self.assertEqual(self.queue.total_items, 2)

    def test_empty_answers_at_once(self) -> None:
        self.assertIsNone(self.queue.get())
        self.assertIsNone(self.queue.get(0))
        self.assertIsNone(self.queue.get(0.0, peek=True))
        self.assertEqual(self.queue.waiters, 0)

    def test_age(self) -> None:
        self.queue.put(b"a")
        self.queue.put(b"b")
        self.clock.advance(1.5)
        self.take()
        self.assertEqual(self.queue.age, 1.5)
        self.take(peek=True)
        self.assertEqual(self.queue.age, 1.5)
        self.clock.advance(1)
        self.take(open=True)
        self.assertEqual(self.queue.age, 2.5)

    def test_removed_items(self) -> None:
        """Items taken for good: plain gets, runs of them and confirmed
        open reads; not peeks, open reads still open, aborts, expiry."""
        for data in [b"a", b"b", b"c", b"d", b"e"]:
            self.queue.put(data)
        self.queue.put(b"x", expiry=self.clock.seconds())
        self.take()
        self.take(peek=True)
        self.assertEqual(self.queue.removed_items, 1)
        self.assertEqual(len(self.queue.take_many(2, 1 << 20)[0]), 2)
        self.assertEqual(self.queue.removed_items, 3)
        opened = self.take(open=True)
        assert opened is not None
        self.queue.abort([opened])
        opened = self.take(open=True)
        assert opened is not None
        self.assertEqual(self.queue.removed_items, 3)
        self.queue.confirm(opened)
        self.assertEqual(self.queue.removed_items, 4)
        self.assertEqual(self.queue.expired_items, 1)

    def test_oldest_added(self) -> None:
        self.assertIsNone(self.queue.oldest_added)
        self.queue.put(b"a")
        self.clock.advance(2)
        self.queue.put(b"b")
        self.assertEqual(self.queue.oldest_added, 1000)
        self.take()
        self.assertEqual(self.queue.oldest_added, 1002)
        self.take()
        self.assertIsNone(self.queue.oldest_added)

    def test_without_journal(self) -> None:
        queue = Queue("q", self.clock)
        self.assertIs(queue.put(b"a"), True)
        item = queue.get(open=True)
        assert isinstance(item, Item)
        queue.abort([item])
        queue.flush()
        self.assertEqual(queue.items, 0)

    def test_journal_calls_in_order(self) -> None:
        self.queue.put(b"a")
        self.queue.put(b"b")
        self.queue.put(b"c")
        self.take()
        opened = self.take(open=True)
        assert opened is not None
        self.queue.abort([opened])
        opened = self.take(open=True)
        assert opened is not None
        self.queue.confirm(opened)
        self.take(peek=True)
        self.queue.flush()
        self.assertEqual(
            self.journal.calls,
            [
                ("add", 1),
                ("add", 2),
                ("add", 3),
                ("remove", 1),
                ("open", 2),
                ("abort", 2),
                ("open", 2),
                ("remove", 2),
                ("flush", 0),
            ],
        )


class DurableTests(QueueTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.journal.durable = True

    def test_put_waits_for_the_journal(self) -> None:
        result = self.queue.put(b"a")
        assert isinstance(result, Deferred)
        stored: list[None] = []
        result.addCallback(stored.append)
        self.assertEqual(stored, [])
        self.journal.pending[0].callback(None)
        self.assertEqual(stored, [None])

    def test_durable_puts_fire_independently(self) -> None:
        first, second = self.queue.put(b"a"), self.queue.put(b"b")
        assert isinstance(first, Deferred) and isinstance(second, Deferred)
        fired: list[str] = []
        first.addCallback(lambda _: fired.append("first"))
        second.addCallback(lambda _: fired.append("second"))
        self.journal.pending[1].callback(None)
        self.journal.pending[0].callback(None)
        self.assertEqual(fired, ["second", "first"])

    def test_journal_failure(self) -> None:
        result = self.queue.put(b"a")
        assert isinstance(result, Deferred)
        failures: list[Failure] = []
        result.addErrback(failures.append)
        self.journal.pending[0].errback(OSError("disk full"))
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0].value, OSError)

    def test_refused_put_is_not_journaled(self) -> None:
        queue = Queue("q", self.clock, QueueSettings(max_items=0), self.journal)
        self.assertIs(queue.put(b"a"), False)
        self.assertEqual(self.journal.calls, [])

    def test_nothing_is_handed_out_before_it_is_durable(self) -> None:
        waiting = self.queue.get(timeout=1.0)
        assert isinstance(waiting, Deferred)
        got = results(waiting)
        self.queue.put(b"a")
        self.assertEqual((got, self.take()), ([], None))
        self.assertEqual((self.queue.items, self.queue.mem_items), (1, 1))
        self.journal.pending[0].callback(None)
        self.assertEqual([item.data for item in got if item], [b"a"])

    def test_a_refused_item_is_never_handed_out(self) -> None:
        waiting = self.queue.get(timeout=1.0)
        assert isinstance(waiting, Deferred)
        got = results(waiting)
        result = self.queue.put(b"a")
        assert isinstance(result, Deferred)
        failures: list[Failure] = []
        result.addErrback(failures.append)
        self.journal.pending[0].errback(OSError("disk full"))
        self.assertEqual(len(failures), 1)
        self.assertEqual((got, self.take()), ([], None))
        self.assertEqual(
            (self.queue.items, self.queue.queued_bytes, self.queue.total_items),
            (0, 0, 0),
        )
        self.queue.put(b"b")
        self.journal.pending[1].callback(None)
        self.assertEqual([item.data for item in got if item], [b"b"])

    def test_order_is_kept_whichever_is_durable_first(self) -> None:
        for data in (b"a", b"b", b"c"):
            result = self.queue.put(data)
            assert isinstance(result, Deferred)
            result.addErrback(lambda f: None)
        self.journal.pending[2].callback(None)
        self.assertIsNone(self.take())
        self.journal.pending[1].errback(OSError("disk full"))
        self.assertIsNone(self.take())
        self.journal.pending[0].callback(None)
        self.assertEqual([self.take_data(), self.take_data()], [b"a", b"c"])
        self.assertIsNone(self.take())

    def test_not_durable_waits_behind_durable(self) -> None:
        """A put that the journal does not make wait (the sync policy was
        reloaded) still comes after the ones before it."""
        self.queue.put(b"a")
        self.journal.durable = False
        self.assertIs(self.queue.put(b"b"), True)
        self.assertIsNone(self.take())
        self.journal.pending[0].callback(None)
        self.assertEqual([self.take_data(), self.take_data()], [b"a", b"b"])

    def test_flushed_while_waiting(self) -> None:
        result = self.queue.put(b"a")
        assert isinstance(result, Deferred)
        self.queue.flush()
        self.assertEqual(self.queue.items, 0)
        self.journal.pending[0].callback(None)
        self.assertIsNone(self.take())
        self.assertEqual(self.queue.mem_bytes, 0)

    def test_a_run_of_puts_waits_together(self) -> None:
        result = self.queue.put_many([b"a", b"b"])
        assert result is not None
        count, durable = result
        self.assertEqual(count, 2)
        assert isinstance(durable, Deferred)
        self.assertIsNone(self.take())
        self.journal.pending[-1].callback(None)
        self.assertEqual([self.take_data(), self.take_data()], [b"a", b"b"])


class WaiterTests(QueueTestCase):
    def test_timeout_edge(self) -> None:
        fired = results(self.wait(0.5))
        self.assertEqual(self.queue.waiters, 1)
        self.clock.advance(0.499)
        self.assertEqual(fired, [])
        self.clock.advance(0.002)
        self.assertEqual(fired, [None])
        self.assertEqual(self.queue.waiters, 0)

    def test_put_goes_to_the_waiter(self) -> None:
        fired = results(self.wait(1))
        self.queue.put(b"a", 3)
        self.assertEqual([(i.data, i.flags) for i in fired if i], [(b"a", 3)])
        self.assertEqual(self.queue.items, 0)
        self.assertEqual(self.queue.waiters, 0)
        self.assertEqual(self.journal.calls, [("add", 1), ("remove", 1)])
        # The waiters' timer is left for the next waiter: it fires once for
        # nothing, and leaves nothing behind.
        self.clock.advance(1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_get_for_answers_through_a_callable(self) -> None:
        """``get_for`` waits without a Deferred: the waiter it returns is
        answered by a call, and can be cancelled."""
        answers: list[Item | None] = []
        waiter = self.queue.get_for(answers.append, 1)
        assert isinstance(waiter, Waiter), waiter
        self.queue.put(b"a")
        self.assertEqual([i.data for i in answers if i], [b"a"])
        cancelled = self.queue.get_for(answers.append, 1, open=True)
        assert isinstance(cancelled, Waiter), cancelled
        cancelled.cancel()
        self.queue.put(b"b")
        self.clock.advance(2)
        self.assertEqual(len(answers), 1)
        self.assertEqual((self.queue.items, self.queue.open_items), (1, 0))
        shown = self.queue.get_for(answers.append, 1, peek=True)
        assert isinstance(shown, Item), shown
        self.assertEqual(shown.data, b"b")

    def test_stop_leaves_no_timer(self) -> None:
        """A timer left for the next waiter goes when the server stops."""
        results(self.wait(5))
        self.queue.put(b"a")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.queue.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_first_come_first_served(self) -> None:
        waiters = [results(self.wait(1)) for i in range(3)]
        self.queue.put(b"a")
        self.queue.put(b"b")
        self.assertEqual(
            [[i.data for i in fired if i] for fired in waiters], [[b"a"], [b"b"], []]
        )
        self.clock.advance(1)
        self.assertEqual(waiters[2], [None])

    def test_item_before_waiter(self) -> None:
        """A get with a timeout takes a queued item at once."""
        self.queue.put(b"a")
        item = self.queue.get(1)
        assert isinstance(item, Item)
        self.assertEqual(item.data, b"a")

    def test_cancel_forgets_the_waiter(self) -> None:
        forgotten: list[Queue] = []
        self.queue.on_no_waiters = forgotten.append
        first, second = self.wait(1), self.wait(1)
        first.addErrback(lambda failure: None)
        second.addErrback(lambda failure: None)
        first.cancel()
        self.assertEqual((self.queue.waiters, forgotten), (1, []))
        second.cancel()
        self.assertEqual((self.queue.waiters, forgotten), (0, [self.queue]))
        self.queue.put(b"a")
        self.assertEqual(self.queue.items, 1)

    def test_timeout_tells_on_no_waiters(self) -> None:
        forgotten: list[Queue] = []
        self.queue.on_no_waiters = forgotten.append
        self.wait(1)
        self.clock.advance(1)
        self.assertEqual(forgotten, [self.queue])

    def test_peek_waiter_and_taker(self) -> None:
        peeked = results(self.wait(1, peek=True))
        taken = results(self.wait(1))
        self.queue.put(b"a")
        self.assertEqual([i.data for i in peeked if i], [b"a"])
        self.assertEqual([i.data for i in taken if i], [b"a"])
        self.assertEqual(self.queue.items, 0)

    def test_peek_waiter_leaves_the_item(self) -> None:
        peeked = results(self.wait(1, peek=True))
        self.queue.put(b"a")
        self.assertEqual([i.data for i in peeked if i], [b"a"])
        self.assertEqual(self.queue.items, 1)
        self.assertEqual(self.queue.waiters, 0)

    def test_open_waiter(self) -> None:
        fired = results(self.wait(1, open=True))
        self.queue.put(b"abc")
        self.assertEqual(len(fired), 1)
        self.assertEqual((self.queue.open_items, self.queue.open_reads.bytes), (1, 3))
        self.assertEqual(self.journal.calls, [("add", 1), ("open", 1)])

    def test_waiter_callback_puts_again(self) -> None:
        """A waiter's callback that adds an item does not lose the others."""
        first = self.wait(1)
        second = results(self.wait(1))
        first.addCallback(lambda item: self.queue.put(b"again"))
        self.queue.put(b"a")
        self.assertEqual([i.data for i in second if i], [b"again"])
        self.assertEqual(self.queue.items, 0)

    def test_waiter_callback_waits_again(self) -> None:
        """A waiter that asks again goes to the back of the line."""
        again: list[Deferred[Item | None]] = []
        first = self.wait(1)
        second = results(self.wait(1))
        first.addCallback(lambda item: again.append(self.wait(1)))
        self.queue.put(b"a")
        self.queue.put(b"b")
        self.assertEqual([i.data for i in second if i], [b"b"])
        self.assertEqual(self.queue.waiters, 1)
        third = results(again[0])
        self.queue.put(b"c")
        self.assertEqual([i.data for i in third if i], [b"c"])

    def test_adopt_waiters(self) -> None:
        old = Queue("q", self.clock)
        fired = results(self.wait_on(old))
        self.queue.adopt_waiters(old)
        self.assertEqual((old.waiters, self.queue.waiters), (0, 1))
        self.queue.put(b"a")
        self.assertEqual([i.data for i in fired if i], [b"a"])

    def test_adopted_waiter_times_out_from_its_new_queue(self) -> None:
        old = Queue("q", self.clock)
        fired = results(self.wait_on(old))
        self.queue.adopt_waiters(old)
        self.clock.advance(1)
        self.assertEqual(fired, [None])
        self.assertEqual(self.queue.waiters, 0)

    def wait_on(self, queue: Queue) -> Deferred[Item | None]:
        result = queue.get(1)
        assert isinstance(result, Deferred)
        return result


class PeekTests(QueueTestCase):
    def test_peek(self) -> None:
        self.queue.put(b"a")
        self.queue.put(b"b")
        self.assertEqual(self.take_data(peek=True), b"a")
        self.assertEqual(self.take_data(peek=True), b"a")
        self.assertEqual(self.queue.items, 2)
        self.assertEqual(self.take_data(), b"a")
        self.assertEqual(self.take_data(peek=True), b"b")
        self.assertEqual(self.journal.calls, [("add", 1), ("add", 2), ("remove", 1)])

    def test_peek_empty(self) -> None:
        self.assertIsNone(self.take(peek=True))

    def test_peek_skips_expired_head(self) -> None:
        self.queue.put(b"a", expiry=1001)
        self.queue.put(b"b")
        self.clock.advance(1)
        self.assertEqual(self.take_data(peek=True), b"b")
        self.assertEqual(self.queue.expired_items, 1)


class OpenReadTests(QueueTestCase):
    def test_open_and_confirm(self) -> None:
        self.queue.put(b"abc")
        self.queue.put(b"d")
        item = self.take(open=True)
        assert item is not None
        self.assertEqual(item.data, b"abc")
        self.assertEqual((self.queue.items, self.queue.open_items), (1, 1))
        self.assertEqual(self.queue.open_reads.bytes, 3)
        self.assertEqual(self.queue.open_reads.transactions, 1)
        self.queue.confirm(item)
        self.assertEqual((self.queue.open_items, self.queue.open_reads.bytes), (0, 0))
        self.assertEqual(self.take_data(), b"d")
        self.assertEqual(self.queue.canceled_transactions, 0)

    def test_abort_puts_back_at_the_head_in_order(self) -> None:
        for data in [b"a", b"b", b"c"]:
            self.queue.put(data)
        first, second = self.take(open=True), self.take(open=True)
        assert first is not None and second is not None
        self.queue.abort([first, second])
        self.assertEqual(self.queue.canceled_transactions, 2)
        self.assertEqual((self.queue.open_items, self.queue.open_reads.bytes), (0, 0))
        self.assertEqual((self.queue.items, self.queue.queued_bytes), (3, 3))
        self.assertEqual([self.take_data() for i in range(3)], [b"a", b"b", b"c"])
        self.assertEqual(
            [call for call in self.journal.calls if call[0] == "abort"],
            [("abort", 2), ("abort", 1)],
        )

    def test_latest_abort_first(self) -> None:
        for data in [b"a", b"b", b"c"]:
            self.queue.put(data)
        first, second = self.take(open=True), self.take(open=True)
        assert first is not None and second is not None
        self.queue.abort([first])
        self.queue.abort([second])
        self.assertEqual([self.take_data() for i in range(3)], [b"b", b"a", b"c"])

    def test_abort_serves_a_waiter(self) -> None:
        self.queue.put(b"a")
        item = self.take(open=True)
        assert item is not None
        fired = results(self.wait(1))
        self.queue.abort([item])
        self.assertEqual([i.data for i in fired if i], [b"a"])
        self.assertEqual(self.queue.items, 0)

    def test_open_items_are_not_queued(self) -> None:
        self.queue.put(b"a")
        self.take(open=True)
        self.assertIsNone(self.take())
        self.assertIsNone(self.take(peek=True))


class OpenTimeoutTests(QueueTestCase):
    """Open reads not closed within ``open_timeout`` go back to the head."""

    settings = QueueSettings(open_timeout=2.0)

    def setUp(self) -> None:
        super().setUp()
        self.taken_back: list[tuple[Queue, Item]] = []

    def open(self) -> Item:
        item = self.take(open=True)
        assert item is not None
        self.queue.time_open(
            item, lambda queue, item: self.taken_back.append((queue, item))
        )
        return item

    def test_back_at_the_head_as_an_abort(self) -> None:
        for data in [b"a", b"b"]:
            self.queue.put(data)
        item = self.open()
        self.clock.advance(1.99)
        self.assertEqual((self.queue.items, self.queue.open_items), (1, 1))
        self.clock.advance(0.01)
        self.assertEqual(self.taken_back, [(self.queue, item)])
        self.assertEqual((self.queue.items, self.queue.open_items), (2, 0))
        self.assertEqual(
            (self.queue.open_reads.bytes, self.queue.canceled_transactions), (0, 1)
        )
        self.assertEqual(self.journal.calls[-1], ("abort", item.id))
        self.assertEqual([self.take_data(), self.take_data()], [b"a", b"b"])

    def test_a_waiter_gets_it(self) -> None:
        self.queue.put(b"a")
        self.open()
        fired = results(self.wait(5))
        self.clock.advance(2)
        self.assertEqual([i.data for i in fired if i], [b"a"])
        self.assertEqual(self.queue.items, 0)

    def test_confirm_or_abort_before_the_timeout_stops_it(self) -> None:
        for data in [b"a", b"b"]:
            self.queue.put(data)
        self.queue.confirm(self.open())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.queue.abort([self.open()])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.taken_back, [])
        self.assertEqual(self.queue.canceled_transactions, 1)
        self.assertEqual(self.queue.items, 1)

    def test_each_read_from_when_it_was_handed_out(self) -> None:
        for data in [b"a", b"b", b"c"]:
            self.queue.put(data)
        first = self.open()
        self.clock.advance(1)
        second = self.open()
        self.clock.advance(1)
        self.assertEqual(self.taken_back, [(self.queue, first)])
        self.clock.advance(1)
        self.assertEqual(self.taken_back, [(self.queue, first), (self.queue, second)])
        # Each went back to the head in turn: the latest first.
        self.assertEqual([self.take_data() for _ in range(3)], [b"b", b"a", b"c"])

    def test_without_a_timeout_nothing_is_timed(self) -> None:
        self.queue.settings = QueueSettings()
        self.queue.put(b"a")
        self.open()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_new_timeout_applies_to_reads_opened_after_it(self) -> None:
        for data in [b"a", b"b"]:
            self.queue.put(data)
        first = self.open()
        self.queue.settings = QueueSettings(open_timeout=10.0)
        second = self.open()
        self.clock.advance(2)
        self.assertEqual(self.taken_back, [(self.queue, first)])
        self.clock.advance(8)
        self.assertEqual(self.taken_back, [(self.queue, first), (self.queue, second)])

    def test_a_deleted_queue_times_nothing(self) -> None:
        self.queue.put(b"a")
        self.open()
        self.queue.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class OpenTimeoutJournalTests(JournalTestCase):
    """A read taken back for its open_timeout is journaled as an abort, so
    that a restart (after a crash: nothing given back at stop) agrees."""

    def test_a_restart_agrees(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="never")
        queue = Queue("q", self.clock, QueueSettings(open_timeout=1.0), journal)
        for data in [b"a", b"b", b"c"]:
            queue.put(data)
        held: list[Item] = []
        for _ in range(2):
            item = queue.get(open=True)
            assert isinstance(item, Item)
            queue.time_open(item, lambda queue, item: None)
            held.append(item)
            self.clock.advance(0.5)
        # "a" is back at the head; then "b" is aborted in front of it.
        self.assertEqual(queue.canceled_transactions, 1)
        queue.abort([held[1]])
        journal.close()
        _, replayed = self.replay()
        self.assertEqual([item.data for item in replayed.items], [b"b", b"a", b"c"])
        self.assertEqual(replayed.reopened, 0)


class ExpiryTests(QueueTestCase):
    def test_expired_item_is_not_handed_out(self) -> None:
        expired: list[Item] = []
        self.queue.expiry.sink = expired.append
        self.queue.put(b"a", expiry=1010)
        self.queue.put(b"b")
        self.clock.advance(9.9)
        self.assertEqual(self.take_data(peek=True), b"a")
        self.clock.advance(0.1)
        self.assertEqual(self.take_data(), b"b")
        self.assertEqual([item.data for item in expired], [b"a"])
        self.assertEqual(self.queue.expired_items, 1)
        self.assertIn(("remove", 1), self.journal.calls)

    def test_put_already_expired(self) -> None:
        """Stored, never handed out, counted as expired."""
        expired: list[Item] = []
        self.queue.expiry.sink = expired.append
        self.assertIs(self.queue.put(b"a", expiry=999), True)
        self.assertIs(self.queue.put(b"b", expiry=1000), True)
        self.assertIsNone(self.take(peek=True))
        self.assertEqual(self.queue.items, 0)
        self.assertEqual(self.queue.expired_items, 2)
        self.assertEqual(self.queue.total_items, 2)
        self.assertEqual([item.data for item in expired], [b"a", b"b"])

    def test_expired_put_does_not_serve_a_waiter(self) -> None:
        fired = results(self.wait(1))
        self.queue.put(b"a", expiry=999)
        self.assertEqual(fired, [])
        self.assertEqual(self.queue.waiters, 1)

    def test_expired_item_skipped_by_a_waiter(self) -> None:
        self.queue.put(b"a", expiry=1001)
        self.clock.advance(2)
        fired = results(self.wait(1))
        self.queue.put(b"b")
        self.assertEqual([i.data for i in fired if i], [b"b"])
        self.assertEqual(self.queue.expired_items, 1)

    def test_max_age_caps_expiry(self) -> None:
        queue = Queue("q", self.clock, QueueSettings(max_age=5))
        queue.put(b"a")
        queue.put(b"b", expiry=1003)
        queue.put(b"c", expiry=2000)
        items = [queue.get(peek=True)]
        self.assertEqual([i.expiry for i in queue._items], [1005, 1003, 1005])
        self.assertIsInstance(items[0], Item)
        self.clock.advance(5)
        self.assertIsNone(queue.get())
        self.assertEqual(queue.expired_items, 3)

    def test_flush_expired(self) -> None:
        self.queue.put(b"a", expiry=1001)
        self.queue.put(b"bb")
        self.queue.put(b"c", expiry=1001)
        self.queue.put(b"dd", expiry=1005)
        self.assertEqual(self.queue.flush_expired(), 0)
        self.clock.advance(2)
        self.assertEqual(self.queue.flush_expired(), 2)
        self.assertEqual((self.queue.items, self.queue.queued_bytes), (2, 4))
        self.assertEqual(self.queue.expired_items, 2)
        self.assertEqual([self.take_data(), self.take_data()], [b"bb", b"dd"])

    def test_flush_expired_limit(self) -> None:
        for i in range(5):
            self.queue.put(b"%d" % i, expiry=1001)
        self.clock.advance(2)
        self.assertEqual(self.queue.flush_expired(limit=2), 2)
        self.assertEqual(self.queue.items, 3)
        self.assertEqual(self.queue.flush_expired(), 3)
        self.assertEqual(self.queue.items, 0)

    def test_sweep(self) -> None:
        for i in range(3):
            self.queue.put(b"%d" % i, expiry=1001)
        self.queue.put(b"kept")
        self.clock.advance(2)
        self.assertEqual(self.queue.sweep(2), 2)
        self.assertEqual(self.queue.sweep(10), 1)
        self.assertEqual(self.queue.sweep(10), 0)
        self.assertEqual(self.take_data(), b"kept")


class FlushTests(QueueTestCase):
    def test_flush(self) -> None:
        self.queue.put(b"a")
        self.queue.put(b"b")
        self.queue.put(b"c")
        opened = self.take(open=True)
        assert opened is not None
        self.queue.flush()
        self.assertEqual((self.queue.items, self.queue.queued_bytes), (0, 0))
        self.assertEqual(self.queue.open_items, 1)
        self.assertEqual(self.queue.total_flushes, 1)
        self.assertEqual(self.journal.calls[-1], ("flush", 0))
        self.queue.abort([opened])
        self.assertEqual(self.take_data(), b"a")
        self.assertIsNone(self.take())

    def test_close(self) -> None:
        self.queue.close()
        self.assertTrue(self.queue.deleted)
        self.assertIsNone(self.queue.journal)
        self.queue.put(b"a")
        self.assertEqual(self.journal.calls, [])


class LimitTests(QueueTestCase):
    def make(self, settings: QueueSettings) -> Queue:
        return Queue("q", self.clock, settings, self.journal)

    def test_max_items(self) -> None:
        queue = self.make(QueueSettings(max_items=2))
        self.assertEqual([queue.put(b"x") for i in range(3)], [True, True, False])
        queue.get()
        self.assertIs(queue.put(b"x"), True)

    def test_open_reads_do_not_count_toward_max_items(self) -> None:
        queue = self.make(QueueSettings(max_items=1))
        queue.put(b"a")
        queue.get(open=True)
        self.assertIs(queue.put(b"b"), True)

    def test_max_size(self) -> None:
        queue = self.make(QueueSettings(max_size=5))
        self.assertIs(queue.put(b"abc"), True)
        self.assertIs(queue.put(b"def"), False)
        self.assertIs(queue.put(b"de"), True)
        self.assertEqual(queue.queued_bytes, 5)

    def test_max_item_size(self) -> None:
        queue = self.make(QueueSettings(max_item_size=3))
        self.assertIs(queue.put(b"abcd"), False)
        self.assertIs(queue.put(b"abc"), True)
        self.assertEqual(queue.total_items, 1)

    def test_discard_old_when_full(self) -> None:
        queue = self.make(QueueSettings(max_items=2, discard_old_when_full=True))
        for data in [b"a", b"b", b"c"]:
            self.assertIs(queue.put(data), True)
        self.assertEqual(queue.limits.discarded, 1)
        self.assertEqual(queue.items, 2)
        self.assertIn(("remove", 1), self.journal.calls)
        self.assertEqual([i.data for i in queue._items], [b"b", b"c"])

    def test_discard_old_by_size(self) -> None:
        queue = self.make(QueueSettings(max_size=4, discard_old_when_full=True))
        queue.put(b"ab")
        queue.put(b"cd")
        self.assertIs(queue.put(b"efg"), True)
        self.assertEqual(queue.limits.discarded, 2)
        self.assertEqual(queue.queued_bytes, 3)

    def test_discard_cannot_make_room(self) -> None:
        queue = self.make(QueueSettings(max_size=2, discard_old_when_full=True))
        queue.put(b"a")
        self.assertIs(queue.put(b"abc"), False)


class IdleTests(QueueTestCase):
    def test_is_idle_since(self) -> None:
        self.assertTrue(self.queue.is_idle_since(1000))
        self.clock.advance(5)
        self.queue.get()
        self.assertFalse(self.queue.is_idle_since(1004))
        self.assertTrue(self.queue.is_idle_since(1005))
        self.queue.put(b"a")
        self.assertFalse(self.queue.is_idle_since(2000))
        self.take(open=True)
        self.assertFalse(self.queue.is_idle_since(2000))

    def test_waiter_is_not_idle(self) -> None:
        self.wait(10)
        self.assertFalse(self.queue.is_idle_since(2000))


class RestoreTests(QueueTestCase):
    def test_restore(self) -> None:
        items = [Item(7, b"abc", 1, None, 900.0), Item(9, b"de", 2, None, 950.0)]
        self.queue.restore(items, behind_items=0, behind_bytes=0, next_id=10)
        self.assertEqual((self.queue.items, self.queue.queued_bytes), (2, 5))
        self.queue.put(b"f")
        self.assertEqual(self.journal.calls, [("add", 10)])
        self.assertEqual(self.take_data(), b"abc")
        self.assertEqual(self.queue.age, 100)
        self.assertEqual([self.take_data(), self.take_data()], [b"de", b"f"])


class MemoryTests(SynchronousTestCase):
    """A deep queue packs its items: what they cost beyond their data."""

    count = 100_000

    def test_queued_items_cost_less_than_64_bytes_beyond_their_data(self) -> None:
        queue = Queue("q", Clock())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(self.count):
                queue.put(b"%064d" % i)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertLess((after - before) / self.count - 64, 64)
        self.assertEqual(
            self.take_all(queue), [b"%064d" % i for i in range(self.count)]
        )

    def test_restored_items_are_packed_too(self) -> None:
        queue = Queue("q", Clock())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            # As replay makes them.
            items = [
                Item(i, b"%064d" % i, 0, None, 900.0 + i) for i in range(self.count)
            ]
            queue.restore(items, behind_items=0, behind_bytes=0, next_id=self.count)
            del items
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertLess((after - before) / self.count - 64, 64)
        self.assertEqual(queue.mem_bytes, 64 * self.count)
        self.assertEqual(
            self.take_all(queue), [b"%064d" % i for i in range(self.count)]
        )

    def take_all(self, queue: Queue) -> list[bytes]:
        items, _ = queue.take_many(queue.items, 1 << 30)
        return [item.data for item in items]


class ReadBehindTests(QueueTestCase):
    settings = QueueSettings(max_memory_size=4)

    def test_items_beyond_memory_stay_in_the_journal(self) -> None:
        for data in [b"ab", b"cd", b"ef", b"g"]:
            self.assertIs(self.queue.put(data), True)
        self.assertEqual(
            self.journal.calls,
            [("add", 1), ("add", 2), ("add_behind", 3), ("add_behind", 4)],
        )
        self.assertEqual((self.queue.mem_items, self.queue.mem_bytes), (2, 4))
        self.assertEqual((self.queue.items, self.queue.queued_bytes), (4, 7))

    def test_read_back_in_order(self) -> None:
        for data in [b"ab", b"cd", b"ef", b"g"]:
            self.queue.put(data)
        self.assertEqual(self.take_data(), b"ab")
        self.assertEqual(self.take_data(), b"cd")
        self.assertEqual(len(self.journal.reads), 1)
        pending = self.queue.get()
        assert isinstance(pending, Deferred)
        fired = results(pending)
        self.journal.read_back(1)
        self.assertEqual([i.data for i in fired if i], [b"ef"])
        rest = self.queue.get()
        assert isinstance(rest, Deferred)
        rest_fired = results(rest)
        self.journal.read_back(1)
        self.assertEqual([i.data for i in rest_fired if i], [b"g"])
        self.assertEqual((self.queue.items, self.queue.behind_items), (0, 0))
        self.assertIsNone(self.queue.get())

    def test_first_item_always_in_memory(self) -> None:
        self.assertIs(self.queue.put(b"too big"), True)
        self.assertEqual(self.journal.calls, [("add", 1)])
        self.assertEqual(self.take_data(), b"too big")


class DiscardBehindTests(QueueTestCase):
    """A full queue that discards its oldest items when those are on disk."""

    settings = QueueSettings(max_memory_size=4, max_items=3, discard_old_when_full=True)

    def test_new_items_are_taken_and_the_oldest_dropped_once_read_back(
        self,
    ) -> None:
        for data in [b"ab", b"cd", b"ef"]:
            self.queue.put(data)
        self.assertEqual(self.take_data(), b"ab")
        self.assertEqual(self.take_data(), b"cd")
        # The queue holds one item, on disk; two more fill it.
        for data in [b"gh", b"ij"]:
            self.assertIs(self.queue.put(data), True)
        # Full, its oldest item on disk: the new item is still stored.
        self.assertIs(self.queue.put(b"kl"), True)
        self.assertEqual(self.queue.items, 4)
        self.journal.read_back(2)
        # Once read back, the oldest ("ef") is dropped, as a discard.
        self.assertEqual(self.queue.items, 3)
        self.assertEqual(self.queue.limits.discarded, 1)
        taken = [self.queue.get() for _ in range(3)]
        pending = [item for item in taken if isinstance(item, Deferred)]
        for _ in pending:
            self.journal.read_back(1)
        drained = [item.data for item in taken if isinstance(item, Item)]
        for deferred in pending:
            drained.extend(item.data for item in results(deferred) if item)
        self.assertEqual(drained, [b"gh", b"ij", b"kl"])
