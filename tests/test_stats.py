"""Tests for erq.stats: the figures and their names, in order."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.config import Config, QueueSettings
from erq.service import QueueService
from erq.stats import (
    ALIAS_STATS,
    QUEUE_STATS,
    SERVER_STATS,
    Counters,
    queue_stats,
    server_stats,
)


class StatsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.service = QueueService(
            Config(queues={"a": QueueSettings()}, aliases={"e": ("a", "b+c")}),
            reactor=self.clock,
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_server_figures_then_each_queue(self) -> None:
        self.service.delivery.put("a", b"12345", 0, 0)
        self.service.delivery.put("b+c", b"x", 0, 0)
        self.clock.advance(3)
        stats = server_stats(self.service)
        names = [name for name, _ in stats]
        self.assertEqual(names[: len(SERVER_STATS)], list(SERVER_STATS))
        values = dict(stats)
        self.assertEqual(values["uptime"], 3)
        self.assertEqual(values["curr_items"], 2)
        self.assertEqual(values["bytes"], 6)
        self.assertEqual(values["cmd_set"], 2)
        self.assertEqual(values["queue_a_items"], 1)
        self.assertEqual(values["queue_a_bytes"], 5)

    def test_queue_figures_and_children(self) -> None:
        self.service.delivery.put("b", b"x", 0, 0)
        self.service.create_queue("b+audit")
        queue = self.service.queue("b")
        assert queue is not None
        stats = list(queue_stats(self.service, queue))
        self.assertEqual([name for name, _ in stats][:-1], list(QUEUE_STATS))
        self.assertEqual(stats[-1], ("children", "b+audit"))
        self.assertEqual(dict(stats)["logsize"], 0)

    def test_every_counter_is_reported(self) -> None:
        self.assertEqual(
            set(Counters.__slots__) - set(SERVER_STATS), set(), "a counter not shown"
        )

    def test_each_alias_after_the_queues(self) -> None:
        self.service.delivery.put("e", b"123", 0, 0)
        stats = server_stats(self.service)
        self.assertEqual(
            stats[-len(ALIAS_STATS) :],
            [
                ("alias_e_put_items", 1),
                ("alias_e_put_bytes", 3),
                ("alias_e_children", "a,b+c"),
            ],
        )
        self.assertEqual(ALIAS_STATS, ("put_items", "put_bytes", "children"))
