"""erq.admin.history: the queues' recent depths and rates, on a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.admin.history import History
from erq.queue import Queue


class HistoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.queues: dict[str, Queue] = {}
        self.history = History(lambda: self.queues, self.clock, interval=5, size=4)

    def queue(self, name: str) -> Queue:
        queue = self.queues[name] = Queue(name, self.clock)
        return queue

    def put(self, queue: Queue, count: int) -> None:
        for _ in range(count):
            queue.put(b"x")

    def take(self, queue: Queue, count: int) -> None:
        for _ in range(count):
            self.assertIsNotNone(queue.get())

    def test_samples_on_the_clock(self) -> None:
        orders = self.queue("orders")
        self.history.start()
        self.addCleanup(self.history.stop)
        self.put(orders, 3)
        self.clock.advance(5)
        self.take(orders, 1)
        self.clock.advance(4.9)
        self.assertEqual(
            self.history.series("orders"), [(1000, 0, 0, 0), (1005, 3, 3, 0)]
        )
        self.clock.advance(0.1)
        series = self.history.series("orders")
        assert series is not None
        self.assertEqual(series[-1], (1010, 2, 3, 1))

    def test_bounded_to_its_size(self) -> None:
        orders = self.queue("orders")
        for _ in range(10):
            self.put(orders, 1)
            self.history.sample()
            self.clock.advance(5)
        series = self.history.series("orders")
        assert series is not None
        self.assertEqual([depth for _, depth, _, _ in series], [7, 8, 9, 10])
        self.assertEqual([time for time, _, _, _ in series], [1030, 1035, 1040, 1045])

    def test_a_queue_made_later_has_only_its_own_samples(self) -> None:
        self.queue("a")
        self.history.sample()
        self.clock.advance(5)
        self.queue("b")
        self.history.sample()
        self.assertEqual(len(self.history.series("a") or []), 2)
        self.assertEqual(self.history.series("b"), [(1005, 0, 0, 0)])
        self.assertIsNone(self.history.series("never"))

    def test_a_deleted_queue_drops_out(self) -> None:
        self.put(self.queue("a"), 2)
        self.history.sample()
        del self.queues["a"]
        self.assertIsNone(self.history.series("a"))
        self.history.sample()
        self.assertEqual(self.history._tracks, {})
        # Made again: its counters began again, and so does its history.
        self.put(self.queue("a"), 1)
        self.history.sample()
        self.assertEqual(self.history.series("a"), [(1000, 1, 1, 0)])

    def test_at_most_max_queues(self) -> None:
        history = History(lambda: self.queues, self.clock, max_queues=2)
        for name in "abc":
            self.queue(name)
        history.sample()
        self.assertEqual(
            [history.series(name) is not None for name in "abc"], [True, True, False]
        )

    def test_rates_over_the_last_minute(self) -> None:
        history = History(lambda: self.queues, self.clock, interval=5, size=120)
        orders = self.queue("orders")
        self.assertIsNone(history.rates("orders"))
        history.sample()
        self.assertIsNone(history.rates("orders"))
        # Two minutes: 10 in and 5 out every 5 seconds.
        for _ in range(24):
            self.put(orders, 10)
            self.take(orders, 5)
            self.clock.advance(5)
            history.sample()
        self.assertEqual(history.rates("orders"), (2.0, 1.0))
        # A burst now shows at once, over the minute.
        self.put(orders, 60)
        self.clock.advance(1)
        self.assertEqual(history.rates("orders"), ((120 + 60) / 61, 60 / 61))

    def test_rates_before_a_minute_is_sampled(self) -> None:
        history = History(lambda: self.queues, self.clock, interval=5, size=120)
        orders = self.queue("orders")
        history.sample()
        self.put(orders, 10)
        self.clock.advance(2)
        self.assertEqual(history.rates("orders"), (5.0, 0.0))
