"""Tests for erq.delivery: where a set's item goes, and what the set hears."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from erq.config import Config, QueueSettings
from erq.delivery import ABSOLUTE_EXPTIME, all_durable
from erq.items import Item
from erq.service import QueueService


class DeliveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.service = QueueService(
            Config(
                queues={"only": QueueSettings(fanout_only=True)},
                aliases={"both": ("a", "b")},
            ),
            reactor=self.clock,
        )
        self.delivery = self.service.delivery

    def items(self, name: str) -> int:
        queue = self.service.queue(name)
        return 0 if queue is None else queue.items

    def test_expiry(self) -> None:
        now = self.clock.seconds()
        self.assertIsNone(self.delivery.expiry(0))
        self.assertEqual(self.delivery.expiry(-1), now - 1)
        self.assertEqual(self.delivery.expiry(10), now + 10)
        self.assertEqual(self.delivery.expiry(ABSOLUTE_EXPTIME), now + ABSOLUTE_EXPTIME)
        later = ABSOLUTE_EXPTIME + 1
        self.assertEqual(self.delivery.expiry(later), float(later))

    def test_children_come_and_go_with_their_queues(self) -> None:
        self.service.create_queue("p+x")
        self.service.create_queue("p+a")
        self.service.create_queue("q")
        self.assertEqual(self.delivery.children("p"), ["p+a", "p+x"])
        self.assertEqual(self.delivery.children("q"), [])
        self.assertTrue(self.service.delete("p+x"))
        self.assertEqual(self.delivery.children("p"), ["p+a"])
        self.assertTrue(self.service.delete("p+a"))
        self.assertEqual(self.delivery.children("p"), [])

    def test_a_set_to_a_parent_copies_to_each_child(self) -> None:
        self.service.create_queue("p+1")
        self.service.create_queue("p+2")
        self.assertIs(self.delivery.put("p", b"x", 0, 0), True)
        self.assertEqual([self.items(n) for n in ("p", "p+1", "p+2")], [1, 1, 1])

    def test_fanout_only_keeps_nothing(self) -> None:
        self.assertIs(self.delivery.put("only", b"x", 0, 0), True)
        self.assertEqual(self.items("only"), 0)
        self.assertIsNone(self.delivery.put_many("only", [b"x", b"y"], 0, 0))

    def test_an_alias_copies_to_each_destination_and_counts(self) -> None:
        self.assertIs(self.delivery.put("both", b"xyz", 0, 0), True)
        self.assertEqual([self.items("a"), self.items("b")], [1, 1])
        self.assertIsNone(self.service.queue("both"))
        counters = self.delivery.alias_counters["both"]
        self.assertEqual((counters.put_items, counters.put_bytes), (1, 3))
        self.assertIsNone(self.delivery.put_many("both", [b"x", b"y"], 0, 0))

    def test_put_many_of_one_plain_queue(self) -> None:
        self.assertEqual(self.delivery.put_many("plain", [b"x", b"y"], 0, 0), (2, None))
        self.assertEqual(self.items("plain"), 2)
        self.assertEqual(self.service.counters.cmd_set, 2)

    def test_nothing_is_put_while_shutting_down(self) -> None:
        self.service.shutting_down = True
        self.assertIs(self.delivery.put("plain", b"x", 0, 0), False)
        self.assertIsNone(self.delivery.put_many("plain", [b"x", b"y"], 0, 0))
        self.assertIsNone(self.service.queue("plain"))
        self.assertEqual(self.service.counters.cmd_set, 1)

    def test_configure_keeps_the_counters_of_an_alias_kept(self) -> None:
        self.delivery.put("both", b"x", 0, 0)
        kept = self.delivery.alias_counters["both"]
        self.delivery.configure(Config(aliases={"both": ("a",), "new": ("b",)}))
        self.assertIs(self.delivery.alias_counters["both"], kept)
        self.assertEqual(self.delivery.alias_counters["new"].put_items, 0)
        self.service.live_config.apply(Config())
        self.assertEqual(self.delivery.alias_counters, {})
        self.assertIs(self.delivery.put("both", b"x", 0, 0), True)
        self.assertEqual(self.items("both"), 1)

    def test_expired_items_move_without_expiring(self) -> None:
        move = self.delivery.expire_into("source", "target")
        move(Item(1, b"old", 3, self.clock.seconds() - 1, 0.0))
        target = self.service.queue("target")
        assert target is not None
        moved = target.get(None, False, False)
        assert moved is not None and not isinstance(moved, Deferred)
        self.assertEqual((moved.data, moved.flags, moved.expiry), (b"old", 3, None))


class AllDurableTests(SynchronousTestCase):
    def test_fires_once_every_write_is_durable(self) -> None:
        first: Deferred[None] = Deferred()
        done = all_durable([first, succeed(None)])
        self.assertNoResult(done)
        first.callback(None)
        self.assertEqual(self.successResultOf(done), [None, None])

    def test_fails_with_the_first_failure_itself(self) -> None:
        done = all_durable([succeed(None), fail(OSError("disk full"))])
        failure = self.failureResultOf(done, OSError)
        self.assertIsInstance(failure, Failure)
        self.assertEqual(str(failure.value), "disk full")
