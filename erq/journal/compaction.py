"""Deleting a queue's dead segments, oldest first, after copying forward
the items still open or aborted in them.

Compaction
----------
Because a queue is FIFO, its oldest segment becomes garbage once every item
added in it is gone; it is then deleted (on the writer thread, in order with
the writes).  Open or aborted items still in it are first copied forward
with FORWARD records.  Segments are only ever deleted oldest first, since a
segment holds REMOVE records for items of older segments.  Liveness is
counted per segment (native id range plus counts, see
``erq.journal.segments``), with a small map for the forwarded items only.
"""

from __future__ import annotations

import zlib

from twisted.logger import Logger

from erq.journal import records as record_format
from erq.journal.base import _JournalBase
from erq.journal.files import _Delete
from erq.journal.records import (
    _NAN,
    FORWARD,
    OPENED,
    QUEUED,
)
from erq.journal.segments import _Segment

# Assigned, not imported: a method call on an imported name compiles as a
# call of a module's function (an attribute load, then a call, which makes a
# bound method each time); on an assigned name it compiles to the cheaper
# method call.  These calls are on hot paths.
_FORWARD = record_format._FORWARD
_REC = record_format._REC

# The namespace of the whole package, as before it was split.
_log = Logger(namespace="erq.journal")


class _Compaction(_JournalBase):
    """The compaction of a ``Journal``: the liveness counts of its segments,
    and the deletion of the dead ones."""

    def _forget(self, item_id: int) -> None:
        """A removed item no longer keeps its segment alive."""
        ranged = self._ranged
        if (
            not self._forwarded
            and ranged
            and ranged[0].first_id <= item_id <= ranged[0].last_id
        ):
            # _locate's common case, inlined: the oldest segment's item.
            segment: _Segment | None = ranged[0]
        else:
            segment = self._locate(item_id)
        pinned = False
        if self._open and self._open.pop(item_id, None) is not None:
            pinned = True
        elif self._prefix and self._prefix.pop(item_id, None) is not None:
            del self._abort_seqs[item_id]
            pinned = True
        if self._forwarded:
            self._forwarded.pop(item_id, None)
        if segment is not None and segment.live > 0:
            segment.live -= 1
            if pinned and segment.pinned > 0:
                segment.pinned -= 1

    def _compact_if_dead(self) -> None:
        oldest = self._segments[0] if self._segments else None
        if (
            oldest is not None
            and oldest.live <= oldest.pinned
            and oldest is not self._current
        ):
            self._compact()

    def _compact(self) -> None:
        """Delete dead segments, oldest first, forwarding what is pinned."""
        if self._compacting:
            return
        self._compacting = True
        # Only segments older than the current one: forwarding may fill the
        # current segment and start another, and a segment holding nothing
        # but fresh forwarded copies must not be forwarded again at once
        # (with tiny segments that would never end).
        current = self._current
        newest = current.number if current is not None else self._next_number
        try:
            segments = self._segments
            while segments and segments[0].number < newest:
                segment = segments[0]
                if segment.live > segment.pinned:
                    break
                forwarded = segment.pinned > 0
                if forwarded:
                    self._forward(segment)
                    if segment.live > 0:
                        # The counts disagree with the open and aborted
                        # items: keeping a segment too long costs disk,
                        # deleting it too early costs items.
                        _log.error(
                            "journal {directory}: segment {number} still has "
                            "{live} live items after forwarding; kept",
                            directory=self.directory,
                            number=segment.number,
                            live=segment.live,
                        )
                        break
                del segments[0]
                if self._ranged and self._ranged[0] is segment:
                    del self._ranged[0]
                    del self._firsts[0]
                self._size -= segment.size
                durable = self._sync != "never"
                current = self._current
                sync = current.file if forwarded and durable and current else None
                self._add_step(_Delete(segment.file, sync, durable))
        finally:
            self._compacting = False

    def _forward(self, segment: _Segment) -> None:
        """Copy the open and aborted items of a dead segment to the current
        one.  Each copy says all replay needs to put the item back where it
        is (open, or queued at the head in abort order), so nothing else is
        rewritten."""
        moving = [
            (item, OPENED, 0)
            for item_id, item in self._open.items()
            if self._locate(item_id) is segment
        ] + [
            (item, QUEUED, self._abort_seqs[item_id])
            for item_id, item in self._prefix.items()
            if self._locate(item_id) is segment
        ]
        for item, state, seq in moving:
            data = item.data
            expiry = item.expiry
            head = _FORWARD.pack(
                FORWARD,
                item.id,
                state,
                seq,
                item.flags,
                _NAN if expiry is None else expiry,
                item.added,
            )
            record = (
                _REC.pack(len(head) + len(data), zlib.crc32(data, zlib.crc32(head)))
                + head
            )
            target, _, _ = self._append(record, data)
            if target.summary is not None:
                target.summary.forward(item.id, state == OPENED, seq, len(data))
            self._forwarded[item.id] = target
            target.live += 1
            target.pinned += 1
            segment.live -= 1
            segment.pinned -= 1
