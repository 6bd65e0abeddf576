"""Segment summaries: what start-up needs of a closed segment, in a small
file beside it, so that replay need not read the segment itself.

Summaries
---------
When a segment is full and closed, ``<number>.sum`` is written beside
``<number>.seg``: how many items it ADDs and their bytes, their id range,
every 1024th ADD's offset (so that reading can start near any id), the ids
its REMOVE records name (as ranges of consecutive ids, since removals are
nearly always of the oldest items, each with the bytes it frees, and never
crossing the first id of another segment, so that each range belongs to
one segment), the state its OPEN, ABORT and FORWARD records leave each item
in that it does not remove (open, or aborted with the seq of its abort),
and where the copies forwarded into it are.  The journal builds it as it
appends the records (``SummaryBuilder``, a few operations a record on the
reactor thread), so closing a segment only binds the summary to the file;
a segment it did not see written (one found at start) is read back for its
summary instead, a slice per batch.

For replay the order of the records across such segments does not matter:
each item is added before anything else names it, a removal is final, and
an OPEN or a FORWARD decides an item's state whatever came before, while an
ABORT alone changes only an item open or aborted already (replay ignores
the abort of a queued item); so the states of a run of segments compose in
segment order, and replay takes their live items as sums and ranges; see
``erq.journal.replay``.  A segment holding a FLUSH (every queued item
before it gone, every open one kept: that depends on all that came before)
or an ADD out of id order is *complex*: replay reads it, and every segment
after it.

A summary binds itself to its segment by the segment's size and the
checksums of its first and last 4 KiB, and to itself by a checksum of its
own: one that does not match (torn by a crash, left from an older segment
of the same number, or of a segment cut since) is ignored and its segment
replayed the slow way.  A summary is written to a temporary file and
renamed, deleted before its segment is, and not needed for correctness at
any moment: without one, replay reads the segment, and writes the missing
summaries once the server runs.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING

from erq.journal import records as record_format
from erq.journal.records import (
    _ABORT,
    _ADD_SIZE,
    _FORWARD_SIZE,
    _REMOVE_SIZE,
    ABORT,
    ADD,
    FILE_HEADER,
    FLUSH,
    FORWARD,
    HEADER_SIZE,
    OPEN,
    OPENED,
    REMOVE,
    _zeros_from,
)

if TYPE_CHECKING:
    from erq.items import Item

_ADD = record_format._ADD
_ID_OF = attrgetter("id")
_DATA_OF = attrgetter("data")
_REC = record_format._REC
_REF = record_format._REF
_REMOVE = record_format._REMOVE

SUMMARY_MAGIC = b"ERQS"
SUMMARY_VERSION = 2
#: Every how many ADDs a summary keeps an (id, offset) pair.
INDEX_EVERY = 1024
#: How much of each end of a segment a summary's checksums cover.
_BIND = 4096
_COMPLEX = 1
#: An item state's flags: an OPEN or a FORWARD here decided its state,
#: whatever it was before; its last state here is aborted (queued at the
#: head, with the seq of that abort), not open.
RESET = 1
ABORTED = 2

_HEAD = struct.Struct("<4sHHQQIIQQQqqqqIIII")
_INDEX = struct.Struct("<qQ")
_FORWARD_HEAD = struct.Struct("<BqBq")
_RANGE = struct.Struct("<qqQ")
_STATE = struct.Struct("<qqB")
_CRC = struct.Struct("<I")

# Each record's bytes in a segment, beyond an item's data.
_ADD_RECORD = 8 + _ADD_SIZE
_REMOVE_RECORD = 8 + _REMOVE_SIZE
_OPEN_RECORD = 8 + _REF.size
_ABORT_RECORD = 8 + _ABORT.size
_FLUSH_RECORD = 8 + 1
_FORWARD_RECORD = 8 + _FORWARD_SIZE


_SUMMARY_RE = re.compile(r"^(\d{8,})\.sum$")


def summary_name(number: int) -> str:
    return f"{number:08d}.sum"


@dataclass
class Summary:
    """What a closed segment holds, as replay needs it."""

    #: The segment file's size, and where its records end (before zeros).
    file_size: int
    records_end: int
    records: int
    #: A FLUSH or an ADD out of id order: replay reads it.
    complex: bool
    adds: int
    add_bytes: int
    #: The ids of its ADDs (rising), -1 without any.
    first_id: int
    last_id: int
    #: The largest id any of its records names.
    max_id: int
    #: The largest abort seq any of its records names.
    max_seq: int = 0
    #: (id, offset) of every INDEX_EVERY-th ADD, the first one included.
    index: list[tuple[int, int]] = field(default_factory=list)
    #: Removed ids: (first, last, bytes) for consecutive ids.
    removes: list[tuple[int, int, int]] = field(default_factory=list)
    #: (id, seq, flags) of each item opened, aborted or copied here and not
    #: removed here: its state when the segment closed (see ``RESET`` and
    #: ``ABORTED``; seq is its last abort's).
    states: list[tuple[int, int, int]] = field(default_factory=list)
    #: (id, offset) of the FORWARD record of each item still open or
    #: aborted that was copied here (its latest copy here) and not removed
    #: here.
    forwards: list[tuple[int, int]] = field(default_factory=list)


class SummaryBuilder:
    """A segment's summary, built record by record as they are appended to
    it (by the journal, on the reactor thread, so that closing a segment
    need not read it back), or as they are read from it.

    ``boundaries`` are the first ids of the queue's segments, rising (the
    journal's own list, which grows as segments start): no range of
    removed ids crosses one.  ``end``, where the records seen end (from the
    segment's header on), follows from the counts; a builder that missed a
    record says so by disagreeing with the segment's size.  An ADD or a
    REMOVE, one per item, costs a few attribute updates; the rest are rare.
    """

    __slots__ = (
        "boundaries",
        "base_end",
        "base_records",
        "complex",
        "adds",
        "add_bytes",
        "removed",
        "others",
        "others_bytes",
        "first_id",
        "last_id",
        "max_seq",
        "index",
        "removes",
        "run_first",
        "run_last",
        "run_bytes",
        "run_limit",
        "states",
        "forwards",
    )

    def __init__(self, boundaries: list[int]) -> None:
        self.boundaries = boundaries
        # What ``end`` and ``records`` start from (a resumed summary's).
        self.base_end = HEADER_SIZE
        self.base_records = 0
        self.complex = False
        self.adds = 0
        self.add_bytes = 0
        # REMOVEs in the ranges closed so far (the current one is a run).
        self.removed = 0
        # OPEN, ABORT, FLUSH and FORWARD records, and their bytes.
        self.others = 0
        self.others_bytes = 0
        self.first_id = -1
        self.last_id = -1
        self.max_seq = 0
        self.index: list[tuple[int, int]] = []
        self.removes: list[tuple[int, int, int]] = []
        self.run_first = -1
        self.run_last = -2
        self.run_bytes = 0
        self.run_limit = 0
        self.states: dict[int, tuple[int, int]] = {}
        self.forwards: dict[int, int] = {}

    @classmethod
    def resume(cls, summary: Summary, boundaries: list[int]) -> SummaryBuilder:
        """A builder that goes on from ``summary``, for records appended to
        its segment after it was written (the segment open at a stop)."""
        builder = cls(boundaries)
        builder.complex = summary.complex
        builder.adds = summary.adds
        builder.add_bytes = summary.add_bytes
        builder.first_id = summary.first_id
        builder.last_id = summary.last_id
        builder.max_seq = summary.max_seq
        builder.index = list(summary.index)
        builder.removes = list(summary.removes)
        builder.removed = sum(last - first + 1 for first, last, _ in summary.removes)
        builder.states = {i: (seq, flags) for i, seq, flags in summary.states}
        builder.forwards = dict(summary.forwards)
        builder.base_end = summary.records_end - (builder.end - HEADER_SIZE)
        builder.base_records = summary.records - builder.records
        return builder

    @property
    def end(self) -> int:
        run = self.run_last - self.run_first + 1 if self.run_first >= 0 else 0
        return (
            self.base_end
            + self.adds * _ADD_RECORD
            + self.add_bytes
            + (self.removed + run) * _REMOVE_RECORD
            + self.others_bytes
        )

    @property
    def records(self) -> int:
        run = self.run_last - self.run_first + 1 if self.run_first >= 0 else 0
        return self.base_records + self.adds + self.removed + run + self.others

    def add(self, item_id: int, size: int) -> None:
        if item_id > self.last_id:
            if self.adds % INDEX_EVERY == 0:
                self.index.append((item_id, self.end))
            if self.first_id < 0:
                self.first_id = item_id
            self.last_id = item_id
        else:
            # Out of id order: the id ranges cannot find it.
            self.complex = True
        self.adds += 1
        self.add_bytes += size

    def remove(self, item_id: int, size: int) -> None:
        # An item removed here leaves the states as the summary is made.
        if item_id == self.run_last + 1 and item_id < self.run_limit:
            self.run_last = item_id
            self.run_bytes += size
        else:
            self._new_run(item_id, size)

    def remove_items(self, items: Sequence[Item]) -> None:
        """``remove`` for each item: a batch of gets removes many, most
        often the next ids of the range being built, which is checked
        without a loop in Python."""
        n = len(items)
        if not n:
            return
        first = items[0].id
        if first == self.run_last + 1 and first + n <= self.run_limit:
            if list(map(_ID_OF, items)) == list(range(first, first + n)):
                self.run_last = first + n - 1
                self.run_bytes += sum(map(len, map(_DATA_OF, items)))
                return
        run_last = self.run_last
        run_limit = self.run_limit
        run_bytes = self.run_bytes
        for item in items:
            item_id = item.id
            if item_id == run_last + 1 and item_id < run_limit:
                run_last = item_id
                run_bytes += len(item.data)
            else:
                self.run_last = run_last
                self.run_bytes = run_bytes
                self.remove(item_id, len(item.data))
                run_last = self.run_last
                run_limit = self.run_limit
                run_bytes = self.run_bytes
        self.run_last = run_last
        self.run_bytes = run_bytes

    def _new_run(self, item_id: int, size: int) -> None:
        if self.run_first >= 0:
            self.removes.append((self.run_first, self.run_last, self.run_bytes))
            self.removed += self.run_last - self.run_first + 1
        self.run_first = self.run_last = item_id
        self.run_bytes = size
        boundaries = self.boundaries
        i = bisect_right(boundaries, item_id)
        self.run_limit = boundaries[i] if i < len(boundaries) else 1 << 63

    def boundary(self, first_id: int) -> None:
        """A segment starts at ``first_id``: the range being built stops
        before it."""
        if self.run_first < first_id < self.run_limit:
            self.run_limit = first_id

    def open(self, item_id: int) -> None:
        self.states[item_id] = (0, RESET)
        self.others += 1
        self.others_bytes += _OPEN_RECORD

    def abort(self, item_id: int, seq: int) -> None:
        # Before any OPEN here, it applies only to an item open or aborted
        # already (replay ignores the abort of a queued item).
        before = self.states.get(item_id)
        reset = before[1] & RESET if before is not None else 0
        self.states[item_id] = (seq, reset | ABORTED)
        if seq > self.max_seq:
            self.max_seq = seq
        self.others += 1
        self.others_bytes += _ABORT_RECORD

    def flush(self) -> None:
        # Every queued item before it goes, every open one stays: that
        # depends on what came before, so replay reads it.
        self.complex = True
        self.others += 1
        self.others_bytes += _FLUSH_RECORD

    def forward(self, item_id: int, opened: bool, seq: int, size: int) -> None:
        self.states[item_id] = (seq, RESET if opened else RESET | ABORTED)
        self.forwards.pop(item_id, None)
        self.forwards[item_id] = self.end
        if seq > self.max_seq:
            self.max_seq = seq
        self.others += 1
        self.others_bytes += _FORWARD_RECORD + size

    def summary(self, file_size: int) -> Summary:
        removes = list(self.removes)
        if self.run_first >= 0:
            removes.append((self.run_first, self.run_last, self.run_bytes))
        # The largest id any record names: every id removed is in a range,
        # every other one opened, aborted or copied is in the states.
        max_id = max(
            [self.last_id]
            + [last for _, last, _ in removes]
            + list(self.states)
            + list(self.forwards)
        )
        states = self.states
        forwards = self.forwards
        if removes and states:
            ranges = sorted(removes)
            firsts = [first for first, _, _ in ranges]

            def kept(item_id: int) -> bool:
                i = bisect_right(firsts, item_id) - 1
                return i < 0 or item_id > ranges[i][1]

            states = {i: state for i, state in states.items() if kept(i)}
            forwards = {i: offset for i, offset in forwards.items() if kept(i)}
        complex_ = self.complex
        return Summary(
            file_size=file_size,
            records_end=self.end,
            records=self.records,
            complex=complex_,
            adds=self.adds,
            add_bytes=self.add_bytes,
            first_id=self.first_id,
            last_id=self.last_id,
            max_id=max_id,
            max_seq=self.max_seq,
            # Only the binding and the counts matter for a complex one.
            index=[] if complex_ else list(self.index),
            removes=[] if complex_ else removes,
            states=[]
            if complex_
            else [(i, seq, flags) for i, (seq, flags) in states.items()],
            forwards=[] if complex_ else list(forwards.items()),
        )


def _binding(buf: bytes | memoryview, size: int) -> tuple[int, int]:
    return zlib.crc32(buf[:_BIND]), zlib.crc32(buf[max(size - _BIND, 0) : size])


def encode(summary: Summary, head_crc: int, tail_crc: int) -> bytes:
    parts = [
        _HEAD.pack(
            SUMMARY_MAGIC,
            SUMMARY_VERSION,
            _COMPLEX if summary.complex else 0,
            summary.file_size,
            summary.records_end,
            head_crc,
            tail_crc,
            summary.records,
            summary.adds,
            summary.add_bytes,
            summary.first_id,
            summary.last_id,
            summary.max_id,
            summary.max_seq,
            len(summary.index),
            len(summary.removes),
            len(summary.states),
            len(summary.forwards),
        )
    ]
    parts.extend(_INDEX.pack(*entry) for entry in summary.index)
    parts.extend(_RANGE.pack(*entry) for entry in summary.removes)
    parts.extend(_STATE.pack(*entry) for entry in summary.states)
    parts.extend(_INDEX.pack(*entry) for entry in summary.forwards)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes) -> tuple[Summary, int, int] | None:
    """A summary and its binding checksums; ``None`` if it is not a whole,
    good summary (of this version: an older one is written again)."""
    if len(data) < _HEAD.size + _CRC.size:
        return None
    body = memoryview(data)[: -_CRC.size]
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(body) != crc:
        return None
    (
        magic,
        version,
        flags,
        file_size,
        records_end,
        head_crc,
        tail_crc,
        records,
        adds,
        add_bytes,
        first_id,
        last_id,
        max_id,
        max_seq,
        n_index,
        n_removes,
        n_states,
        n_forwards,
    ) = _HEAD.unpack_from(data, 0)
    if magic != SUMMARY_MAGIC or version != SUMMARY_VERSION:
        return None
    pos = _HEAD.size
    end = pos + n_index * _INDEX.size + n_removes * _RANGE.size + n_states * _STATE.size
    if end + n_forwards * _INDEX.size != len(body):
        return None
    index = list(_INDEX.iter_unpack(body[pos : pos + n_index * _INDEX.size]))
    pos += n_index * _INDEX.size
    removes = list(_RANGE.iter_unpack(body[pos : pos + n_removes * _RANGE.size]))
    pos += n_removes * _RANGE.size
    states = list(_STATE.iter_unpack(body[pos:end]))
    forwards = list(_INDEX.iter_unpack(body[end:]))
    summary = Summary(
        file_size,
        records_end,
        records,
        bool(flags & _COMPLEX),
        adds,
        add_bytes,
        first_id,
        last_id,
        max_id,
        max_seq,
        index,
        removes,
        states,
        forwards,
    )
    return summary, head_crc, tail_crc


# What ``_feed`` stopped at.
_MORE = 0
_ZEROS = 1
_BAD = 2


def _feed(builder: SummaryBuilder, buf: bytes, pos: int) -> tuple[int, int]:
    """Give ``builder`` the whole records of ``buf`` from ``pos`` (where
    ``builder.end`` is in the segment); where it stopped, and why: a record
    not whole in ``buf`` (or its end), zeros, or a bad record."""
    size = len(buf)
    view = memoryview(buf)
    unpack_rec = _REC.unpack_from
    unpack_add = _ADD.unpack_from
    unpack_remove = _REMOVE.unpack_from
    crc32 = zlib.crc32
    try:
        while pos < size:
            if pos + 8 > size:
                return pos, _ZEROS if _zeros_from(buf, pos) else _MORE
            n, crc = unpack_rec(buf, pos)
            if n == 0:
                return pos, _ZEROS if _zeros_from(buf, pos) else _BAD
            start = pos + 8
            end = start + n
            if end > size:
                return pos, _MORE
            if crc32(view[start:end]) != crc:
                return pos, _BAD
            kind = buf[start]
            if kind == ADD and n >= _ADD_SIZE:
                builder.add(unpack_add(buf, start)[1], n - _ADD_SIZE)
            elif kind == REMOVE and n == _REMOVE_SIZE:
                _, item_id, item_size = unpack_remove(buf, start)
                builder.remove(item_id, item_size)
            elif kind == OPEN and n == _REF.size:
                builder.open(_REF.unpack_from(buf, start)[1])
            elif kind == ABORT and n == _ABORT.size:
                _, item_id, seq = _ABORT.unpack_from(buf, start)
                builder.abort(item_id, seq)
            elif kind == FLUSH and n == 1:
                builder.flush()
            elif kind == FORWARD and n >= _FORWARD_SIZE:
                _, item_id, state, seq = _FORWARD_HEAD.unpack_from(buf, start)
                builder.forward(item_id, state == OPENED, seq, n - _FORWARD_SIZE)
            else:
                return pos, _BAD
            pos = end
    finally:
        view.release()
    return pos, _MORE


def summarize(buf: bytes, boundaries: list[int]) -> Summary | None:
    """The summary of a closed segment's bytes, or ``None`` if they are not
    a good segment.  ``boundaries`` are the first ids of the queue's
    segments, rising: no range of removed ids crosses one."""
    if buf[:HEADER_SIZE] != FILE_HEADER:
        return None
    builder = SummaryBuilder(boundaries)
    pos, stop = _feed(builder, buf, HEADER_SIZE)
    if (stop == _MORE and pos < len(buf)) or stop == _BAD or builder.end != pos:
        return None
    return builder.summary(len(buf))


#: How much of a segment ``summarize_part`` reads at a time: a few
#: milliseconds of the writer thread's time.
SLICE = 256 * 1024


def summarize_part(path: str, builder: SummaryBuilder) -> Summary | bool:
    """Read the next slice of a closed segment's records (from
    ``builder.end`` on) into ``builder``: the summary once every record is
    read, ``True`` while more is left, ``False`` if the segment is not good
    (or gone)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos = builder.end
            if pos == HEADER_SIZE and f.read(HEADER_SIZE) != FILE_HEADER:
                return False
            f.seek(pos)
            buf = f.read(SLICE)
            done, stop = _feed(builder, buf, 0)
            if done == 0 and stop == _MORE and len(buf) >= 8:
                # One record larger than a slice.
                (n, _) = _REC.unpack_from(buf, 0)
                buf += f.read(8 + n - len(buf))
                done, stop = _feed(builder, buf, 0)
            if stop == _ZEROS:
                # The zeros must reach the end of the file; they are cut as
                # the segment is closed (see ``bound_summary``).
                f.seek(pos + done)
                while rest := f.read(SLICE):
                    if rest.count(0) != len(rest):
                        return False
                return builder.summary(builder.end)
    except OSError:
        return False
    if stop == _BAD:
        return False
    if pos + done == size:
        return builder.summary(size)
    if pos + len(buf) >= size:
        # A record runs past the end: torn, not a closed segment.
        return False
    return True


def bound_summary(segment_path: str, summary: Summary) -> bytes | None:
    """A summary's file, bound to its segment as it is on disk up to the
    size the summary says; ``None`` if the segment is shorter.  Zeros may
    still follow (written ahead of the appends, see ``erq.journal.files``):
    they are cut as the segment is closed, and until then the summary does
    not match the segment, which is read instead."""
    size = summary.file_size
    try:
        with open(segment_path, "rb") as f:
            if os.fstat(f.fileno()).st_size < size:
                return None
            head = f.read(min(_BIND, size))
            f.seek(max(size - _BIND, 0))
            tail = f.read(min(_BIND, size))
    except OSError:
        return None
    return encode(summary, zlib.crc32(head), zlib.crc32(tail))


def summary_bytes(buf: bytes, boundaries: list[int]) -> bytes | None:
    """A closed segment's summary file, or ``None`` if the segment is not
    good."""
    summary = summarize(buf, boundaries)
    if summary is None:
        return None
    head_crc, tail_crc = _binding(buf, len(buf))
    return encode(summary, head_crc, tail_crc)


def read_summary(segment_path: str, summary_path: str) -> Summary | None:
    """The summary of a segment, if there is one and it matches the
    segment as it is now."""
    try:
        with open(summary_path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    decoded = decode(data)
    if decoded is None:
        return None
    summary, head_crc, tail_crc = decoded
    try:
        with open(segment_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != summary.file_size:
                return None
            head = f.read(_BIND)
            f.seek(max(size - _BIND, 0))
            tail = f.read(_BIND)
    except OSError:
        return None
    if (zlib.crc32(head), zlib.crc32(tail)) != (head_crc, tail_crc):
        return None
    return summary
