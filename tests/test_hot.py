"""Tests for erq.journal.hot: the records of a set and a get written in C
are the ones Python writes, and the journal's counts move the same."""

from __future__ import annotations

import os
import zlib
from collections import deque
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from erq.items import Item
from erq.journal import HEADER_SIZE, Journal, JournalWriter, hot
from erq.journal import journal as journal_module
from erq.journal.files import _Write
from erq.journal.records import _ADD, _NAN, _REC, ADD
from erq.journal.segments import _Segment
from erq.journal.summaries import SummaryBuilder
from erq.storage import LINGER
from tests.support import JournalTestCase, segment_files

#: A segment holds a few records: segments start, fill, die and are
#: compacted (forwarding what is open in them) many times in a program.
SEGMENT = HEADER_SIZE + 400

#: Each with a number: how many adds or gets in a row, which open read to
#: confirm or abort, and a flush one time in twelve.  Runs of adds and gets
#: come most often: they are what a remove in C needs.
OPS = ("add", "get", "add", "get", "open", "confirm", "abort", "flush", "tick")


def _state(journal: Journal) -> list[Any]:
    """What a removal changes, and what it may lead to, of a journal."""
    segments = []
    for segment in journal._segments:
        summary = segment.summary
        runs = (
            None
            if summary is None
            else (
                summary.run_first,
                summary.run_last,
                summary.run_bytes,
                summary.run_limit,
                list(summary.removes),
                summary.removed,
            )
        )
        segments.append(
            (
                segment.number,
                segment.size,
                segment.first_id,
                segment.last_id,
                segment.live,
                segment.pinned,
                runs,
            )
        )
    return [
        journal.size,
        segments,
        [s.number for s in journal._ranged],
        sorted(journal._forwarded),
        sorted(journal._open),
        sorted(journal._prefix),
    ]


class RemoveTests(JournalTestCase):
    def setUp(self) -> None:
        super().setUp()
        if hot.remove is None:
            raise SkipTest("the erq.journal._engine extension is not built here")
        from erq.journal import _engine

        self.engine = _engine
        self.calls = 0
        self.taken = 0
        in_c = hot.remove

        def counted(*args: Any) -> bool:
            self.calls += 1
            done = in_c(*args)
            self.taken += done
            return done

        self.counted = counted
        self.patch(journal_module, "_remove_in_c", counted)

    def writer(self) -> JournalWriter:
        """A writer that gathers records for a while, as the server's does:
        a remove then mostly finds the write it appends to."""
        writer = self.fake_writer()
        writer.linger = LINGER
        return writer

    def run_program(
        self, program: list[tuple[str, int]], first_id: int, in_c: bool
    ) -> tuple[list[list[Any]], dict[str, bytes]]:
        """Runs ``program`` on a new journal; its state after each step,
        and its files' bytes once it is closed."""
        self.patch(journal_module, "_remove_in_c", self.counted if in_c else None)
        self.patch(journal_module, "_add_record_in_c", hot.add_record if in_c else None)
        self.calls = self.taken = 0
        directory = os.path.abspath(self.mktemp())
        journal = Journal(directory, self.writer(), sync="never", segment_size=SEGMENT)
        head: deque[Item] = deque()
        opened: list[Item] = []
        next_id = first_id
        states = []
        for op, n in program:
            for _ in range(n if op in ("add", "get") else 1):
                if op == "add":
                    data = bytes([next_id % 251]) * (next_id * 7 % 40)
                    journal.add(Item(next_id, data, 0, None, 1.5))
                    head.append(Item(next_id, data, 0, None, 1.5))
                    next_id += 1
                elif op == "get" and head:
                    journal.remove(head.popleft())
                elif op == "open" and head:
                    it = head.popleft()
                    journal.open(it)
                    opened.append(it)
                elif op == "confirm" and opened:
                    journal.remove(opened.pop(n % len(opened)))
                elif op == "abort" and opened:
                    it = opened.pop(n % len(opened))
                    journal.abort(it)
                    head.appendleft(it)
                elif op == "flush" and n == 1:
                    # Rare: a flush empties the queue.
                    journal.flush()
                    head.clear()
                    opened.clear()
                elif op == "tick":
                    # What is gathered is written.
                    self.clock.advance(0.01)
                states.append(_state(journal))
        closed = journal.close()
        self.clock.advance(1)
        self.successResultOf(closed)
        files = {}
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            with open(os.path.join(directory, name), "rb") as f:
                files[name] = f.read()
        return states, files

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.lists(
            st.tuples(st.sampled_from(OPS), st.integers(min_value=1, max_value=12)),
            max_size=60,
        ),
        st.sampled_from([1, 1000, 2**31 + 5, 2**62]),
    )
    def test_the_same_as_in_python(
        self, program: list[tuple[str, int]], first_id: int
    ) -> None:
        """Whatever the journal has been through (segments rotated and
        compacted, reads opened, aborted and confirmed, flushes), adds and
        removes done in C leave the journal as the same in Python do, after
        every step, and its files hold the same bytes."""
        python_states, python_files = self.run_program(program, first_id, False)
        self.assertEqual(self.taken, 0)
        c_states, c_files = self.run_program(program, first_id, True)
        event(f"removes done in C: {min(self.taken, 5)}{'+' * (self.taken > 5)}")
        self.assertEqual(c_states, python_states)
        self.assertEqual(c_files, python_files)

    def test_a_get_in_order_is_done_in_c(self) -> None:
        """Plain gets in order, across segments, are removed in C, but for
        those that start a segment or empty the oldest one (compacted by
        Python); what is left is what replay finds."""
        directory = self.dir
        journal = Journal(directory, self.writer(), sync="never", segment_size=SEGMENT)
        items = [Item(i, b"x" * 20, 0, None, 1.5) for i in range(1, 41)]
        for it in items:
            journal.add(it)
        self.clock.advance(1)
        segments = len(segment_files(directory))
        self.assertGreater(segments, 3)
        for it in items[:30]:
            journal.remove(it)
        self.assertEqual(self.calls, 30)
        # About half: these segments hold four items each.
        self.assertGreaterEqual(self.taken, 10)
        self.clock.advance(1)
        self.assertLess(len(segment_files(directory)), segments)
        closed = journal.close()
        self.clock.advance(1)
        self.successResultOf(closed)
        _, replayed = self.replay(segment_size=SEGMENT)
        self.assertEqual([it.id for it in replayed.items], list(range(31, 41)))

    def test_a_slot_of_another_type_is_not_bound(self) -> None:
        """Slots given in another order (another class's where an Item's is
        due) are refused, and what was bound before stays bound."""
        slots = [vars(cls)[name] for cls, name in hot.SLOTS]
        slots[0], slots[2] = slots[2], slots[0]
        with self.assertRaises(TypeError):
            self.engine.bind(
                zlib.crc32, _NAN, Item, _Segment, _Write, SummaryBuilder, *slots
            )
        journal = Journal(os.path.abspath(self.mktemp()), self.writer(), sync="never")
        items = [Item(i, b"abc", 0, None, 1.5) for i in (1, 2, 3)]
        for it in items:
            journal.add(it)
        for it in items:
            journal.remove(it)
        self.assertEqual((self.calls, self.taken), (3, 2))

    def test_left_to_python_when_the_types_differ(self) -> None:
        """An object not of the types bound (a subclass of Item here) is
        left to Python: nothing done in C."""

        class Other(Item):
            __slots__ = ()

        journal = Journal(os.path.abspath(self.mktemp()), self.writer(), sync="never")
        journal.add(Other(1, b"abc", 0, None, 1.5))
        journal.add(Other(2, b"abc", 0, None, 1.5))
        before = journal.size
        journal.remove(Other(1, b"abc", 0, None, 1.5))
        self.assertEqual((self.calls, self.taken), (1, 0))
        self.assertEqual(journal.size, before + 21)


class AddRecordTests(SynchronousTestCase):
    def setUp(self) -> None:
        if hot.add_record is None:
            raise SkipTest("the erq.journal._engine extension is not built here")

    @given(
        st.integers(min_value=-(2**63), max_value=2**63 - 2),
        st.integers(min_value=0, max_value=2**32 - 1),
        st.none() | st.floats(allow_nan=True),
        st.floats(allow_nan=False),
        st.binary(max_size=3000),
    )
    def test_the_bytes_python_packs(
        self, item_id: int, flags: int, expiry: float | None, added: float, data: bytes
    ) -> None:
        """An ADD record's frame and head, made in C, are the bytes that
        Python packs, whatever the item's id, flags, expiry, time added and
        data."""
        assert hot.add_record is not None
        head = _ADD.pack(ADD, item_id, flags, _NAN if expiry is None else expiry, added)
        expected = _REC.pack(len(head) + len(data), zlib.crc32(data, zlib.crc32(head)))
        self.assertEqual(
            hot.add_record(item_id, flags, expiry, added, data), expected + head
        )

    def test_what_it_does_not_take_is_left_to_python(self) -> None:
        """Values that Python packs (or refuses) otherwise: ``None``."""
        add_record: Any = hot.add_record
        assert add_record is not None
        for args in [
            (2**63, 0, None, 1.5, b"x"),
            (1, 2**32, None, 1.5, b"x"),
            (1, -1, None, 1.5, b"x"),
            (1, 0, 5, 1.5, b"x"),
            (1, 0, None, 2, b"x"),
            (1, 0, None, 1.5, bytearray(b"x")),
            (True, 0, None, 1.5, b"x"),
        ]:
            self.assertIsNone(add_record(*args), args)
