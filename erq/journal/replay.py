"""Replay: a queue's segments read back in order at start, into the state
the queue starts from, with any damage cut off (``Journal.replay``, in
``erq.journal.takeover``, takes that state over).

Replay applies the records (see ``erq.journal.records``) in order to a model
of the queue: the body (items in ADD order), a head of aborted items, and
the open reads.  The aborted head is ordered by abort seq, latest first
(what putting each in front does), so a forwarded copy goes back to its
exact place without the records of its neighbours.  A REMOVE, OPEN or ABORT
naming an unknown id is ignored (its ADD may have been compacted away).
Open reads found at the end come back at the head of the queue in id order,
which is the order they were queued in (at-least-once), and ABORT records
are written so that the disk says the same.

Damage is cut off at the first torn or corrupt record of a segment (see
``erq.journal.damage``), and replay goes on with the later segments.
"""

from __future__ import annotations

import contextlib
import gc
import os
import zlib
from dataclasses import dataclass, field

from erq.items import Item
from erq.journal import records as record_format
from erq.journal.body import _Body
from erq.journal.damage import _Cutter
from erq.journal.files import _SegmentFile
from erq.journal.fromsummaries import StaleSummary, take_summaries
from erq.journal.records import (
    _ADD_SIZE,
    _FORWARD_SIZE,
    _REFILL,
    _REMOVE_SIZE,
    ABORT,
    ADD,
    FLUSH,
    FORWARD,
    HEADER_SIZE,
    OPEN,
    OPENED,
    REMOVE,
    _Damage,
    _expiry_out,
    _header_problem,
    _segment_name,
    _zeros_from,
)
from erq.journal.segments import _Index, _Segment
from erq.journal.summaries import (
    _SUMMARY_RE,
    Summary,
)

# Assigned, not imported: a method call on an imported name compiles as a
# call of a module's function (an attribute load, then a call, which makes a
# bound method each time); on an assigned name it compiles to the cheaper
# method call.  These calls are on hot paths.
_ABORT = record_format._ABORT
_ADD = record_format._ADD
_FORWARD = record_format._FORWARD
_QUARANTINE_RE = record_format._QUARANTINE_RE
_REC = record_format._REC
_REF = record_format._REF
_REMOVE = record_format._REMOVE
_SEGMENT_RE = record_format._SEGMENT_RE


@dataclass
class Replayed:
    """A queue's state as replayed from its journal."""

    #: Items held in memory, in queue order, head first (open reads that
    #: came back first).
    items: list[Item]
    #: Items left on disk after ``items``, to be read with ``read_behind``.
    behind_items: int
    behind_bytes: int
    #: Larger than every id seen.
    next_id: int
    #: One human-readable line per damaged spot found (and cut).
    damage: list[str] = field(default_factory=list)
    #: How many of ``items`` were open reads when the server stopped.
    reopened: int = 0
    #: Segments found, and how many of them were taken from their
    #: summaries rather than read.
    segments: int = 0
    summarized: int = 0


_NO_SEGMENT = _Segment(0, _SegmentFile("", 0, False))


def _list_segments(
    directory: str, repair: bool
) -> tuple[list[int], set[int], int] | None:
    """A queue directory's segments in order, those of them with a summary,
    and the highest number a segment or a file set aside from one took
    (None without a directory).  A summary whose segment is gone goes."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return None
    numbers: list[int] = []
    summaries: dict[int, str] = {}
    max_number = 0
    for name in names:
        match = _SEGMENT_RE.match(name)
        if match:
            numbers.append(int(match.group(1)))
        elif match := _SUMMARY_RE.match(name):
            summaries[int(match.group(1))] = name
        else:
            match = _QUARANTINE_RE.match(name)
            if match:
                max_number = max(max_number, int(match.group(1)))
    numbers.sort()
    if numbers:
        max_number = max(max_number, numbers[-1])
    present = set(numbers)
    for number, name in summaries.items():
        if number not in present and repair:
            # Its segment is gone: a new one may take its number.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
    return numbers, present.intersection(summaries), max_number


def _bad_record(buf: bytes, pos: int) -> _Damage:
    """What is wrong with the record at ``pos``, found torn or corrupt."""
    size = len(buf)
    if pos + 8 > size:
        return _Damage(pos, "torn record", size)
    n, _ = _REC.unpack_from(buf, pos)
    end = pos + 8 + n
    if end > size:
        return _Damage(pos, "torn record", end)
    return _Damage(pos, "corrupt record (checksum mismatch)", end)


class _Replay(_Index):
    """Applies a queue's records in order to a model of the queue, holding
    at most about ``max_memory`` bytes of items."""

    def __init__(self, directory: str, max_memory: int, repair: bool) -> None:
        super().__init__()
        self.directory = directory
        # False for the command-line tool: nothing on disk is changed.
        self.repair = repair
        self.dir_exists = False
        self.damage: list[str] = []
        self.cutter = _Cutter(directory, repair, self.damage)
        self.segments: list[_Segment] = []
        self.body = _Body(max_memory)
        # Aborted items queued at the head, and their abort seqs.
        self.prefix: dict[int, Item] = {}
        self.prefix_seqs: dict[int, int] = {}
        self.max_seq = 0
        self.open: dict[int, Item] = {}
        self.max_id = 0
        self.max_number = 0
        self.records = 0
        self.current_index = -1
        self.current_buf = b""
        self.pos = 0
        self._cache: tuple[int, bytes] | None = None
        # The segment the last REMOVE hit: the next one is likely there too.
        self.hint = _NO_SEGMENT
        # Whether summaries may stand for segments, and how many of the
        # first segments they stood for.
        self.use_summaries = True
        self.summarized = 0
        # The segments that have a summary file.
        self.summary_numbers: set[int] = set()
        # The last segment's summary, when it was taken from it.
        self.last_summary: Summary | None = None

    @property
    def firsts(self) -> list[int]:
        return self._firsts

    @property
    def ranged(self) -> list[_Segment]:
        return self._ranged

    @property
    def forwarded(self) -> dict[int, _Segment]:
        return self._forwarded

    def run(self) -> None:
        # Replay makes up to millions of objects that can never be in a
        # cycle; the cyclic collector would walk them all again and again
        # (a third of the time of a big replay), so it waits.
        collecting = gc.isenabled()
        gc.disable()
        try:
            try:
                self._run()
            except StaleSummary:
                # What was cut on the way is cut, and will not be met again:
                # keep saying so.
                damage = self.damage
                self.__init__(  # type: ignore[misc]
                    self.directory, self.body.max_memory, self.repair
                )
                if self.repair:
                    self.damage.extend(damage)
                self.use_summaries = False
                self._run()
        finally:
            if collecting:
                gc.enable()

    def _run(self) -> None:
        listing = _list_segments(self.directory, self.repair)
        if listing is None:
            return
        self.dir_exists = True
        numbers, self.summary_numbers, self.max_number = listing
        first = take_summaries(self, numbers) if self.use_summaries else 0
        for i in range(first, len(numbers)):
            self._segment(numbers[i], last=i == len(numbers) - 1)
        self.current_buf = b""
        self._cache = None
        # ADD ids are not tracked in the hot loop's max; do it once here.
        self.max_id = max(self.max_id, self.body.max_native)

    def _segment(self, number: int, last: bool) -> None:
        name = _segment_name(number)
        path = os.path.join(self.directory, name)
        with open(path, "rb") as f:
            buf = f.read()
        problem = _header_problem(buf)
        if problem is not None:
            self.cutter.bad_header(name, problem, last)
            return
        segment = _Segment(number, _SegmentFile(path, len(buf), False), len(buf))
        self.segments.append(segment)
        index = len(self.segments) - 1
        try:
            self._scan(index, segment, buf)
        except _Damage as damage:
            if _zeros_from(buf, damage.offset):
                # Not damage: the zeros written ahead, never reached.
                segment.size = segment.file.offset = damage.offset
            else:
                self.cutter.cut(segment, name, buf, damage, last)
                self.summary_numbers.discard(segment.number)

    def segment_buffer(self, index: int) -> tuple[bytes, int]:
        """A segment's bytes and where its good records end (for the current
        one: where replay has got to)."""
        if index == self.current_index:
            return self.current_buf, self.pos
        cache = self._cache
        if cache is None or cache[0] != index:
            segment = self.segments[index]
            with open(segment.file.path, "rb") as f:
                cache = self._cache = (index, f.read(segment.size))
        return cache[1], self.segments[index].size

    def _scan(self, index: int, segment: _Segment, buf: bytes) -> None:
        """Apply a segment's records in order: _Damage at the first bad one.

        Most records are ADDs in id order and REMOVEs of items in memory
        born where the last one removed was: _apply does those in its loop,
        with the body's counters in locals, and hands each of the others to
        _slow, with the counters stored before and loaded after."""
        self.current_index = index
        self.current_buf = buf
        self.hint = _NO_SEGMENT
        view = memoryview(buf)
        try:
            self._apply(segment, buf, view)
            if self.pos < len(buf):
                # Too little left for a record's header: torn.
                raise _bad_record(buf, self.pos)
        finally:
            view.release()

    def _apply(self, segment: _Segment, buf: bytes, view: memoryview) -> None:
        """The hot loop (see _scan)."""
        body, forwarded, size = self.body, self._forwarded, len(buf)
        window, max_memory = body.window, body.max_memory
        unpack_rec, unpack_add = _REC.unpack_from, _ADD.unpack_from
        unpack_remove, crc32 = _REMOVE.unpack_from, zlib.crc32
        mem, last, native = body.mem_bytes, body.window_last, body.max_native
        behind, behind_bytes = body.behind_count, body.behind_bytes
        hint, pos, records = self.hint, HEADER_SIZE, 0
        try:
            while pos + 8 <= size:
                n, crc = unpack_rec(buf, pos)
                start = pos + 8
                end = start + n
                if end > size or n == 0 or crc32(view[start:end]) != crc:
                    raise _bad_record(buf, pos)
                records += 1
                kind = buf[start]
                if kind == ADD and n >= _ADD_SIZE:
                    _, item_id, flags, expiry, added = unpack_add(buf, start)
                    if item_id > native and (behind or mem < max_memory):
                        native = item_id
                        if segment.first_id < 0:
                            self._first_add(segment, item_id)
                        segment.last_id = item_id
                        segment.live += 1
                        if behind:
                            behind += 1
                            behind_bytes += n - _ADD_SIZE
                        else:
                            data = buf[start + _ADD_SIZE : end]
                            expiry = None if expiry != expiry else expiry
                            window[item_id] = Item(item_id, data, flags, expiry, added)
                            mem += n - _ADD_SIZE
                            last = item_id
                        pos = end
                        continue
                elif kind == REMOVE and n == _REMOVE_SIZE:
                    item_id = unpack_remove(buf, start)[1]
                    if hint.first_id <= item_id <= hint.last_id and not (
                        forwarded and item_id in forwarded
                    ):
                        item = window.pop(item_id, None)
                        if item is not None:
                            mem -= len(item.data)
                            hint.live -= 1
                            pos = end
                            if not behind or mem >= max_memory:
                                continue
                            kind = _REFILL
                body.mem_bytes, body.window_last, body.max_native = mem, last, native
                body.behind_count, body.behind_bytes = behind, behind_bytes
                self._slow(kind, segment, buf, pos, start, end)
                mem, last, native = body.mem_bytes, body.window_last, body.max_native
                behind, behind_bytes = body.behind_count, body.behind_bytes
                hint, pos = self.hint, end
        finally:
            self.records, self.pos = self.records + records, pos
            body.mem_bytes, body.window_last, body.max_native = mem, last, native
            body.behind_count, body.behind_bytes = behind, behind_bytes

    def _slow(
        self,
        kind: int,
        segment: _Segment,
        buf: bytes,
        pos: int,
        start: int,
        end: int,
    ) -> None:
        """Apply a record the hot loop leaves to it (``_REFILL``: the room
        a REMOVE it applied made in memory)."""
        # Up to here, the reader may read this segment.
        self.pos = pos
        n = end - start
        if kind == _REFILL:
            self.body.refill(None)
        elif kind == ADD:
            if n < _ADD_SIZE:
                raise _Damage(pos, "corrupt record (short ADD)", end)
            _, item_id, flags, expiry, added = _ADD.unpack_from(buf, start)
            body = self.body
            if item_id <= body.max_native:
                self._odd_add(segment, item_id, flags, expiry, added, buf, start, end)
                return
            # The first item that does not fit in memory.
            body.max_native = item_id
            if segment.first_id < 0:
                self._first_add(segment, item_id)
            segment.last_id = item_id
            segment.live += 1
            body.behind_from(self, self.current_index, pos, 1, n - _ADD_SIZE)
        elif kind == REMOVE:
            if n != _REMOVE_SIZE:
                raise _Damage(pos, "corrupt record (bad REMOVE)", end)
            _, item_id, item_size = _REMOVE.unpack_from(buf, start)
            self._remove(item_id, item_size)
        elif kind == OPEN:
            if n != _REF.size:
                raise _Damage(pos, "corrupt record (bad OPEN)", end)
            _, item_id = _REF.unpack_from(buf, start)
            self._open(item_id)
        elif kind == ABORT:
            if n != _ABORT.size:
                raise _Damage(pos, "corrupt record (bad ABORT)", end)
            _, item_id, seq = _ABORT.unpack_from(buf, start)
            self._abort(item_id, seq)
        elif kind == FLUSH:
            if n != 1:
                raise _Damage(pos, "corrupt record (bad FLUSH)", end)
            self._flush()
        elif kind == FORWARD:
            if n < _FORWARD_SIZE:
                raise _Damage(pos, "corrupt record (short FORWARD)", end)
            self._forward(segment, buf, start, end)
        else:
            raise _Damage(pos, f"corrupt record (unknown kind {kind})", end)

    def _odd_add(
        self,
        segment: _Segment,
        item_id: int,
        flags: int,
        expiry: float,
        added: float,
        buf: bytes,
        start: int,
        end: int,
    ) -> None:
        # An id that does not increase: keep the item (in memory, where the
        # reader will not look for it) and find it through the exceptions.
        self.damage.append(
            f"queue dir {self.directory}: item id {item_id} added out of order"
        )
        self._forwarded[item_id] = segment
        segment.live += 1
        item = Item(
            item_id, buf[start + _ADD_SIZE : end], flags, _expiry_out(expiry), added
        )
        self.body.window[item_id] = item
        self.body.mem_bytes += len(item.data)

    def _remove(self, item_id: int, item_size: int) -> None:
        self.max_id = max(self.max_id, item_id)
        item = self.open.pop(item_id, None)
        if item is None:
            item = self.prefix.pop(item_id, None)
            self.prefix_seqs.pop(item_id, None)
        if item is not None:
            found = self._locate(item_id)
            if found is not None:
                found.live -= 1
            self._forwarded.pop(item_id, None)
            return
        body = self.body
        if item_id in body.window:
            # Left by _fast: born elsewhere than the last item removed.
            body.take(item_id)
            found = self._locate(item_id)
            if found is not None:
                found.live -= 1
                self.hint = found
        elif body.drop(item_id, item_size):
            # Removed while replay still had it on disk.
            found = self._locate(item_id)
            if found is not None:
                found.live -= 1

    def _open(self, item_id: int) -> None:
        self.max_id = max(self.max_id, item_id)
        if item_id in self.open:
            return
        item = self.prefix.pop(item_id, None)
        if item is not None:
            del self.prefix_seqs[item_id]
        else:
            item = self.body.take(item_id)
        if item is not None:
            self.open[item_id] = item

    def _abort(self, item_id: int, seq: int) -> None:
        self.max_id = max(self.max_id, item_id)
        self.max_seq = max(self.max_seq, seq)
        item = self.open.pop(item_id, None)
        if item is None:
            item = self.prefix.get(item_id)
        if item is None:
            return
        self.prefix[item_id] = item
        self.prefix_seqs[item_id] = seq

    def aborted_head(self) -> list[Item]:
        """The aborted items queued at the head, head first: the latest
        abort first."""
        seqs = self.prefix_seqs
        return sorted(self.prefix.values(), key=lambda item: -seqs[item.id])

    def _flush(self) -> None:
        self.body.flush()
        for item_id in self.prefix:
            self._forwarded.pop(item_id, None)
        self.prefix.clear()
        self.prefix_seqs.clear()
        for segment in self.segments:
            segment.live = 0
        for item_id in self.open:
            found = self._locate(item_id)
            if found is not None:
                found.live += 1

    def _forward(self, segment: _Segment, buf: bytes, start: int, end: int) -> None:
        _, item_id, state, seq, flags, expiry, added = _FORWARD.unpack_from(buf, start)
        self.max_id = max(self.max_id, item_id)
        self.max_seq = max(self.max_seq, seq)
        if (
            item_id in self.open
            or item_id in self.prefix
            or item_id in self.body.window
        ):
            old = self._locate(item_id)
            if old is not None:
                old.live -= 1
            self._forwarded[item_id] = segment
            segment.live += 1
            return
        if self.body.drop(item_id, end - start - _FORWARD_SIZE):
            # Cannot happen when the journal was written by erq, but if it
            # does, the forwarded copy wins over the one on disk.
            old = self._locate(item_id)
            if old is not None:
                old.live -= 1
        item = Item(
            item_id, buf[start + _FORWARD_SIZE : end], flags, _expiry_out(expiry), added
        )
        self._forwarded[item_id] = segment
        segment.live += 1
        if state == OPENED:
            self.open[item_id] = item
        else:
            self.prefix[item_id] = item
            self.prefix_seqs[item_id] = seq
