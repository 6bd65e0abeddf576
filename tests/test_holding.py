"""Tests for erq.holding: the head of a queue in memory, the rest left in
the journal and read back."""

from __future__ import annotations

import tracemalloc

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from erq.holding import READ_BACK_LEAST, READ_BACK_MOST, Holding
from erq.items import Item, QueueJournal
from erq.memory import MemoryUse
from erq.packed import NURSERY
from tests.support import FakeJournal


def item(id: int, size: int = 10) -> Item:
    return Item(id, b"x" * size, 0, None, 0.0)


class HoldingTests(SynchronousTestCase):
    memory_limit = 25

    def setUp(self) -> None:
        self.fake = FakeJournal()
        self.journal: QueueJournal | None = self.fake
        self.events: list[str] = []
        self.refused: list[int] = []
        self.holding = Holding(
            "q",
            lambda: self.journal,
            lambda: self.memory_limit,
            lambda: self.events.append("items"),
            lambda: self.events.append("read back"),
            self.refused.append,
        )

    def put(self, new: Item) -> bool:
        """Reserve ``new`` and place it, as a put that need not wait does."""
        held = self.holding.reserve(new)
        self.fake.add(new, held)
        if held:
            self.holding.items.append(new)
        return held

    def test_beyond_the_memory_limit_items_stay_behind(self) -> None:
        self.assertEqual([self.put(item(i)) for i in (1, 2, 3)], [True, True, False])
        self.assertEqual((self.holding.mem_count, self.holding.mem_bytes), (2, 20))
        self.assertEqual(
            (self.holding.behind_items, self.holding.behind_bytes), (1, 10)
        )
        self.assertEqual(self.holding.count, 3)
        # Once one is behind, every later one is, to keep the head unbroken.
        self.holding.pop()
        self.assertFalse(self.put(item(4, 1)))

    def test_items_read_back_are_packed_as_put_ones_are(self) -> None:
        count = 3 * NURSERY
        self.memory_limit = 2 * count
        # Memory full: the next ones stay behind.
        self.put(item(0, 2 * count))
        self.assertFalse(any([self.put(item(i, 1)) for i in range(1, count + 1)]))
        self.holding.pop()
        self.fake.read_back(count)
        self.assertGreater(self.holding.items.packed, 0)
        self.assertEqual(
            (self.holding.mem_count, self.holding.mem_bytes), (count, count)
        )
        self.assertEqual(
            [self.holding.pop().id for _ in range(count)], list(range(1, count + 1))
        )
        self.assertEqual(self.holding.mem_bytes, 0)

    def test_items_read_back_are_not_held_twice_while_packed(self) -> None:
        count, size = 4 * NURSERY, 256
        self.memory_limit = 2 * count * size
        self.put(item(0, 2 * count * size))
        for i in range(1, count + 1):
            self.assertFalse(self.put(Item(i, bytes(size), 0, None, 0.0)))
        self.holding.pop()
        _, reading = self.fake.reads.pop(0)
        tracemalloc.start()
        try:
            read = [Item(i, bytes(size), 0, None, 0.0) for i in range(1, count + 1)]
            made = tracemalloc.get_traced_memory()[0]
            reading.callback(read)
            peak = tracemalloc.get_traced_memory()[1] - made
        finally:
            tracemalloc.stop()
        # Packing takes a nursery's worth at a time from the Items read,
        # which go as it does: never all of them as Items and packed.
        self.assertLess(peak, count * size / 2)
        self.assertEqual(len(read), 0)
        self.assertEqual(self.holding.mem_count, count)
        self.assertEqual([self.holding.pop().id for _ in range(count)][-1], count)

    def test_the_first_item_is_held_however_large(self) -> None:
        self.assertTrue(self.put(item(1, 1000)))

    def test_without_a_journal_everything_is_held(self) -> None:
        self.journal = None
        self.assertTrue(all(self.put(item(i)) for i in range(10)))

    def test_read_back_below_half_the_limit(self) -> None:
        self.assertEqual(
            [self.put(item(1, 5)), self.put(item(2, 15)), self.put(item(3))],
            [True, True, False],
        )
        # 15 bytes left: more than half the limit.
        self.holding.pop()
        self.assertEqual(self.fake.reads, [])
        self.holding.pop()
        self.assertEqual([wanted for wanted, _ in self.fake.reads], [12])
        self.assertTrue(self.holding.reading)
        # One read at a time.
        self.holding.read_back()
        self.assertEqual(len(self.fake.reads), 1)
        self.fake.read_back(1)
        self.assertFalse(self.holding.reading)
        self.assertEqual([i.id for i in self.holding.items], [3])
        self.assertEqual(self.holding.behind_items, 0)
        self.assertEqual(self.holding.mem_bytes, 10)
        self.assertEqual(self.events, ["read back"])

    def test_read_back_a_step_at_a_time(self) -> None:
        """However large the limit, one read asks for at most
        READ_BACK_MOST bytes: the next comes as the queue drains."""
        self.memory_limit = 64 * READ_BACK_MOST
        self.assertEqual(
            [self.put(item(1, 1)), self.put(item(2, self.memory_limit))],
            [True, False],
        )
        self.holding.pop()
        self.assertEqual([wanted for wanted, _ in self.fake.reads], [READ_BACK_MOST])

    def test_an_empty_read_means_nothing_is_behind(self) -> None:
        for i in (1, 2, 3):
            self.put(item(i))
        self.fake.behind.clear()
        self.holding.read_back()
        self.fake.read_back(1)
        self.assertEqual((self.holding.behind_items, self.holding.behind_bytes), (0, 0))

    def test_unreadable_items_are_lost_to_this_run(self) -> None:
        for i in (1, 2, 3):
            self.put(item(i))
        self.holding.read_back()
        _, reading = self.fake.reads.pop()
        reading.errback(Failure(OSError("damaged")))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual((self.holding.behind_items, self.holding.count), (0, 2))
        self.assertFalse(self.holding.reading)
        self.assertEqual(self.events, ["items"])

    def test_nothing_is_placed_once_closed(self) -> None:
        for i in (1, 2, 3):
            self.put(item(i))
        self.holding.read_back()
        durable: Deferred[None] = Deferred()
        self.holding.arrive([item(4)], [False], durable)
        self.holding.close()
        self.fake.read_back(1)
        durable.callback(None)
        self.assertEqual([i.id for i in self.holding.items], [1, 2])
        self.assertEqual(self.events, [])

    def test_refused_arrivals_are_no_longer_counted(self) -> None:
        self.put(item(1))
        durable: Deferred[None] = Deferred()
        new = [item(2), item(3)]
        held = [self.holding.reserve(i) for i in new]
        self.assertEqual(held, [True, False])
        self.holding.arrive(new, held, durable)
        self.assertEqual((self.holding.count, self.holding.mem_count), (3, 2))
        durable.errback(Failure(OSError("disk full")))
        self.failureResultOf(durable, OSError)
        self.assertEqual(self.refused, [2])
        self.assertEqual((self.holding.count, self.holding.mem_bytes), (1, 10))
        self.assertEqual(self.holding.behind_bytes, 0)

    def test_remove_expired(self) -> None:
        for i, expiry in enumerate([5.0, None, 1.0, 2.0]):
            self.holding.items.append(Item(i, b"ab", 0, expiry, 0.0))
            self.holding.mem_bytes += 2
        expired = self.holding.remove_expired(3.0, limit=1)
        self.assertEqual([i.id for i in expired], [2])
        self.assertEqual([i.id for i in self.holding.items], [0, 1, 3])
        self.assertEqual(self.holding.mem_bytes, 6)

    def test_drop_expired_head(self) -> None:
        for i, expiry in enumerate([1.0, 2.0, None, 1.0]):
            self.holding.items.append(Item(i, b"ab", 0, expiry, 0.0))
        gone: list[int] = []
        self.assertEqual(
            self.holding.drop_expired_head(3.0, -1, lambda i: gone.append(i.id)), 2
        )
        self.assertEqual(gone, [0, 1])
        self.assertEqual([i.id for i in self.holding.items], [2, 3])


class ServerMemoryTests(SynchronousTestCase):
    """Two queues' holdings that share the server's count and cap."""

    memory_limit = 1000

    def setUp(self) -> None:
        self.memory = MemoryUse(cap=30)
        self.journaled = True
        self.fakes = {"a": FakeJournal(), "b": FakeJournal()}
        self.holdings = {name: self.holding(name) for name in self.fakes}

    def holding(self, name: str) -> Holding:
        def journal() -> QueueJournal | None:
            return self.fakes[name] if self.journaled else None

        return Holding(
            name,
            journal,
            lambda: self.memory_limit,
            lambda: None,
            lambda: None,
            lambda count: None,
            self.memory,
        )

    def put(self, name: str, new: Item) -> bool:
        holding = self.holdings[name]
        held = holding.reserve(new)
        self.fakes[name].add(new, held)
        if held:
            holding.items.append(new)
        return held

    def test_queues_together_keep_to_the_cap(self) -> None:
        self.assertEqual([self.put("a", item(i)) for i in (1, 2)], [True, True])
        self.assertEqual([self.put("b", item(i)) for i in (1, 2)], [True, False])
        # Each queue's own limit is far off; the server's is reached.
        self.assertEqual(self.memory.held, 30)
        self.assertEqual(self.holdings["b"].behind_items, 1)
        self.assertFalse(self.put("a", item(3, 1)))

    def test_a_queue_with_nothing_in_memory_holds_one_item(self) -> None:
        self.put("a", item(1, 30))
        self.assertTrue(self.put("b", item(1)))
        self.assertFalse(self.put("b", item(2)))
        self.assertEqual(self.memory.held, 40)

    def test_without_a_journal_items_are_held_and_counted(self) -> None:
        self.journaled = False
        self.assertTrue(all(self.put("a", item(i)) for i in range(5)))
        self.assertEqual(self.memory.held, 50)
        self.assertTrue(self.put("b", item(1)))

    def test_what_leaves_memory_leaves_the_count(self) -> None:
        a, b = self.holdings["a"], self.holdings["b"]
        for i in (1, 2):
            self.put("a", item(i))
        self.put("b", item(1))
        a.pop()
        self.assertEqual(self.memory.held, 20)
        a.push_back(item(1))
        self.assertEqual(self.memory.held, 30)
        a.clear()
        self.assertEqual(self.memory.held, 10)
        b.close()
        self.assertEqual(self.memory.held, 0)
        # The peak stays, for giving memory back.
        self.assertEqual(self.memory.peak, 30)

    def test_read_back_only_into_what_is_left(self) -> None:
        b = self.holdings["b"]
        self.put("a", item(1))
        for i in (1, 2, 3, 4):
            self.put("b", item(i))
        self.assertEqual(b.behind_items, 2)
        # b's head goes; 10 bytes of room now: it reads no more than that.
        b.pop()
        self.assertEqual([wanted for wanted, _ in self.fakes["b"].reads], [10])
        self.fakes["b"].read_back(1)
        self.assertEqual(self.memory.held, 30)
        # No room left: b reads nothing while it has items in memory.
        b.read_back()
        self.assertEqual(self.fakes["b"].reads, [])

    def test_with_nothing_in_memory_a_queue_reads_a_little(self) -> None:
        self.memory_limit = 64 * READ_BACK_LEAST
        b = self.holdings["b"]
        for i in (1, 2, 3):
            self.put("a", item(i))
        for i in (1, 2):
            self.put("b", item(i))
        b.pop()
        self.assertEqual(
            [wanted for wanted, _ in self.fakes["b"].reads], [READ_BACK_LEAST]
        )

    def test_a_raised_cap_lets_items_in_again(self) -> None:
        for i in (1, 2, 3, 4):
            self.put("a", item(i))
        self.assertEqual(self.holdings["a"].behind_items, 1)
        self.memory.set_cap(None)
        self.assertTrue(self.put("b", item(1)))
        self.assertTrue(self.put("b", item(2)))
