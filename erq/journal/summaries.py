"""Segment summaries: what start-up needs of a closed segment, in a small
file beside it, so that replay need not read the segment itself.

Summaries
---------
Once a segment is full and closed, the writer thread reads it back and
writes ``<number>.sum`` beside ``<number>.seg``: how many items it ADDs and
their bytes, their id range, every 1024th ADD's offset (so that reading
can start near any id), the ids its REMOVE records name (as ranges of
consecutive ids, since removals are nearly always of the oldest items, each
with the bytes it frees, and never crossing the first id of another
segment, so that each range belongs to one segment), and the ids it opened
and did not remove, and where the copies of open items forwarded into it
are.  A segment that holds anything else (an ABORT, a FLUSH, a FORWARD of
an aborted item, an ADD out of id order) is summarized as *complex*: its
effect depends on the order of records across segments, so replay reads
it.

For segments of adds, opens, open items' copies and removes only, the
order does not matter (each item is added before it is opened, copied or
removed, a later copy replaces an earlier one, and a removal is final), so
replay takes the live items of a run of such segments as sums
and ranges; see ``erq.journal.replay``.

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
from dataclasses import dataclass, field

from erq.journal import records as record_format
from erq.journal.records import (
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

_ADD = record_format._ADD
_REC = record_format._REC
_REF = record_format._REF
_REMOVE = record_format._REMOVE

SUMMARY_MAGIC = b"ERQS"
SUMMARY_VERSION = 1
#: Every how many ADDs a summary keeps an (id, offset) pair.
INDEX_EVERY = 1024
#: How much of each end of a segment a summary's checksums cover.
_BIND = 4096
_COMPLEX = 1

_HEAD = struct.Struct("<4sHHQQIIQQQqqqIIII")
_INDEX = struct.Struct("<qQ")
_FORWARD_HEAD = struct.Struct("<BqB")
_RANGE = struct.Struct("<qqQ")
_ID = struct.Struct("<q")
_CRC = struct.Struct("<I")


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
    #: ABORT, FLUSH, FORWARD or an ADD out of id order: replay reads it.
    complex: bool
    adds: int
    add_bytes: int
    #: The ids of its ADDs (rising), -1 without any.
    first_id: int
    last_id: int
    #: The largest id any of its records names.
    max_id: int
    #: (id, offset) of every INDEX_EVERY-th ADD, the first one included.
    index: list[tuple[int, int]] = field(default_factory=list)
    #: Removed ids: (first, last, bytes) for consecutive ids.
    removes: list[tuple[int, int, int]] = field(default_factory=list)
    #: Ids opened here and not removed here, in the order opened.
    opens: list[int] = field(default_factory=list)
    #: (id, offset) of the FORWARD record of each item still open that was
    #: copied here (its latest copy here) and not removed here.
    forwards: list[tuple[int, int]] = field(default_factory=list)


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
            len(summary.index),
            len(summary.removes),
            len(summary.opens),
            len(summary.forwards),
        )
    ]
    parts.extend(_INDEX.pack(*entry) for entry in summary.index)
    parts.extend(_RANGE.pack(*entry) for entry in summary.removes)
    parts.extend(_ID.pack(item_id) for item_id in summary.opens)
    parts.extend(_INDEX.pack(*entry) for entry in summary.forwards)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes) -> tuple[Summary, int, int] | None:
    """A summary and its binding checksums; ``None`` if it is not a whole,
    good summary."""
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
        n_index,
        n_removes,
        n_opens,
        n_forwards,
    ) = _HEAD.unpack_from(data, 0)
    if magic != SUMMARY_MAGIC or version != SUMMARY_VERSION:
        return None
    pos = _HEAD.size
    end = pos + n_index * _INDEX.size + n_removes * _RANGE.size + n_opens * _ID.size
    if end + n_forwards * _INDEX.size != len(body):
        return None
    index = list(_INDEX.iter_unpack(body[pos : pos + n_index * _INDEX.size]))
    pos += n_index * _INDEX.size
    removes = list(_RANGE.iter_unpack(body[pos : pos + n_removes * _RANGE.size]))
    pos += n_removes * _RANGE.size
    opens = [item_id for (item_id,) in _ID.iter_unpack(body[pos:end])]
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
        index,
        removes,
        opens,
        forwards,
    )
    return summary, head_crc, tail_crc


def summarize(buf: bytes, boundaries: list[int]) -> Summary | None:
    """The summary of a closed segment's bytes, or ``None`` if they are not
    a good segment.  ``boundaries`` are the first ids of the queue's
    segments, rising: no range of removed ids crosses one."""
    if buf[:HEADER_SIZE] != FILE_HEADER:
        return None
    size = len(buf)
    view = memoryview(buf)
    unpack_rec = _REC.unpack_from
    unpack_add = _ADD.unpack_from
    unpack_remove = _REMOVE.unpack_from
    crc32 = zlib.crc32
    complex_ = False
    records = adds = add_bytes = 0
    first_id = last_id = max_id = -1
    index: list[tuple[int, int]] = []
    removes: list[tuple[int, int, int]] = []
    opens: dict[int, None] = {}
    forwards: dict[int, int] = {}
    run_first = run_last = -1
    run_bytes = 0
    run_limit = 0
    pos = HEADER_SIZE
    try:
        while pos < size:
            if pos + 8 > size:
                if _zeros_from(buf, pos):
                    break
                return None
            n, crc = unpack_rec(buf, pos)
            if n == 0 and _zeros_from(buf, pos):
                break
            start = pos + 8
            end = start + n
            if n == 0 or end > size or crc32(view[start:end]) != crc:
                return None
            kind = buf[start]
            records += 1
            if kind == ADD and n >= _ADD_SIZE:
                item_id = unpack_add(buf, start)[1]
                if item_id <= last_id:
                    complex_ = True
                else:
                    if adds % INDEX_EVERY == 0:
                        index.append((item_id, pos))
                    if first_id < 0:
                        first_id = item_id
                    last_id = item_id
                adds += 1
                add_bytes += n - _ADD_SIZE
            elif kind == REMOVE and n == _REMOVE_SIZE:
                _, item_id, item_size = unpack_remove(buf, start)
                if opens:
                    opens.pop(item_id, None)
                if forwards:
                    forwards.pop(item_id, None)
                if item_id == run_last + 1 and item_id < run_limit:
                    run_last = item_id
                    run_bytes += item_size
                else:
                    if run_first >= 0:
                        removes.append((run_first, run_last, run_bytes))
                    run_first = run_last = item_id
                    run_bytes = item_size
                    i = bisect_right(boundaries, item_id)
                    run_limit = boundaries[i] if i < len(boundaries) else 1 << 63
                if item_id > max_id:
                    max_id = item_id
            elif kind == OPEN and n == _REF.size:
                item_id = _REF.unpack_from(buf, start)[1]
                opens[item_id] = None
                if item_id > max_id:
                    max_id = item_id
            elif kind == FORWARD and n >= _FORWARD_SIZE:
                _, item_id, state = _FORWARD_HEAD.unpack_from(buf, start)
                if state != OPENED:
                    # An aborted item: where it goes depends on its seq.
                    complex_ = True
                forwards.pop(item_id, None)
                forwards[item_id] = pos
                if item_id > max_id:
                    max_id = item_id
            elif kind in (ABORT, FLUSH):
                complex_ = True
            else:
                return None
            pos = end
    finally:
        view.release()
    if run_first >= 0:
        removes.append((run_first, run_last, run_bytes))
    if complex_:
        # Only the binding and the counts matter then.
        index, removes, opens, forwards = [], [], {}, {}
    return Summary(
        file_size=size,
        records_end=pos,
        records=records,
        complex=complex_,
        adds=adds,
        add_bytes=add_bytes,
        first_id=first_id,
        last_id=last_id,
        max_id=max(max_id, last_id),
        index=index,
        removes=removes,
        opens=list(opens),
        forwards=list(forwards.items()),
    )


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
