"""Tests for erq.unborn: the gets that wait on a queue not made yet."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.config import Config, QueueSettings
from erq.queue import Item, Queue
from erq.unborn import UnbornQueues
from erq.waiters import Deadlines


class UnbornQueuesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock)
        config = Config(queues={"slow": QueueSettings(max_items=3)})
        self.settings_for = config.settings_for
        self.unborn = UnbornQueues(self.clock, self.deadlines, self.settings_for)
        self.got: list[Item | None] = []

    def wait(self, queue: Queue, timeout: float = 5) -> None:
        self.assertIsNotNone(queue.get_for(self.got.append, timeout, False, False))

    def queue(self, name: str) -> Queue:
        return Queue(
            name, self.clock, self.settings_for(name), deadlines=self.deadlines
        )

    def test_every_wait_on_a_name_shares_one_queue(self) -> None:
        first = self.unborn.waiting_on("slow")
        self.assertIs(self.unborn.waiting_on("slow"), first)
        self.assertEqual(first.settings.max_items, 3)
        self.assertEqual(self.unborn.queues, {"slow": first})

    def test_forgotten_when_its_last_waiter_leaves(self) -> None:
        queue = self.unborn.waiting_on("q")
        self.wait(queue, 1)
        self.wait(queue, 2)
        self.clock.advance(1)
        self.assertIn("q", self.unborn.queues)
        self.clock.advance(1)
        self.assertEqual(self.unborn.queues, {})
        self.assertEqual(self.got, [None, None])

    def test_the_queue_born_takes_its_waiters(self) -> None:
        self.wait(self.unborn.waiting_on("q"))
        born = self.queue("q")
        self.unborn.born(born)
        self.assertEqual(self.unborn.queues, {})
        self.assertEqual(born.waiters, 1)
        born.put(b"first")
        self.assertEqual([item.data for item in self.got if item], [b"first"])

    def test_a_birth_nobody_waited_for(self) -> None:
        self.unborn.born(self.queue("q"))
        self.assertEqual(self.unborn.queues, {})

    def test_the_waiters_of_a_deleted_queue_wait_on(self) -> None:
        deleted = self.queue("q")
        self.wait(deleted)
        self.unborn.left_behind(deleted)
        unborn = self.unborn.waiting_on("q")
        self.assertEqual(unborn.waiters, 1)
        again = self.queue("q")
        self.unborn.born(again)
        again.put(b"again")
        self.assertEqual([item.data for item in self.got if item], [b"again"])
