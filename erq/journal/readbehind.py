"""Reading back the items of a queue that went past its memory limit: on
the writer thread, in order with the writes (the ``_Read`` step), and the
journal's side of it, its cursor and the reads that wait.

Read-behind
-----------
Past its memory limit a queue journals new items with ``in_memory=False``
and forgets them.  The journal keeps only their count, their bytes and a
cursor (segment, offset) at the first of them; ``read_behind`` reads on
the writer thread from there, after the writes before it.  Nothing is kept
per item on the reactor side, however deep the queue.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from typing import TYPE_CHECKING, BinaryIO

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from erq.config import MiB
from erq.items import Item
from erq.journal.base import _JournalBase
from erq.journal.files import FileOps, _reason, _SegmentFile, _Step, summary_path
from erq.journal.records import (
    _ADD,
    _ADD_SIZE,
    _REC,
    ADD,
    FILE_HEADER,
    HEADER_SIZE,
    JournalError,
    _expiry_out,
    _zeros_from,
)

if TYPE_CHECKING:
    from erq.journal.journal import Journal

# The namespace of the whole package, as before it was split: log lines and
# filters keep their ``erq.journal``.
_log = Logger(namespace="erq.journal")

#: How much the writer thread reads at a time when reading items back.
_READ_CHUNK = 1 * MiB


class _Read(_Step):
    __slots__ = (
        "files",
        "cursor",
        "count",
        "max_bytes",
        "skip",
        "generation",
        "result",
    )

    def __init__(
        self,
        files: list[tuple[int, str]],
        cursor: tuple[int, int],
        count: int,
        max_bytes: int,
        skip: frozenset[int],
        generation: int,
    ) -> None:
        super().__init__()
        self.files = files
        self.cursor = cursor
        self.count = count
        self.max_bytes = max_bytes
        self.skip = skip
        self.generation = generation
        self.result: tuple[list[Item], tuple[int, int]] | Exception | None = None

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        # A read that fails is the read's problem, not the writes'.
        try:
            self.result = _read_behind(
                self.files, self.cursor, self.count, self.max_bytes, self.skip
            )
        except Exception as e:
            self.result = e

    def complete(self, journal: Journal) -> None:
        journal.read_done(self)

    def awaited(self) -> bool:
        return True

    def abandon(self, journal: Journal, reason: str) -> None:
        self.result = JournalError(reason)
        journal.read_done(self)


def _damaged(path: str, reason: str) -> JournalError:
    """Damage met while reading back: the segment's summary goes, so that
    the next start reads the segment and cuts the damage off."""
    with contextlib.suppress(OSError):
        os.unlink(summary_path(path))
    return JournalError(f"{path}: {reason}")


def _read_behind(
    files: list[tuple[int, str]],
    cursor: tuple[int, int],
    count: int,
    max_bytes: int,
    skip: frozenset[int],
) -> tuple[list[Item], tuple[int, int]]:
    """On the writer thread: the next ADDed items from ``cursor``, and where
    the one after them starts."""
    items: list[Item] = []
    total = 0
    number, offset = cursor
    numbers = [n for n, _ in files]
    try:
        index = numbers.index(number)
    except ValueError:
        raise JournalError(f"segment {number} is gone") from None
    while index < len(files):
        number, path = files[index]
        with open(path, "rb") as f:
            if offset == HEADER_SIZE and f.read(HEADER_SIZE) != FILE_HEADER:
                raise _damaged(path, "bad segment header")
            f.seek(offset)
            end, total = _read_segment(
                f, path, offset, items, total, count, max_bytes, skip
            )
        if end is not None:
            return items, (number, end)
        index += 1
        offset = HEADER_SIZE
    return items, (number, offset)


def _read_segment(
    f: BinaryIO,
    path: str,
    offset: int,
    items: list[Item],
    total: int,
    count: int,
    max_bytes: int,
    skip: frozenset[int],
) -> tuple[int | None, int]:
    """The ADDed items of a segment, from ``f`` at ``offset``, onto
    ``items`` (of ``total`` bytes) until there are ``count`` or
    ``max_bytes``: where the next starts (None: the segment ran out
    first), and the bytes of ``items``."""
    unpack_rec = _REC.unpack_from
    unpack_add = _ADD.unpack_from
    crc32 = zlib.crc32
    buf = b""
    base = offset
    pos = 0
    while True:
        available = len(buf) - pos
        if available < 8:
            more = f.read(_READ_CHUNK)
            if not more:
                if available and not _zeros_from(buf, pos):
                    raise _damaged(path, f"torn record at {base + pos}")
                return None, total
            buf = buf[pos:] + more
            base += pos
            pos = 0
            continue
        n, crc = unpack_rec(buf, pos)
        if n == 0:
            # The zeros written ahead: no more records here.
            return None, total
        if available < 8 + n:
            more = f.read(max(_READ_CHUNK, 8 + n - available))
            if not more:
                raise _damaged(path, f"torn record at {base + pos}")
            buf = buf[pos:] + more
            base += pos
            pos = 0
            continue
        start = pos + 8
        end = start + n
        if crc32(memoryview(buf)[start:end]) != crc:
            raise _damaged(path, f"corrupt record at {base + pos}")
        pos = end
        if buf[start] != ADD:
            continue
        _, item_id, flags, expiry, added = unpack_add(buf, start)
        if item_id in skip:
            continue
        data = buf[start + _ADD_SIZE : end]
        items.append(Item(item_id, data, flags, _expiry_out(expiry), added))
        total += n - _ADD_SIZE
        if len(items) >= count or total >= max_bytes:
            return base + pos, total


class _ReadBehind(_JournalBase):
    """The read-behind of a ``Journal``: the reads that wait, one ``_Read``
    step at a time, and the cursor each moves on."""

    def read_behind(self, max_bytes: int) -> Deferred[list[Item]]:
        d: Deferred[list[Item]] = Deferred()
        self._reads.append((max(max_bytes, 1), d))
        self._next_read()
        self._writer.urge()
        return d

    def _next_read(self) -> None:
        while self._read_step is None and self._reads:
            max_bytes, d = self._reads[0]
            cursor = self._cursor
            if self._state or not self._behind_count or cursor is None:
                self._reads.popleft()
                d.callback([])
                continue
            files = [
                (s.number, s.file.path) for s in self._segments if s.number >= cursor[0]
            ]
            if files and files[0][0] != cursor[0]:
                # The cursor's segment was deleted: it held no live item, so
                # no behind item either; they start in the next one.
                cursor = self._cursor = (files[0][0], HEADER_SIZE)
            step = _Read(
                files,
                cursor,
                self._behind_count,
                max_bytes,
                frozenset(self._skip),
                self._generation,
            )
            self._read_step = step
            self._add_step(step)
            self._writer.urge()

    def read_done(self, step: _Read) -> None:
        self._read_step = None
        _, d = self._reads.popleft()
        result = step.result
        if isinstance(result, Exception):
            reason = _reason(result)
            _log.error(
                "journal {directory}: reading items back failed: {reason}",
                directory=self.directory,
                reason=reason,
            )
            d.errback(JournalError(reason))
        elif result is None or step.generation != self._generation or self._state:
            d.callback([])
        else:
            items, cursor = result
            if not items:
                # The records ran out before the count did (a segment
                # damaged or removed behind the server's back): asking
                # again would find nothing either.
                _log.error(
                    "journal {directory}: {count} items behind memory not "
                    "found on disk",
                    directory=self.directory,
                    count=self._behind_count,
                )
            self._behind_count -= len(items) if items else self._behind_count
            self._behind_bytes -= sum(len(item.data) for item in items)
            if self._behind_count <= 0:
                self._behind_count = 0
                self._behind_bytes = 0
                self._cursor = None
                self._skip.clear()
            else:
                self._cursor = cursor
                if self._skip and items:
                    last = items[-1].id
                    self._skip = {i for i in self._skip if i > last}
            d.callback(items)
        self._next_read()
        self._wake()
