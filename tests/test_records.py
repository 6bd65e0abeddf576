"""Tests for erq.journal.records: the record framing and the damage it
finds, alone, on bytes."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.journal.records import (
    FILE_HEADER,
    FLUSH,
    MAGIC,
    OPEN,
    REMOVE,
    _abort_record,
    _Damage,
    _header_problem,
    _record,
    _records,
    _ref_record,
    _segment_name,
)


def kinds(buf: bytes) -> list[int]:
    return [kind for _, kind, _, _ in _records(buf)]


class FramingTests(SynchronousTestCase):
    def test_records_come_back_in_order(self) -> None:
        buf = FILE_HEADER + _ref_record(OPEN, 7) + _abort_record(7, 1)
        buf += _record(bytes([FLUSH]))
        self.assertEqual(kinds(buf), [OPEN, 4, FLUSH])

    def test_zeros_end_the_records(self) -> None:
        buf = FILE_HEADER + _ref_record(OPEN, 7) + bytes(100)
        self.assertEqual(kinds(buf), [OPEN])

    def test_a_torn_record(self) -> None:
        whole = FILE_HEADER + _ref_record(OPEN, 7)
        torn = whole + _ref_record(OPEN, 8)[:-3]
        with self.assertRaises(_Damage) as caught:
            kinds(torn)
        self.assertEqual(caught.exception.offset, len(whole))
        self.assertEqual(caught.exception.reason, "torn record")

    def test_a_corrupt_record(self) -> None:
        record = bytearray(_ref_record(OPEN, 7))
        record[-1] ^= 0xFF
        with self.assertRaises(_Damage) as caught:
            kinds(FILE_HEADER + bytes(record))
        self.assertIn("checksum", caught.exception.reason)

    def test_a_record_of_the_wrong_size(self) -> None:
        # A REMOVE payload without its size field.
        with self.assertRaises(_Damage) as caught:
            kinds(FILE_HEADER + _ref_record(REMOVE, 7))
        self.assertIn("corrupt record (kind 2", caught.exception.reason)


class HeaderTests(SynchronousTestCase):
    def test_header_problems(self) -> None:
        self.assertIsNone(_header_problem(FILE_HEADER + b"rest"))
        self.assertEqual(_header_problem(FILE_HEADER[:3]), "torn header")
        self.assertEqual(
            _header_problem(MAGIC + b"\x09\x00\x00\x00"),
            "unsupported format version 9",
        )
        self.assertEqual(_header_problem(b"GIF89a.."), "not an erq segment")

    def test_segment_names_sort_by_number(self) -> None:
        names = [_segment_name(n) for n in (2, 10, 100_000_000)]
        self.assertEqual(names, sorted(names))
        self.assertEqual(names[0], "00000002.seg")
