"""The body of a queue as replay rebuilds it: its items in ADD order, the
first of them in memory, the rest behind on disk.

Replay holds at most about ``max_memory`` bytes of items, as the queue
will.  Past that, an item ADDed is only counted behind, with its bytes;
nothing else is kept per item behind memory but the ids that went while
still on disk (``skip``).  As removals make room, a second cursor
(``_ReplayReader``) reads the items behind back in, from where the first
of them was ADDed, through the replay's segment buffers; what is still
behind at the end is what the queue reads back as it drains.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from erq.items import Item
from erq.journal import records as record_format
from erq.journal.fromsummaries import StaleSummary
from erq.journal.records import _ADD_SIZE, ADD, HEADER_SIZE, _expiry_out

if TYPE_CHECKING:
    from erq.journal.replay import _Replay

# Assigned, not imported: see ``erq.journal.replay``.
_ADD = record_format._ADD
_REC = record_format._REC


class _ReplayReader:
    """Replay's second cursor: it reads the items that went behind memory
    back in, as removals make room (like the queue will)."""

    __slots__ = ("replay", "body", "index", "pos")

    def __init__(self, replay: _Replay, body: _Body, index: int, pos: int) -> None:
        self.replay = replay
        self.body = body
        self.index = index
        self.pos = pos

    def next_item(self) -> Item | None:
        replay = self.replay
        body = self.body
        skip = body.skip
        while True:
            buf, end = replay.segment_buffer(self.index)
            pos = self.pos
            if pos >= end:
                if self.index >= len(replay.segments) - 1:
                    return None
                self.index += 1
                self.pos = HEADER_SIZE
                continue
            n, crc = _REC.unpack_from(buf, pos)
            start = pos + 8
            self.pos = start + n
            if self.index < replay.summarized and (
                n == 0 or start + n > end or zlib.crc32(buf[start : start + n]) != crc
            ):
                # A segment taken from its summary, not read: its records
                # are checked here, and the summary cannot be trusted.
                raise StaleSummary
            if buf[start] != ADD:
                continue
            _, item_id, flags, expiry, added = _ADD.unpack_from(buf, start)
            if skip and item_id in skip:
                skip.discard(item_id)
                continue
            if item_id <= body.window_last:
                continue
            return Item(
                item_id,
                buf[start + _ADD_SIZE : start + n],
                flags,
                _expiry_out(expiry),
                added,
            )


class _Body:
    """The replayed queue's items in ADD order: those in memory
    (``window``) and the count of those behind them on disk.

    Replay's hot loop keeps the counters in locals and stores them back
    here before anything else reads them."""

    __slots__ = (
        "window",
        "mem_bytes",
        "max_memory",
        "window_last",
        "max_native",
        "behind_count",
        "behind_bytes",
        "reader",
        "skip",
    )

    def __init__(self, max_memory: int) -> None:
        self.window: dict[int, Item] = {}
        self.mem_bytes = 0
        self.max_memory = max_memory
        # The last id in memory, and the last ADDed in id order: the items
        # behind are those between.
        self.window_last = 0
        self.max_native = 0
        self.behind_count = 0
        self.behind_bytes = 0
        self.reader: _ReplayReader | None = None
        # Ids behind memory that went while still on disk.
        self.skip: set[int] = set()

    def behind_from(
        self, replay: _Replay, index: int, pos: int, count: int, size: int
    ) -> None:
        """From ``pos`` in segment ``index`` on, items are behind memory:
        ``count`` of them, of ``size`` bytes."""
        self.reader = _ReplayReader(replay, self, index, pos)
        self.behind_count = count
        self.behind_bytes = size

    def is_behind(self, item_id: int) -> bool:
        return (
            self.behind_count > 0
            and self.window_last < item_id <= self.max_native
            and item_id not in self.skip
        )

    def refill(self, until: int | None) -> None:
        """Read items behind into memory: until it is full, or until the
        item ``until`` is in."""
        reader = self.reader
        window = self.window
        while self.behind_count and reader is not None:
            if until is None:
                if self.mem_bytes >= self.max_memory:
                    break
            elif self.window_last >= until:
                break
            item = reader.next_item()
            if item is None:
                # The counts and the records disagree: trust the records.
                self.behind_count = 0
                break
            size = len(item.data)
            window[item.id] = item
            self.mem_bytes += size
            self.window_last = item.id
            self.behind_count -= 1
            self.behind_bytes -= size
        if not self.behind_count:
            self._end_behind()

    def _end_behind(self) -> None:
        self.behind_count = 0
        self.behind_bytes = 0
        self.reader = None
        self.skip.clear()

    def drop(self, item_id: int, size: int) -> bool:
        """Whether the item was behind memory; if so, it goes (the reader
        will skip it)."""
        # is_behind, written out: this is met at every REMOVE of an item
        # behind, from replay's slow path.
        if not (
            self.behind_count > 0
            and self.window_last < item_id <= self.max_native
            and item_id not in self.skip
        ):
            return False
        self.skip.add(item_id)
        self.behind_count -= 1
        self.behind_bytes -= size
        if not self.behind_count:
            self._end_behind()
        return True

    def take(self, item_id: int) -> Item | None:
        """An item of the body, taken out of it (read from disk if need be)."""
        item = self.window.pop(item_id, None)
        if item is None and self.is_behind(item_id):
            self.refill(item_id)
            item = self.window.pop(item_id, None)
        if item is not None:
            self.mem_bytes -= len(item.data)
            if self.behind_count and self.mem_bytes < self.max_memory:
                self.refill(None)
        return item

    def flush(self) -> None:
        """Every item of the body goes, in memory and behind."""
        self.window.clear()
        self.mem_bytes = 0
        self._end_behind()
