"""Tests for erq.packed: a queue's items loose at both ends and packed in
chunks between, against a deque of the same items."""

from __future__ import annotations

import os
import tracemalloc
from collections import deque

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.trial.unittest import SynchronousTestCase

from erq.items import Item
from erq.packed import PackedItems

Fields = tuple[int, bytes, int, float | None, float]


def fields(item: Item) -> Fields:
    return (item.id, item.data, item.flags, item.expiry, item.added)


def item(id: int, size: int = 8, flags: int = 0, expiry: float | None = None) -> Item:
    return Item(id, bytes([id % 251]) * size, flags, expiry, 1000.0 + id / 8)


class PackedItemsTests(SynchronousTestCase):
    def small(self) -> PackedItems:
        return PackedItems(chunk_bytes=64, nursery=4)

    def test_a_queue_that_keeps_up_packs_nothing(self) -> None:
        packed = self.small()
        head = packed.head
        packed.extend(item(i) for i in range(6))
        for i in range(6, 100):
            packed.append(item(i))
            self.assertEqual(packed.popleft().id, i - 6)
        # Fewer than twice the nursery: one deque of items as they were put.
        self.assertEqual((packed.chunks, len(packed)), (0, 6))
        packed.append(item(100))
        self.assertEqual(packed.chunks, 0)
        self.assertIs(packed.head, head)
        self.assertIs(packed.tail, head)

    def test_a_deep_queue_packs_all_but_its_two_ends(self) -> None:
        packed = self.small()
        items = [item(i) for i in range(8)]
        for it in items:
            packed.append(it)
        # Twice the nursery: all but the first four packed.
        self.assertEqual((len(packed.head), packed.packed, len(packed.tail)), (4, 4, 0))
        self.assertEqual([i.id for i in packed.head], [0, 1, 2, 3])
        self.assertIs(packed.head[0], items[0])
        for i in range(8, 11):
            packed.append(item(i))
        self.assertEqual((packed.packed, len(packed.tail)), (4, 3))
        packed.append(item(11))
        # A full nursery is packed whole.
        self.assertEqual((packed.packed, len(packed.tail)), (8, 0))
        self.assertEqual([packed.popleft().id for _ in range(12)], list(range(12)))
        # Drained: one deque again.
        self.assertIs(packed.tail, packed.head)
        self.assertEqual((packed.chunks, len(packed)), (0, 0))

    def test_a_chunk_is_unpacked_whole_when_the_head_runs_dry(self) -> None:
        packed = self.small()
        packed.extend(item(i) for i in range(12))
        for _ in range(4):
            packed.popleft()
        self.assertEqual((len(packed.head), packed.packed), (4, 4))

    def test_take_in_empties_the_list_it_packs(self) -> None:
        packed = self.small()
        packed.append(item(0))
        items = [item(i) for i in range(1, 30)]
        packed.take_in(items)
        self.assertEqual(items, [])
        self.assertGreater(packed.chunks, 1)
        self.assertEqual([i.id for i in packed], list(range(30)))

    def test_first_in_first_out_through_chunks(self) -> None:
        packed = self.small()
        items = [
            item(i, flags=i % 3, expiry=None if i % 2 else 2000.0 + i)
            for i in range(40)
        ]
        for it in items:
            packed.append(it)
        self.assertGreater(packed.chunks, 1)
        self.assertEqual(len(packed), 40)
        self.assertEqual([fields(i) for i in packed], [fields(i) for i in items])
        out = [packed.popleft() for _ in range(40)]
        self.assertEqual([fields(i) for i in out], [fields(i) for i in items])
        self.assertFalse(packed)
        self.assertEqual((len(packed), packed.chunks), (0, 0))

    def test_unpacked_items_are_items_with_bytes(self) -> None:
        packed = self.small()
        packed.extend(item(i) for i in range(10))
        got = [packed.popleft() for _ in range(10)]
        self.assertEqual({type(i) for i in got}, {Item})
        self.assertEqual({type(i.data) for i in got}, {bytes})

    def test_the_head_is_never_empty_while_items_are_held(self) -> None:
        packed = self.small()
        packed.extend(item(i) for i in range(20))
        for i in range(20):
            self.assertEqual(packed.head[0].id, i)
            packed.popleft()
        self.assertEqual(len(packed.head), 0)

    def test_a_large_item_has_a_chunk_of_its_own_uncopied(self) -> None:
        packed = self.small()
        big = item(5, size=200)
        packed.extend([item(1), item(2), big, item(3), item(4)])
        self.assertEqual([i.id for i in packed], [1, 2, 5, 3, 4])
        while packed.head[0].id != 5:
            packed.popleft()
        self.assertIs(packed.popleft().data, big.data)

    def test_push_back_goes_first(self) -> None:
        packed = self.small()
        packed.extend(item(i) for i in range(1, 10))
        first = packed.popleft()
        packed.appendleft(item(0))
        packed.appendleft(first)
        self.assertEqual([i.id for i in packed], [1, 0, *range(2, 10)])

    def test_last(self) -> None:
        packed = self.small()
        packed.append(item(1))
        self.assertEqual(packed[-1].id, 1)
        packed.extend(item(i) for i in range(2, 9))
        self.assertEqual((packed[0].id, packed[-1].id, packed[3].id), (1, 8, 4))

    def test_remove_expired_repacks_only_what_expired(self) -> None:
        packed = self.small()
        packed.extend(
            item(i, expiry=5.0 if i in (3, 10, 11) else None) for i in range(16)
        )
        self.assertEqual(packed.remove_expired(4.0, None), [])
        gone = packed.remove_expired(5.0, 2)
        self.assertEqual([i.id for i in gone], [3, 10])
        self.assertEqual(
            [i.id for i in packed], [i for i in range(16) if i not in (3, 10)]
        )
        self.assertEqual([i.id for i in packed.remove_expired(6.0, None)], [11])
        self.assertEqual(len(packed), 13)

    def test_data_bytes(self) -> None:
        packed = self.small()
        packed.extend(item(i, size=i) for i in range(1, 21))
        packed.popleft()
        self.assertEqual(packed.data_bytes(), sum(range(2, 21)))

    def test_packed_items_cost_little(self) -> None:
        """Well under 64 bytes an item beyond the data, in the common case:
        no flags, no expiry."""
        count = 20_000
        items = [Item(i, b"x" * 64, 0, None, 1.7e9 + i) for i in range(count)]
        tracemalloc.start()
        try:
            packed = PackedItems()
            before = tracemalloc.get_traced_memory()[0]
            packed.extend(items)
            del items
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        per_item = (after - before) / count - 64
        self.assertLess(per_item, 40)
        self.assertEqual(len(packed), count)


class PackedMachine(RuleBasedStateMachine):
    """Any sequence of what a queue does, on tiny chunks so that items cross
    every boundary: the packed items are always the model's."""

    def __init__(self) -> None:
        super().__init__()
        self.packed = PackedItems(chunk_bytes=40, nursery=3)
        self.model: deque[Item] = deque()
        self.next_id = 1

    def new(self, size: int, flags: int, expiry: int | None) -> Item:
        self.next_id += 1
        return Item(
            self.next_id,
            bytes([self.next_id % 256]) * size,
            flags,
            None if expiry is None else float(expiry),
            self.next_id / 4,
        )

    sizes = st.sampled_from([0, 1, 7, 20, 39, 40, 41, 90])
    flag_values = st.sampled_from([0, 0, 1, 2**32 - 1])
    expiries = st.none() | st.integers(0, 10)

    @rule(size=sizes, flags=flag_values, expiry=expiries)
    def append(self, size: int, flags: int, expiry: int | None) -> None:
        it = self.new(size, flags, expiry)
        self.packed.append(it)
        self.model.append(it)

    @rule(
        specs=st.lists(st.tuples(sizes, flag_values, expiries), max_size=12),
    )
    def extend(self, specs: list[tuple[int, int, int | None]]) -> None:
        items = [self.new(*spec) for spec in specs]
        self.packed.extend(items)
        self.model.extend(items)

    @precondition(lambda self: self.model)
    @rule(count=st.integers(1, 8))
    def popleft(self, count: int) -> None:
        for _ in range(min(count, len(self.model))):
            assert fields(self.packed.popleft()) == fields(self.model.popleft())

    @precondition(lambda self: self.model)
    @rule()
    def pop_and_push_back(self) -> None:
        got = self.packed.popleft()
        self.model.popleft()
        self.packed.appendleft(got)
        self.model.appendleft(got)

    @rule(now=st.integers(0, 11), limit=st.none() | st.integers(0, 4))
    def remove_expired(self, now: int, limit: int | None) -> None:
        gone = self.packed.remove_expired(float(now), limit)
        expected = [i for i in self.model if i.expiry is not None and i.expiry <= now][
            :limit
        ]
        assert [fields(i) for i in gone] == [fields(i) for i in expected]
        ids = {i.id for i in expected}
        self.model = deque(i for i in self.model if i.id not in ids)

    @rule()
    def clear(self) -> None:
        self.packed.clear()
        self.model.clear()

    @invariant()
    def same_items(self) -> None:
        assert len(self.packed) == len(self.model)
        assert bool(self.packed) == bool(self.model)
        assert [fields(i) for i in self.packed] == [fields(i) for i in self.model]
        if self.model:
            assert fields(self.packed.head[0]) == fields(self.model[0])
            # Nothing packed but between the loose ends.
            assert len(self.packed.head) <= 2 * 3
            assert self.packed.tail is self.packed.head or len(self.packed.tail) < 3
            assert fields(self.packed[-1]) == fields(self.model[-1])
        assert self.packed.data_bytes() == sum(len(i.data) for i in self.model)


MACHINE_SETTINGS = settings(
    max_examples=int(os.environ.get("ERQ_PROPERTY_EXAMPLES", "200")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class PackedMachineTests(SynchronousTestCase):
    def test_packed_machine(self) -> None:
        run_state_machine_as_test(PackedMachine, settings=MACHINE_SETTINGS)
