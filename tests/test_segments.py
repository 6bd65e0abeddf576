"""Tests for erq.journal.segments: finding an item's segment without an
entry per item."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.journal.files import _SegmentFile
from erq.journal.segments import _Index, _Segment


def segment(number: int) -> _Segment:
    return _Segment(number, _SegmentFile(f"{number}.seg", 0, False))


class IndexTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.index = _Index()
        self.first, self.second = segment(1), segment(2)
        for seg, ids in ((self.first, range(1, 11)), (self.second, range(11, 21))):
            for item_id in ids:
                if seg.first_id < 0:
                    self.index._first_add(seg, item_id)
                seg.last_id = item_id

    def test_items_are_found_by_their_range(self) -> None:
        self.assertIs(self.index._locate(1), self.first)
        self.assertIs(self.index._locate(10), self.first)
        self.assertIs(self.index._locate(11), self.second)
        self.assertIs(self.index._locate(20), self.second)
        self.assertIsNone(self.index._locate(21))
        self.assertIsNone(self.index._locate(0))

    def test_a_forwarded_item_is_found_where_it_went(self) -> None:
        self.index._forwarded[3] = self.second
        self.assertIs(self.index._locate(3), self.second)
