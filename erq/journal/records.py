"""The record format of a segment file: its header, the framing and kinds
of its records, their encoding, and parsing them back with the first
damaged one found.

A segment starts with an 8-byte header (``ERQJ``, format version as a
little-endian u16, a zero u16), followed by records.  Each record is::

    u32 length of the payload | u32 zlib.crc32 of the payload | payload

and the payload starts with a kind byte (all integers little-endian, times
are IEEE doubles so they come back exactly; an expiry of NaN means never):

    ADD      1  id:i64 flags:u32 expiry:f64 added:f64 data
    REMOVE   2  id:i64 size:u32      item gone (consumed, confirmed, expired,
                                     discarded); size is its data length
    OPEN     3  id:i64               handed out as an open read
    ABORT    4  id:i64 seq:i64       back to the head of the queue; seq
                                     numbers the aborts of a queue, rising
    FLUSH    5                       every queued (not open) item dropped
    FORWARD  6  id:i64 state:u8 seq:i64 flags:u32 expiry:f64 added:f64 data
                                     a copy of a still-open (state 1) or
                                     aborted, queued (state 0, seq of its
                                     abort) item, written before its old
                                     segment is deleted

Zeros at the end of a segment are where its records end (a record's length
is never zero; see "Zeros ahead" in ``erq.journal.files``).  What replay
makes of the records is in ``erq.journal.replay``, and of a damaged one in
``erq.journal.damage``.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator

MAGIC = b"ERQJ"
VERSION = 1
FILE_HEADER = MAGIC + struct.pack("<HH", VERSION, 0)
HEADER_SIZE = len(FILE_HEADER)

ADD = 1
REMOVE = 2
OPEN = 3
ABORT = 4
FLUSH = 5
FORWARD = 6
KIND_NAMES = {
    ADD: "ADD",
    REMOVE: "REMOVE",
    OPEN: "OPEN",
    ABORT: "ABORT",
    FLUSH: "FLUSH",
    FORWARD: "FORWARD",
}
#: FORWARD states.
QUEUED = 0
OPENED = 1

_REC = struct.Struct("<II")
_ADD = struct.Struct("<BqIdd")
_FORWARD = struct.Struct("<BqBqIdd")
_REMOVE = struct.Struct("<BqI")
_REF = struct.Struct("<Bq")
_ABORT = struct.Struct("<Bqq")
_ADD_SIZE = _ADD.size
_REMOVE_SIZE = _REMOVE.size
# Not a record kind: replay's note to itself to read items back in.
_REFILL = 0
_FORWARD_SIZE = _FORWARD.size
_NAN = float("nan")
_FLUSH_RECORD = _REC.pack(1, zlib.crc32(bytes([FLUSH]))) + bytes([FLUSH])
_SEGMENT_RE = re.compile(r"^(\d{8,})\.seg$")
_QUARANTINE_RE = re.compile(r"^(\d{8,})\.seg\.")


def _segment_name(number: int) -> str:
    return f"{number:08d}.seg"


def _record(payload: bytes) -> bytes:
    return _REC.pack(len(payload), zlib.crc32(payload)) + payload


def _ref_record(kind: int, item_id: int) -> bytes:
    return _record(_REF.pack(kind, item_id))


def _abort_record(item_id: int, seq: int) -> bytes:
    return _record(_ABORT.pack(ABORT, item_id, seq))


def _expiry_out(expiry: float) -> float | None:
    # NaN is the only float that differs from itself.
    return None if expiry != expiry else expiry


class JournalError(Exception):
    """A journal could not do what was asked; ``str()`` is the reason, fit
    for ``SERVER_ERROR <reason>``."""


class _Damage(Exception):
    def __init__(self, offset: int, reason: str, record_end: int) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        # Where the damaged record claims to end: at or past the end of the
        # file, it is what a crash mid-write leaves.
        self.record_end = record_end


def _zeros_from(buf: bytes, pos: int) -> bool:
    """Whether ``buf`` holds only zeros from ``pos`` on: the zeros a
    segment is written ahead with, where its records end."""
    return buf.count(0, pos) == len(buf) - pos


def _records(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Every record of a segment after its header: (offset, kind, payload
    start, payload end), up to zeros to the end.  Raises _Damage at the
    first bad one."""
    size = len(buf)
    pos = HEADER_SIZE
    view = memoryview(buf)
    while pos < size:
        if pos + 8 > size:
            if _zeros_from(buf, pos):
                return
            raise _Damage(pos, "torn record", size)
        n, crc = _REC.unpack_from(buf, pos)
        if n == 0 and _zeros_from(buf, pos):
            return
        start = pos + 8
        end = start + n
        if end > size:
            raise _Damage(pos, "torn record", end)
        if n == 0 or zlib.crc32(view[start:end]) != crc:
            raise _Damage(pos, "corrupt record (checksum mismatch)", end)
        kind = buf[start]
        expected = _PAYLOAD_SIZES.get(kind)
        if expected is None or (n != expected if kind not in _SIZED else n < expected):
            raise _Damage(pos, f"corrupt record (kind {kind}, {n} bytes)", end)
        yield pos, kind, start, end
        pos = end


_PAYLOAD_SIZES = {
    ADD: _ADD_SIZE,
    REMOVE: _REMOVE.size,
    OPEN: _REF.size,
    ABORT: _ABORT.size,
    FLUSH: 1,
    FORWARD: _FORWARD_SIZE,
}
# Kinds whose payload carries data after the fixed part.
_SIZED = frozenset({ADD, FORWARD})


def _header_problem(buf: bytes) -> str | None:
    if buf[:HEADER_SIZE] == FILE_HEADER:
        return None
    if len(buf) < HEADER_SIZE and FILE_HEADER.startswith(buf):
        return "torn header"
    if buf[:4] == MAGIC:
        (version,) = struct.unpack_from("<H", buf, 4) if len(buf) >= 6 else (0,)
        return f"unsupported format version {version}"
    return "not an erq segment"
