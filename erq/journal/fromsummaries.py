"""Replay's fast path: the first segments of a queue taken from their
summaries (see ``erq.journal.summaries``) instead of being read.

A summary gives each segment's adds, removes and the state of its open
and aborted items; from them this works out which items live, reads only
the open ones and the head from disk, and leaves the replay to read the
rest behind as the queue drains.  Anything that does not add up raises
`StaleSummary`, and the replay reads every segment instead.
"""

from __future__ import annotations

import itertools
import os
import zlib
from bisect import bisect_right
from typing import TYPE_CHECKING

from erq.items import Item
from erq.journal import records as record_format
from erq.journal.files import _SegmentFile, summary_path
from erq.journal.records import (
    _ADD_SIZE,
    _FORWARD_SIZE,
    ADD,
    FORWARD,
    HEADER_SIZE,
    _expiry_out,
    _segment_name,
)
from erq.journal.segments import _Segment
from erq.journal.summaries import ABORTED, RESET, Summary, read_summary

if TYPE_CHECKING:
    from erq.journal.replay import _Replay

_ADD = record_format._ADD
_FORWARD = record_format._FORWARD
_REC = record_format._REC


class StaleSummary(Exception):
    """A summary taken at start disagrees with its segment: the replay
    starts again reading every segment."""


def take_summaries(replay: _Replay, numbers: list[int]) -> int:
    """Take the first segments from their summaries, as long as each
    has a good summary that is not complex (see
    ``erq.journal.summaries``; the last segment's matches only if the
    journal was closed and nothing appended since): the live items are
    their adds less their removes, whatever the order; only the head is
    read, up to ``max_memory``, the rest is counted behind.  Returns
    how many segments were taken."""
    taken = _good_summaries(replay, numbers)
    if not taken:
        return 0
    summarized = _Summarized(taken)
    if not summarized.count_removes():
        return 0
    opens = summarized.held_items()
    # Taken: from here on the state is the summaries'.
    summarized.take_over(replay, taken[-1][0] == numbers[-1])
    in_body = summarized.take_held(replay, opens)
    if summarized.live > 0:
        summarized.start_behind(replay, in_body)
    return len(summarized.segments)


def _good_summaries(
    replay: _Replay, numbers: list[int]
) -> list[tuple[int, str, Summary]]:
    """The first segments that have a good summary that is not complex,
    with their paths and summaries."""
    taken: list[tuple[int, str, Summary]] = []
    # The last segment too, when its summary was written as the journal
    # closed and nothing was appended since (it would not match).
    for number in numbers:
        if number not in replay.summary_numbers:
            break
        path = os.path.join(replay.directory, _segment_name(number))
        summary = read_summary(path, summary_path(path))
        if summary is None:
            # Torn, or left from before the segment changed: written
            # again once the server runs.
            replay.summary_numbers.discard(number)
            break
        if summary.complex:
            break
        taken.append((number, path, summary))
    return taken


class _Summarized:
    """The first segments of a queue as their summaries tell them: what
    lives in each, which ids went, and the items held at the head (open or
    aborted), worked out from the summaries before replay takes them."""

    def __init__(self, taken: list[tuple[int, str, Summary]]) -> None:
        self.taken = taken
        self.removes = sorted(r for _, _, summary in taken for r in summary.removes)
        self.removed_firsts = [first for first, _, _ in self.removes]
        self.segments: list[_Segment] = []
        self.firsts: list[int] = []
        for number, path, summary in taken:
            segment = _Segment(
                number,
                _SegmentFile(path, summary.records_end, False),
                summary.records_end,
            )
            segment.live = summary.adds
            if summary.adds:
                segment.first_id = summary.first_id
                segment.last_id = summary.last_id
                self.firsts.append(summary.first_id)
            self.segments.append(segment)
        self.ranged = [s for s in self.segments if s.first_id >= 0]
        self.index_of = {id(segment): i for i, segment in enumerate(self.segments)}
        self.live_bytes = sum(summary.add_bytes for _, _, summary in taken)
        # The ranges of ids removed from these segments' adds.
        self.gone: list[tuple[int, int]] = []
        # Each held item's abort seq (-1: open), and where its latest copy is.
        self.held: dict[int, int] = {}
        self.copies: dict[int, tuple[int, int]] = {}
        self.live = 0

    def count_removes(self) -> bool:
        """Count the removes off the segments the ids were born in: False
        if they do not add up."""
        for (_, last, _), (first, _, _) in itertools.pairwise(self.removes):
            if first <= last:
                # An id removed twice: not what erq writes; read it all.
                return False
        ranged = self.ranged
        for first, last, size in self.removes:
            i = bisect_right(self.firsts, first) - 1
            if i < 0 or first > ranged[i].last_id:
                # Ids of a segment deleted since (or of a forwarded copy).
                continue
            segment = ranged[i]
            if last > segment.last_id or segment.live < last - first + 1:
                return False
            segment.live -= last - first + 1
            self.live_bytes -= size
            self.gone.append((first, last))
        return True

    def removed(self, item_id: int) -> bool:
        i = bisect_right(self.removed_firsts, item_id) - 1
        return i >= 0 and item_id <= self.removes[i][1]

    def born_in(self, item_id: int) -> _Segment | None:
        i = bisect_right(self.firsts, item_id) - 1
        ranged = self.ranged
        return ranged[i] if i >= 0 and item_id <= ranged[i].last_id else None

    def held_items(self) -> list[int]:
        """The items open or aborted (queued at the head) when the last of
        these segments closed, and not removed."""
        # Each with the seq of its abort: an OPEN or a copy decides an
        # item's state whatever it was, an abort alone only that of an item
        # open or aborted already (see ``RESET``).  The latest copy of each
        # is where it is read from.
        held = self.held
        for index, (_, _, summary) in enumerate(self.taken):
            for item_id, seq, flags in summary.states:
                if flags & RESET or item_id in held:
                    held[item_id] = seq if flags & ABORTED else -1
            for item_id, offset in summary.forwards:
                self.copies[item_id] = (index, offset)
        return [
            item_id
            for item_id in held
            if not self.removed(item_id)
            and (item_id in self.copies or self.born_in(item_id))
        ]

    def take_over(self, replay: _Replay, last: bool) -> None:
        """The replay takes these segments (``last``: all of its
        segments), their index and what their summaries count."""
        taken = self.taken
        if last:
            replay.last_summary = taken[-1][2]
        replay.segments.extend(self.segments)
        for segment in self.ranged:
            replay._first_add(segment, segment.first_id)
        replay.summarized = len(self.segments)
        replay.records += sum(summary.records for _, _, summary in taken)
        replay.body.max_native = max((s.last_id for s in self.ranged), default=0)
        replay.max_id = max(summary.max_id for _, _, summary in taken)
        replay.max_seq = max(summary.max_seq for _, _, summary in taken)
        self.live = sum(s.live for s in self.segments)

    def take_held(self, replay: _Replay, opens: list[int]) -> list[int]:
        """Read the held items into the replay's head; those of them born
        in these segments (not only copied here), which the body lacks."""
        segments = self.segments
        in_body: list[int] = []
        for item_id in opens:
            origin = self.born_in(item_id)
            if item_id in self.copies:
                index, offset = self.copies[item_id]
                item = _fetch_copy(replay, index, offset, item_id)
                if origin is not None:
                    # Its first copy is still there: the latest one counts.
                    origin.live -= 1
                segments[index].live += 1
                replay._forwarded[item_id] = segments[index]
            else:
                assert origin is not None
                index = self.index_of[id(origin)]
                item = _fetch(replay, index, self.taken, item_id)
            if item is None:
                raise StaleSummary
            seq = self.held[item_id]
            if seq < 0:
                replay.open[item_id] = item
            else:
                replay.prefix[item_id] = item
                replay.prefix_seqs[item_id] = seq
            if origin is not None:
                in_body.append(item_id)
                self.live -= 1
                self.live_bytes -= len(item.data)
        return in_body

    def start_behind(self, replay: _Replay, opens: list[int]) -> None:
        """The body: from the first id neither removed nor held (``opens``)
        on, counted behind, then read in up to the memory limit."""
        ranged, firsts = self.ranged, self.firsts
        out = sorted(self.gone + [(item_id, item_id) for item_id in opens])
        head = ranged[0].first_id
        k = 0
        while k < len(out) and out[k][0] <= head:
            head = max(head, out[k][1] + 1)
            k += 1
        i = bisect_right(firsts, head) - 1
        while i + 1 < len(ranged) and head > ranged[i].last_id:
            i += 1
            head = max(head, ranged[i].first_id)
            while k < len(out) and out[k][0] <= head:
                head = max(head, out[k][1] + 1)
                k += 1
        body = replay.body
        body.window_last = head - 1
        for first, last in out[k:]:
            body.skip.update(range(max(first, head), last + 1))
        index = self.index_of[id(ranged[i])]
        offset = HEADER_SIZE
        for entry_id, entry_offset in self.taken[index][2].index:
            if entry_id > head:
                break
            offset = entry_offset
        body.behind_from(replay, index, offset, self.live, self.live_bytes)
        body.refill(None)


def _fetch_copy(replay: _Replay, index: int, offset: int, item_id: int) -> Item | None:
    """An open item's forwarded copy, in a segment taken from its
    summary."""
    buf, end = replay.segment_buffer(index)
    if offset + 8 > end:
        return None
    n, crc = _REC.unpack_from(buf, offset)
    start = offset + 8
    if (
        n < _FORWARD_SIZE
        or start + n > end
        or zlib.crc32(buf[start : start + n]) != crc
        or buf[start] != FORWARD
    ):
        return None
    _, found, _, _, flags, expiry, added = _FORWARD.unpack_from(buf, start)
    if found != item_id:
        return None
    return Item(
        item_id,
        buf[start + _FORWARD_SIZE : start + n],
        flags,
        _expiry_out(expiry),
        added,
    )


def _fetch(
    replay: _Replay, index: int, taken: list[tuple[int, str, Summary]], item_id: int
) -> Item | None:
    """An item of a segment taken from its summary, read from disk."""
    pos = HEADER_SIZE
    for entry_id, entry_offset in taken[index][2].index:
        if entry_id > item_id:
            break
        pos = entry_offset
    buf, end = replay.segment_buffer(index)
    while pos < end:
        n, crc = _REC.unpack_from(buf, pos)
        start = pos + 8
        if n == 0 or start + n > end or zlib.crc32(buf[start : start + n]) != crc:
            raise StaleSummary
        pos = start + n
        if buf[start] == ADD:
            _, found, flags, expiry, added = _ADD.unpack_from(buf, start)
            if found == item_id:
                return Item(
                    item_id,
                    buf[start + _ADD_SIZE : start + n],
                    flags,
                    _expiry_out(expiry),
                    added,
                )
    return None
