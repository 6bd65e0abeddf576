"""Durable sets of connections in lock-step, gathered into shared batches
(``erq.journal.cohort``): the cohort's bookkeeping alone, then the writer's
hand-off one interleaving at a time, with the thread run by hand (see
``tests.test_writer``)."""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.durable import Durable
from erq.journal import Journal
from erq.journal.cohort import LOCK_STEP, MOST, WINDOW, Cohort, Pace
from tests.support import FakeJournal, ProtocolTestCase, set_line
from tests.test_writer import HandOffCase, engine_finished, item


class CohortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backs: list[None] = []
        self.cohort = Cohort(self.clock.seconds, lambda: self.backs.append(None))

    def test_expected_until_the_window_is_over(self) -> None:
        cohort = self.cohort
        cohort.arrived("a", True)
        self.assertEqual((cohort.pending, cohort.answering), (1, {"a"}))
        cohort.sent()
        self.assertTrue(cohort.on_thread())
        cohort.answered("a", prompt=True)
        self.assertFalse(cohort.on_thread())
        self.assertEqual(cohort.wait(), WINDOW)
        self.clock.advance(WINDOW / 2)
        self.assertAlmostEqual(cohort.wait(), WINDOW / 2)
        self.clock.advance(WINDOW / 2)
        self.assertEqual(cohort.wait(), 0.0)
        # Forgotten once its time is over.
        self.assertEqual(cohort.expected, {})

    def test_the_last_one_back_is_told(self) -> None:
        cohort = self.cohort
        for who in ("a", "b"):
            cohort.arrived(who, True)
        cohort.sent()
        cohort.answered("a", prompt=True)
        cohort.answered("b", prompt=True)
        cohort.arrived("a", True)
        self.assertEqual(self.backs, [])
        self.assertFalse(cohort.whole(1))
        cohort.arrived("b", True)
        self.assertEqual(self.backs, [None])
        self.assertTrue(cohort.whole(2))
        # A set beside theirs, of a connection not in lock-step.
        self.assertFalse(cohort.whole(3))

    def test_one_that_is_not_quick_is_not_waited_for(self) -> None:
        cohort = self.cohort
        cohort.arrived("a", False)
        self.assertEqual((cohort.pending, cohort.answering), (0, set()))
        self.assertFalse(cohort.whole(1))
        self.assertFalse(cohort.on_thread())

    def test_many_are_not_waited_for(self) -> None:
        cohort = self.cohort
        for who in range(MOST):
            cohort.arrived(who, True)
        self.assertTrue(cohort.gathers())
        self.assertTrue(cohort.whole(MOST))
        cohort.arrived(MOST, True)
        self.assertFalse(cohort.gathers())
        self.assertFalse(cohort.whole(MOST + 1))
        # Those gone quiet leave room again.
        cohort.sent()
        for who in range(MOST + 1):
            cohort.answered(who, prompt=True)
        self.assertFalse(cohort.gathers())
        self.clock.advance(WINDOW)
        cohort.arrived(0, True)
        self.assertTrue(cohort.gathers())

    def test_one_that_leaves_is_not_waited_for(self) -> None:
        cohort = self.cohort
        cohort.arrived("a", True)
        cohort.answered("a", prompt=True)
        cohort.forget("a")
        self.assertEqual(self.backs, [None])
        self.assertEqual((cohort.answering, cohort.expected), (set(), {}))
        self.assertEqual(cohort.wait(), 0.0)

    def stored(self, pace: Pace, cohort: Cohort | None = None) -> Durable:
        """A durable set of ``pace``'s, of ``cohort``'s queue (the test's
        own by default), waiting for its fsync."""
        durable = Durable()
        durable.cohort = self.cohort if cohort is None else cohort
        pace.stored(durable)
        return durable

    def in_step(self, pace: Pace) -> None:
        """A durable set of ``pace``'s that comes in lock-step, answered."""
        durable = self.stored(pace)
        self.assertTrue(pace.quick)
        self.assertEqual(self.cohort.answering, {pace})
        durable.callback(None)

    def test_a_pace_joins_when_it_comes_within_the_window(self) -> None:
        cohort = self.cohort
        pace = Pace()
        first = self.stored(pace)
        # A first set says nothing of the connection's pace.
        self.assertFalse(pace.quick)
        self.assertEqual(cohort.answering, set())
        self.clock.advance(1)
        first.callback(None)
        self.assertEqual(pace.answered_at, 1)
        self.assertEqual(cohort.expected, {})
        self.clock.advance(WINDOW / 2)
        self.in_step(pace)
        self.assertEqual(cohort.expected, {pace: self.clock.seconds() + WINDOW})
        # Later than the window: no longer waited for, still in lock-step.
        self.clock.advance(WINDOW * 2)
        self.assertEqual(cohort.wait(), 0.0)
        self.assertEqual(cohort.expected, {})
        self.in_step(pace)
        # Quick, but later than the window: its next set is not waited for.
        self.assertFalse(pace.prompt)
        self.assertEqual(cohort.expected, {})
        # Too late: no longer in lock-step.
        self.clock.advance(LOCK_STEP * 2)
        self.stored(pace)
        self.assertFalse(pace.quick)
        self.assertEqual((cohort.answering, cohort.expected), (set(), {}))
        pace.gone()
        self.assertIsNone(pace.cohort)

    def test_a_pace_that_pipelines_is_not_in_step(self) -> None:
        """A set sent before the answer to the one before is not in
        lock-step: the client has more to send while it is synced."""
        cohort = self.cohort
        pace = Pace()
        sets = []
        for _ in range(3):
            d = Durable()
            d.cohort = cohort
            sets.append(d)
        pace.stored(sets[0])
        self.clock.advance(WINDOW / 10)
        sets[0].callback(None)
        self.clock.advance(WINDOW / 10)
        pace.stored(sets[1])
        self.assertTrue(pace.quick)
        self.clock.advance(WINDOW / 10)
        pace.stored(sets[2])
        self.assertFalse(pace.quick)
        self.assertEqual(cohort.answering, set())

    def test_a_pace_that_moves_to_another_queue_leaves_the_first(self) -> None:
        pace = Pace()
        other = Cohort(self.clock.seconds, lambda: None)
        for _ in range(2):
            self.stored(pace).callback(None)
        self.assertEqual(set(self.cohort.expected), {pace})
        self.stored(pace, other)
        self.assertEqual(self.cohort.expected, {})
        self.assertIs(pace.cohort, other)

    def test_a_pace_in_the_middle_of_a_request_is_expected(self) -> None:
        """A read that stored durable sets and ended inside a request: the
        batch waits for the rest, until the window after the first such
        read is over, however many follow."""
        cohort = self.cohort
        pace = Pace()
        self.stored(pace)
        self.assertTrue(pace.read_stored)
        pace.mid_request()
        first = self.clock.seconds() + WINDOW
        self.assertEqual(cohort.expected, {pace: first})
        self.assertTrue(cohort.gathers())
        self.assertFalse(cohort.whole(1))
        self.clock.advance(WINDOW / 2)
        # The rest came, with more sets, and a read that ends inside another.
        self.stored(pace)
        self.assertEqual((cohort.expected, self.backs), ({}, [None]))
        pace.mid_request()
        self.assertEqual(cohort.expected, {pace: first})
        self.clock.advance(WINDOW / 2)
        self.assertEqual(cohort.wait(), 0.0)
        self.assertEqual(cohort.expected, {})
        # Later, a new burst is waited for a window of its own.
        self.stored(pace)
        pace.mid_request()
        self.assertEqual(cohort.expected, {pace: self.clock.seconds() + WINDOW})
        pace.gone()
        self.assertEqual(cohort.expected, {})

    def test_a_pace_that_stored_nothing_durably_is_not_expected(self) -> None:
        pace = Pace()
        pace.mid_request()
        self.assertIsNone(pace.cohort)
        self.assertEqual(self.cohort.expected, {})

    def test_a_durable_of_no_journal_is_not_counted(self) -> None:
        pace = Pace()
        d = Durable()
        pace.stored(d)
        self.assertIsNone(pace.cohort)
        self.assertEqual(d.first, [])


class GatherTests(HandOffCase):
    """Producers that wait for ``STORED`` before their next set: the writer
    holds a set while a batch with another's is on the thread, and until
    the others, answered, send their next sets; then all share one batch,
    which the reactor syncs itself."""

    def setUp(self) -> None:
        super().setUp()
        self.queue = self.opened("a")
        self.a, self.b = Pace(), Pace()
        self.next = 2

    def opened(self, name: str) -> Journal:
        # Opened without a linger, which the rest of each test has.
        self.writer.linger = 0
        journal = super().opened(name)
        self.writer.linger = 0.002
        return journal

    def store(self, pace: Pace, journal: Journal | None = None) -> list[object]:
        """What the protocol does for a durable set of ``pace``'s
        connection."""
        d = (journal or self.queue).add(item(self.next))
        self.next += 1
        assert type(d) is Durable
        pace.stored(d)
        return self.fired(d)

    def end_of_turn(self) -> None:
        self.reactor.advance(0)

    def in_step(self, *paces: Pace, journal: Journal | None = None) -> None:
        """Each connection stores twice, answered at once: the second time
        in lock-step, all in one batch; all are expected back."""
        paces = paces or (self.a, self.b)
        for _ in range(2):
            stored = [self.store(pace, journal) for pace in paces]
            self.end_of_turn()
            self.settle()
            self.assertEqual(stored, [[None]] * len(paces))
        cohort = (journal or self.queue).cohort
        self.assertEqual(set(cohort.expected), set(paces))
        self.reactor.advance(WINDOW / 4)

    def test_sets_in_step_share_a_batch_the_reactor_syncs(self) -> None:
        self.in_step()
        ran = len(self.engine.ran_now)
        a1 = self.store(self.a)
        self.end_of_turn()
        # Waiting for b.
        self.assertEqual((a1, len(self.engine.ran_now)), ([], ran))
        b1 = self.store(self.b)
        self.assertEqual(b1, [])
        self.end_of_turn()
        self.assertEqual((a1, b1), ([None], [None]))
        self.assertEqual(len(self.engine.ran_now), ran + 1)
        self.assertEqual(self.engine.queued, deque())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_sixteen_in_step_share_a_batch_the_reactor_syncs(self) -> None:
        """As many producers as a busy queue has: their answers go out
        together and their next sets come back together, so the batch
        waits for the last of them, and the reactor syncs it, rather than
        the thread syncing them all anyway, with two wake-ups more."""
        paces = [Pace() for _ in range(16)]
        self.in_step(*paces)
        ran = len(self.engine.ran_now)
        stored = []
        for pace in paces[:-1]:
            stored.append(self.store(pace))
            self.end_of_turn()
        # Waiting for the last one.
        self.assertEqual(stored, [[]] * 15)
        self.assertEqual(len(self.engine.ran_now), ran)
        self.assertEqual(self.engine.queued, deque())
        stored.append(self.store(paces[-1]))
        self.end_of_turn()
        self.assertEqual(stored, [[None]] * 16)
        self.assertEqual(len(self.engine.ran_now), ran + 1)
        self.assertEqual(self.engine.queued, deque())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_one_slower_than_the_window_is_not_waited_for_again(self) -> None:
        """A producer that takes longer than the window to send its next
        set (one that does some work between sets) is still in lock-step,
        but a batch no longer waits for it: waiting would hold every batch
        back a whole window."""
        self.in_step()
        a1 = self.store(self.a)
        self.end_of_turn()
        self.reactor.advance(WINDOW)
        self.assertEqual(a1, [None])
        self.reactor.advance(WINDOW / 4)
        # b comes back later than the window, a within it.
        b1 = self.store(self.b)
        a2 = self.store(self.a)
        self.end_of_turn()
        self.assertEqual((a1, a2, b1), ([None], [None], [None]))
        self.assertEqual(set(self.queue.cohort.expected), {self.a})
        self.assertEqual(self.queue.cohort.answering, set())
        # a's next set goes at once.
        a3 = self.store(self.a)
        self.end_of_turn()
        self.assertEqual(a3, [None])

    def test_a_set_waits_for_the_batch_on_the_thread_and_its_connection(
        self,
    ) -> None:
        self.in_step()
        cohort = self.queue.cohort
        # b is late: a's set goes once the window is over, to the thread
        # (the engine is busy with jobs of its own).
        a1 = self.store(self.a)
        self.end_of_turn()
        self.engine.refuse_run = True
        self.reactor.advance(WINDOW)
        self.assertEqual(len(self.engine.queued), 1)
        self.engine.refuse_run = False
        # b comes back while a's set is synced: its set waits.
        b1 = self.store(self.b)
        self.end_of_turn()
        self.assertEqual(len(self.engine.queued), 1)
        # a's batch comes back: a is answered; b's set waits for a's next.
        self.assertTrue(self.engine.run_one())
        engine_finished(self.writer)
        self.assertEqual((a1, b1), ([None], []))
        self.assertEqual(self.engine.queued, deque())
        self.assertEqual(set(cohort.expected), {self.a})
        self.reactor.advance(WINDOW / 4)
        ran = len(self.engine.ran_now)
        a2 = self.store(self.a)
        self.end_of_turn()
        # One batch: b came back later than the window, not so late as to
        # be out of step, so the reactor syncs both sets itself.
        self.assertEqual(len(self.engine.ran_now), ran + 1)
        self.assertEqual(self.engine.queued, deque())
        self.assertEqual((a2, b1), ([None], [None]))
        ran += 1
        # In step again: both in one batch, synced by the reactor.
        self.reactor.advance(WINDOW / 4)
        a3 = self.store(self.a)
        b2 = self.store(self.b)
        self.end_of_turn()
        self.assertEqual(len(self.engine.ran_now), ran + 1)
        self.assertEqual((a3, b2), ([None], [None]))
        self.assertEqual(self.writer._dispatch.on_thread, 0)
        self.assertEqual(
            self.replayed("a"), [item(i).data for i in range(1, self.next)]
        )

    def test_a_connection_that_does_not_come_back_is_waited_for_once(
        self,
    ) -> None:
        self.in_step()
        a1 = self.store(self.a)
        self.end_of_turn()
        self.reactor.advance(WINDOW / 2)
        self.assertEqual(a1, [])
        self.reactor.advance(WINDOW / 2)
        self.assertEqual(a1, [None])
        # b is expected no more: a's next set goes at once.
        self.reactor.advance(WINDOW / 4)
        a2 = self.store(self.a)
        self.end_of_turn()
        self.assertEqual(a2, [None])

    def test_a_set_out_of_step_beside_theirs_goes_to_the_thread(self) -> None:
        """The reactor syncs a batch itself only if nothing but the sets of
        connections in lock-step wait for it: a client that pipelines may
        have more to send meanwhile."""
        self.in_step()
        c = Pace()
        ran = len(self.engine.ran_now)
        a1, b1, c1 = self.store(self.a), self.store(self.b), self.store(c)
        self.end_of_turn()
        self.assertEqual(len(self.engine.ran_now), ran)
        self.assertEqual(len(self.engine.queued), 1)
        self.settle()
        self.assertEqual((a1, b1, c1), ([None], [None], [None]))

    def test_many_connections_in_step_are_left_to_group_commit(self) -> None:
        paces = [Pace() for _ in range(MOST + 1)]
        self.in_step(*paces)
        first = self.store(paces[0])
        self.end_of_turn()
        # Not waiting for the others: on its own, synced by the reactor.
        self.assertEqual(first, [None])
        self.assertIsNone(self.writer.gathering.call)
        ran = len(self.engine.ran_now)
        rest = [self.store(pace) for pace in paces[1:]]
        self.end_of_turn()
        # Nor synced by the reactor: the thread takes them.
        self.assertEqual(len(self.engine.ran_now), ran)
        self.settle()
        self.assertEqual(rest, [[None]] * MOST)

    def test_one_that_leaves_is_not_waited_for(self) -> None:
        self.in_step()
        a1 = self.store(self.a)
        self.end_of_turn()
        self.assertEqual(a1, [])
        self.b.gone()
        self.end_of_turn()
        self.assertEqual(a1, [None])

    def test_one_that_is_not_in_step_is_not_waited_for(self) -> None:
        """A set that comes later than ``LOCK_STEP`` after its answer (a
        producer that paces itself) neither waits nor is waited for."""
        self.in_step(self.a)
        self.reactor.advance(LOCK_STEP * 2)
        a1 = self.store(self.a)
        b1 = self.store(self.b)
        self.end_of_turn()
        self.settle()
        self.assertEqual((a1, b1), ([None], [None]))
        self.assertEqual(self.queue.cohort.expected, {})
        self.assertEqual(self.queue.cohort.answering, set())

    def test_queues_do_not_wait_for_each_other(self) -> None:
        """Connections in lock-step on other queues are not waited for:
        producers each on a queue of their own go as they come."""
        other = self.opened("b")
        self.in_step(self.a)
        self.in_step(self.b, journal=other)
        a1 = self.store(self.a)
        self.end_of_turn()
        self.assertEqual(a1, [None])
        self.assertEqual(set(other.cohort.expected), {self.b})

    def test_a_producer_slower_than_the_window_is_still_in_step(self) -> None:
        """A producer whose next set comes later than the window (a busy
        machine) is no longer waited for, but is still in lock-step: its
        set, beside a consumer's removals from its queue, is synced by the
        reactor itself."""
        self.in_step(self.a)
        self.reactor.advance(WINDOW * 2)
        self.queue.remove(item(2))
        ran = len(self.engine.ran_now)
        a1 = self.store(self.a)
        self.end_of_turn()
        self.assertEqual((a1, len(self.engine.ran_now)), ([None], ran + 1))
        self.assertEqual(self.engine.queued, deque())
        # Beyond LOCK_STEP, out of step: the same batch goes to the thread.
        self.reactor.advance(LOCK_STEP * 2)
        self.queue.remove(item(3))
        a2 = self.store(self.a)
        self.end_of_turn()
        self.assertEqual((a2, len(self.engine.ran_now)), ([], ran + 1))
        self.assertEqual(len(self.engine.queued), 1)
        self.settle()
        self.assertEqual(a2, [None])
        self.assertEqual(self.replayed("a"), [item(i).data for i in (1, 4, 5)])

    def test_removals_on_the_thread_hold_no_set(self) -> None:
        """A batch of removals on the thread does not hold a durable set
        back: nothing in lock-step is in it."""
        self.in_step(self.a)
        self.queue.remove(item(2))
        self.reactor.advance(self.writer.linger)
        self.assertEqual(len(self.engine.queued), 1)
        a1 = self.store(self.a)
        self.end_of_turn()
        self.assertEqual(len(self.engine.queued), 2)
        self.settle()
        self.assertEqual(a1, [None])

    def test_a_burst_in_two_reads_shares_one_batch(self) -> None:
        """A producer that pipelines a burst of sets larger than a read:
        the sets of the first read wait for the rest of the burst, and all
        of it is synced once."""
        first = [self.store(self.a) for _ in range(2)]
        self.a.mid_request()
        self.end_of_turn()
        self.assertEqual(first, [[], []])
        self.assertEqual((self.engine.queued, self.engine.ran_now), (deque(), []))
        # The rest of the burst, in the next read.
        rest = [self.store(self.a) for _ in range(2)]
        self.end_of_turn()
        self.assertEqual(len(self.engine.queued), 1)
        self.assertEqual(self.engine.ran_now, [])
        self.settle()
        self.assertEqual(first + rest, [[None]] * 4)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(
            self.replayed("a"), [item(i).data for i in range(1, self.next)]
        )

    def test_the_rest_of_a_burst_is_waited_for_a_window_at_most(self) -> None:
        stored = self.store(self.a)
        self.a.mid_request()
        self.end_of_turn()
        self.reactor.advance(WINDOW / 2)
        # Another read, that also ends inside a request.
        stored2 = self.store(self.a)
        self.a.mid_request()
        self.end_of_turn()
        self.assertEqual(self.engine.queued, deque())
        self.reactor.advance(WINDOW / 2)
        self.assertEqual(len(self.engine.queued), 1)
        self.settle()
        self.assertEqual((stored, stored2), ([None], [None]))

    def test_stopping_sends_what_waits(self) -> None:
        self.in_step()
        a1 = self.store(self.a)
        self.end_of_turn()
        self.assertIsNotNone(self.writer.gathering.call)
        stopped = self.fired(self.writer.stop())
        self.settle()
        self.assertEqual((a1, stopped), ([None], [None]))
        self.assertIsNone(self.writer.gathering.call)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class CohortJournal(FakeJournal):
    """A durable journal whose adds join its cohort, as a real one's do."""

    def __init__(self, cohort: Cohort) -> None:
        super().__init__(durable=True)
        self.cohort = cohort

    def _durable(self) -> Deferred[None] | None:
        durable = super()._durable()
        assert type(durable) is Durable
        durable.cohort = self.cohort
        return durable


class ConnectionPaceTests(ProtocolTestCase):
    """A connection tells its queue's cohort when each durable set arrives
    and is answered, and when it goes."""

    def setUp(self) -> None:
        super().setUp()
        self.backs: list[None] = []
        self.cohort = Cohort(self.clock.seconds, lambda: self.backs.append(None))
        self.journal = CohortJournal(self.cohort)
        self.service.create_queue("q").journal = self.journal

    def answer(self) -> bytes:
        self.journal.pending.pop(0).callback(None)
        return self.client.take()

    def test_sets_in_lock_step_join_the_cohort(self) -> None:
        self.client.send(set_line(b"q", b"a"))
        self.assertEqual(self.answer(), b"STORED\r\n")
        self.assertEqual(self.cohort.expected, {})
        self.clock.advance(WINDOW / 2)
        self.client.send(set_line(b"q", b"b"))
        self.assertEqual(len(self.cohort.answering), 1)
        self.assertEqual(self.answer(), b"STORED\r\n")
        self.assertEqual(len(self.cohort.expected), 1)
        self.clock.advance(WINDOW / 2)
        # A run of sets in one read is one durable add.
        self.client.send(set_line(b"q", b"c") * 3)
        self.assertEqual(len(self.cohort.answering), 1)
        self.assertEqual(self.cohort.expected, {})
        self.assertEqual(self.answer(), b"STORED\r\n" * 3)
        self.client.close()
        self.assertEqual((self.cohort.answering, self.cohort.expected), (set(), {}))
        # Back with the run, and gone.
        self.assertEqual(self.backs, [None, None])

    def test_a_read_that_ends_inside_a_request_is_waited_for(self) -> None:
        burst = set_line(b"q", b"a") * 2 + set_line(b"q", b"b")
        cut = len(set_line(b"q", b"a")) * 2 + 5
        self.client.send(burst[:cut])
        pace = self.client.protocol._pace
        self.assertEqual(self.cohort.expected, {pace: self.clock.seconds() + WINDOW})
        self.client.send(burst[cut:])
        self.assertEqual((self.cohort.expected, self.backs), ({}, [None]))
        while self.journal.pending:
            self.journal.pending.pop(0).callback(None)
        self.assertEqual(self.client.take(), b"STORED\r\n" * 3)

    def test_a_set_line_without_its_block_is_inside_a_request(self) -> None:
        self.client.send(set_line(b"q", b"a") + b"set q 0 0 1\r\n")
        self.assertEqual(set(self.cohort.expected), {self.client.protocol._pace})

    def test_reads_that_end_between_requests_are_not_waited_for(self) -> None:
        self.client.send(set_line(b"q", b"a") * 2)
        self.assertEqual(self.cohort.expected, {})
        self.assertEqual(self.answer(), b"STORED\r\n" * 2)
        # Inside a request, but no durable set in the read.
        self.client.send(set_line(b"q", b"b")[:5])
        self.assertEqual(self.cohort.expected, {})

    def test_a_set_that_comes_late_leaves_the_cohort(self) -> None:
        for data in (b"a", b"b"):
            self.client.send(set_line(b"q", data))
            self.answer()
        self.assertEqual(len(self.cohort.expected), 1)
        self.clock.advance(LOCK_STEP * 2)
        self.client.send(set_line(b"q", b"c"))
        self.assertEqual((self.cohort.answering, self.cohort.expected), (set(), {}))

    def test_a_set_that_fails_leaves_no_one_waited_for(self) -> None:
        for data in (b"a", b"b"):
            self.client.send(set_line(b"q", data))
            if data == b"a":
                self.answer()
        self.journal.pending.pop(0).errback(OSError("disk full"))
        self.assertTrue(self.client.take().startswith(b"SERVER_ERROR "))
        self.clock.advance(LOCK_STEP * 2)
        self.client.send(set_line(b"q", b"c"))
        self.assertEqual(self.cohort.answering, set())
