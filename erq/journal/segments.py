"""A queue's segments as the reactor sees them: what is live in each, and
which one holds an item, without an entry per item.

The ids ADDed in a segment rise, so a segment's id range says which items
were born there; only the items whose latest copy is elsewhere (forwarded,
or added out of id order) get an entry of their own.  ``Journal`` and
replay keep the same index.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from erq.journal.files import _SegmentFile
    from erq.journal.summaries import SummaryBuilder


class _Segment:
    """A segment as the reactor sees it: what is live in it."""

    __slots__ = (
        "number",
        "file",
        "size",
        "first_id",
        "last_id",
        "live",
        "pinned",
        "summary",
    )

    def __init__(self, number: int, file: _SegmentFile, size: int = 0) -> None:
        self.number = number
        self.file = file
        self.size = size
        # The ids ADDed here (not forwarded) increase, so one range says
        # which items were born here.
        self.first_id = -1
        self.last_id = -1
        # Items born or forwarded here and not gone yet ...
        self.live = 0
        # ... of which open or aborted (these get forwarded).
        self.pinned = 0
        # Its summary, built as its records are appended (for a segment
        # started by this journal; one replay found is read back instead
        # when it closes).
        self.summary: SummaryBuilder | None = None


class _Index:
    """Which segment holds an item, without an entry per item."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []
        self._ranged: list[_Segment] = []
        # Items whose latest copy is a FORWARD record (or an ADD out of id
        # order): few, and only these get an entry.
        self._forwarded: dict[int, _Segment] = {}

    def _first_add(self, segment: _Segment, item_id: int) -> None:
        segment.first_id = item_id
        if segment.summary is not None:
            segment.summary.boundary(item_id)
        self._firsts.append(item_id)
        self._ranged.append(segment)

    def _locate(self, item_id: int) -> _Segment | None:
        if self._forwarded:
            segment = self._forwarded.get(item_id)
            if segment is not None:
                return segment
        ranged = self._ranged
        if ranged:
            segment = ranged[0]
            if segment.first_id <= item_id <= segment.last_id:
                return segment
        i = bisect_right(self._firsts, item_id) - 1
        if i < 0:
            return None
        segment = ranged[i]
        return segment if item_id <= segment.last_id else None
