"""Tests for erq.journal.summaries: what a closed segment's summary says,
and the summaries that must not be believed."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from erq.items import Item
from erq.journal import FILE_HEADER, HEADER_SIZE
from erq.journal.records import (
    _ABORT,
    _ADD,
    _FLUSH_RECORD,
    _FORWARD,
    _REMOVE,
    ABORT,
    ADD,
    FORWARD,
    OPEN,
    OPENED,
    QUEUED,
    REMOVE,
    _record,
    _ref_record,
)
from erq.journal.summaries import (
    ABORTED,
    INDEX_EVERY,
    RESET,
    SummaryBuilder,
    decode,
    read_summary,
    summarize,
    summary_bytes,
)


def add(item_id: int, size: int = 5) -> bytes:
    data = bytes([item_id % 256]) * size
    return _record(_ADD.pack(ADD, item_id, 0, float("nan"), 1.5) + data)


def remove(item_id: int, size: int = 5) -> bytes:
    return _record(_REMOVE.pack(REMOVE, item_id, size))


def forward(item_id: int, state: int, size: int = 5, seq: int = 0) -> bytes:
    head = _FORWARD.pack(FORWARD, item_id, state, seq, 0, float("nan"), 1.5)
    return _record(head + b"f" * size)


def abort(item_id: int, seq: int) -> bytes:
    return _record(_ABORT.pack(ABORT, item_id, seq))


def segment(*records: bytes) -> bytes:
    return FILE_HEADER + b"".join(records)


class SummarizeTests(SynchronousTestCase):
    def test_adds_removes_and_opens(self) -> None:
        buf = segment(
            add(10, 3),
            add(11, 4),
            add(12, 5),
            add(14, 6),
            remove(7, 100),
            remove(8, 1),
            remove(10, 3),
            remove(11, 4),
            _ref_record(OPEN, 12),
            _ref_record(OPEN, 14),
            remove(14, 6),
        )
        summary = summarize(buf, [1, 10])
        assert summary is not None
        self.assertFalse(summary.complex)
        self.assertEqual(
            (summary.adds, summary.add_bytes, summary.first_id, summary.last_id),
            (4, 18, 10, 14),
        )
        self.assertEqual(summary.records, 11)
        self.assertEqual((summary.file_size, summary.records_end), (len(buf),) * 2)
        # 7-8 and 10-11 are two ranges: 9 was not removed, and 10 starts
        # another segment; 14 was removed alone.
        self.assertEqual(summary.removes, [(7, 8, 101), (10, 11, 7), (14, 14, 6)])
        # 14 was opened and removed: only 12 is still open.
        self.assertEqual(summary.states, [(12, 0, RESET)])
        self.assertEqual(summary.index, [(10, HEADER_SIZE)])

    def test_a_range_stops_at_the_next_segment(self) -> None:
        buf = segment(add(30), remove(18), remove(19), remove(20), remove(21))
        summary = summarize(buf, [1, 20, 30])
        assert summary is not None
        self.assertEqual(summary.removes, [(18, 19, 10), (20, 21, 10)])

    def test_index_every_so_many_adds(self) -> None:
        records = [add(i, 1) for i in range(1, 2 * INDEX_EVERY + 2)]
        buf = segment(*records)
        summary = summarize(buf, [1])
        assert summary is not None
        size = len(records[0])
        self.assertEqual(
            summary.index,
            [
                (1, HEADER_SIZE),
                (INDEX_EVERY + 1, HEADER_SIZE + INDEX_EVERY * size),
                (2 * INDEX_EVERY + 1, HEADER_SIZE + 2 * INDEX_EVERY * size),
            ],
        )

    def test_zeros_end_the_records(self) -> None:
        buf = segment(add(1), add(2)) + bytes(100)
        summary = summarize(buf, [1])
        assert summary is not None
        self.assertEqual(
            (summary.file_size, summary.records_end, summary.adds),
            (len(buf), len(buf) - 100, 2),
        )

    def test_open_items_copied_forward(self) -> None:
        first = forward(3, OPENED)
        buf = segment(add(10), first, forward(4, OPENED), forward(3, OPENED))
        buf += remove(4)
        summary = summarize(buf, [1, 10])
        assert summary is not None
        self.assertFalse(summary.complex)
        # The latest copy of 3; 4 was removed after its copy.
        second = HEADER_SIZE + len(add(10)) + 2 * len(first)
        self.assertEqual(summary.forwards, [(3, second)])
        self.assertEqual(summary.max_id, 10)
        queued = summarize(segment(add(10), forward(3, QUEUED, seq=7)), [1])
        assert queued is not None
        self.assertFalse(queued.complex)
        self.assertEqual(queued.states, [(3, 7, RESET | ABORTED)])
        self.assertEqual(queued.max_seq, 7)

    def test_aborts(self) -> None:
        """An abort after an open here decides the item's state; one alone
        only changes an item that is open or aborted before."""
        buf = segment(
            add(10),
            add(11),
            _ref_record(OPEN, 10),
            abort(10, 4),
            abort(5, 6),
            _ref_record(OPEN, 11),
            abort(11, 7),
            _ref_record(OPEN, 11),
        )
        summary = summarize(buf, [1])
        assert summary is not None
        self.assertFalse(summary.complex)
        self.assertEqual(
            summary.states,
            [(10, 4, RESET | ABORTED), (5, 6, ABORTED), (11, 0, RESET)],
        )
        self.assertEqual((summary.max_seq, summary.max_id), (7, 11))

    def test_complex(self) -> None:
        for buf in (
            segment(add(1), _FLUSH_RECORD),
            segment(add(2), add(1)),
        ):
            summary = summarize(buf, [1])
            assert summary is not None
            self.assertTrue(summary.complex, buf)

    def test_not_a_good_segment(self) -> None:
        good = segment(add(1), add(2))
        self.assertIsNone(summarize(b"XXXX" + good[4:], [1]))
        self.assertIsNone(summarize(good[:-3], [1]))
        flipped = bytearray(good)
        flipped[-1] ^= 1
        self.assertIsNone(summarize(bytes(flipped), [1]))


class SummaryFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.seg = os.path.join(self.dir, "00000001.seg")
        self.sum = os.path.join(self.dir, "00000001.sum")
        self.buf = segment(*[add(i, 50) for i in range(1, 200)], remove(1, 50))
        with open(self.seg, "wb") as f:
            f.write(self.buf)
        data = summary_bytes(self.buf, [1])
        assert data is not None
        self.data = data
        with open(self.sum, "wb") as f:
            f.write(data)

    def test_round_trip(self) -> None:
        summary = read_summary(self.seg, self.sum)
        self.assertEqual(summary, summarize(self.buf, [1]))

    def test_torn_or_damaged_summary(self) -> None:
        for data in (
            self.data[:-1],
            self.data[:10],
            b"",
            self.data[:20] + bytes([self.data[20] ^ 1]) + self.data[21:],
        ):
            self.assertIsNone(decode(data))
            with open(self.sum, "wb") as f:
                f.write(data)
            self.assertIsNone(read_summary(self.seg, self.sum))

    def test_a_segment_that_changed(self) -> None:
        # Longer, shorter, or another segment of the same size.
        for buf in (
            self.buf + add(300),
            self.buf[: -len(remove(1))],
            self.buf[:-1] + bytes([self.buf[-1] ^ 1]),
            self.buf[: HEADER_SIZE + 5] + b"\x00" + self.buf[HEADER_SIZE + 6 :],
        ):
            with open(self.seg, "wb") as f:
                f.write(buf)
            self.assertIsNone(read_summary(self.seg, self.sum))

    def test_missing(self) -> None:
        os.unlink(self.sum)
        self.assertIsNone(read_summary(self.seg, self.sum))
        os.unlink(self.seg)
        with open(self.sum, "wb") as f:
            f.write(self.data)
        self.assertIsNone(read_summary(self.seg, self.sum))


class BuilderTests(SynchronousTestCase):
    def test_removing_a_batch_is_removing_each(self) -> None:
        """A batch that goes on the range being built, and batches that do
        not (a gap, out of order, across a segment's first id, an item
        opened before), say what removing each item one by one says."""
        batches = [
            [1, 2, 3],
            [4, 5, 6],
            [8, 7, 9],
            [10, 11, 12, 13],
            [14, 30, 15],
            [16],
            [18, 19],
        ]
        one = SummaryBuilder([1, 12])
        each = SummaryBuilder([1, 12])
        for builder in (one, each):
            builder.add(12, 3)
            builder.open(15)
        for batch in batches:
            items = [Item(i, b"x" * i, 0, None, 1.0) for i in batch]
            one.remove_items(items)
            for it in items:
                each.remove(it.id, len(it.data))
        self.assertEqual(one.summary(one.end), each.summary(each.end))
        summary = one.summary(one.end)
        self.assertEqual(
            summary.removes,
            [(1, 6, 21), (8, 8, 8), (7, 7, 7), (9, 11, 30), (12, 14, 39)]
            + [(30, 30, 30), (15, 16, 31), (18, 19, 37)],
        )
        # 15 was removed after it was opened.
        self.assertEqual(summary.states, [])
