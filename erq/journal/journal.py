"""One queue's journal (``Journal``): what its queue does, turned into
records added to the writer's next batch; and what becomes of them when the
batch comes back, written or failed.

The state and the appending of records are in ``erq.journal.base``; the
class's other roles are in their own modules: ``erq.journal.compaction``
(dead segments deleted), ``erq.journal.readbehind`` (items read back from
disk) and ``erq.journal.takeover`` (the start from what replay, in
``erq.journal.replay``, found on disk).

Failed writes
-------------
A write or fsync that fails (a full disk, a read-only file system) is
undone by cutting the file back to where its good bytes end, and the error
is logged once.  Nothing that was acknowledged is dropped: the batch's
records go out again with the next batch (or after ``retry_delay``), so
once the disk takes writes again the journal says exactly what the queue
did; the last chance is the writer's ``stop``, which tries once more.  The
durable adds of the failed batch are refused (their Deferreds fail with
``JournalError``, and the queue never hands their items out), and the
journal records their removal right after them, so that the retried ADD
records bring none of them back.  Until a batch of the journal is written
again, its ``add`` fails at once, whatever the sync policy, so that nothing
is acknowledged that the disk may never hold and memory does not fill with
records waiting for a dead disk.  Removals, opens and aborts are still
taken and wait with the retried records: gets go on from memory.
"""

from __future__ import annotations

import zlib

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from erq.durable import Durable
from erq.items import Item
from erq.journal import records as record_format
from erq.journal.base import _CLOSED, _ERASED, _JournalBase
from erq.journal.compaction import _Compaction
from erq.journal.files import (
    _Added,
    _Chunk,
    _Close,
    _reason,
    _Step,
    _Sync,
    _Write,
    summary_step,
)
from erq.journal.hot import add_record as _add_record_in_c
from erq.journal.hot import remove as _remove_in_c
from erq.journal.readbehind import _ReadBehind
from erq.journal.records import (
    _ADD_SIZE,
    _FLUSH_RECORD,
    _NAN,
    _REMOVE_SIZE,
    ADD,
    OPEN,
    REMOVE,
    JournalError,
    _abort_record,
    _record,
    _ref_record,
)
from erq.journal.summaries import INDEX_EVERY
from erq.journal.takeover import _Replaying

# Assigned, not imported: a method call on an imported name compiles as a
# call of a module's function (an attribute load, then a call, which makes a
# bound method each time); on an assigned name it compiles to the cheaper
# method call.  These calls are on hot paths.
_ADD = record_format._ADD
_REC = record_format._REC
_REMOVE = record_format._REMOVE
#: A REMOVE record's bytes in its segment, framing included.
_REMOVE_RECORD_SIZE = 8 + _REMOVE_SIZE
crc32 = zlib.crc32

# The namespace of the whole package, as before it was split.
_log = Logger(namespace="erq.journal")


class Journal(_Replaying, _ReadBehind, _Compaction, _JournalBase):
    """The journal of one queue, in its own directory.

    Implements ``erq.queue.QueueJournal``.  Every method is called on the
    reactor thread.  For an existing directory call ``replay`` first, once,
    before anything else; a journal that is never replayed starts empty.
    """

    # Whether the open segment's summary was asked for (see
    # ``summarize_open_segment``): once is enough.
    _open_summarized = False

    # -- what the queue calls ---------------------------------------------

    def add(self, item: Item, in_memory: bool = True) -> Deferred[None] | None:
        if self._state:
            return fail(JournalError("journal closed")) if self._always else None
        if self._failing is not None:
            return fail(JournalError(self._failing))
        write = self._add_record(item, in_memory)
        if self._always:
            return self._added(write, ((item, in_memory),))
        # _added's other case, inlined: this is every set.
        self._writer.wake()
        return None

    def add_many(
        self, items: list[Item], in_memory: list[bool]
    ) -> Deferred[None] | None:
        if self._state:
            return fail(JournalError("journal closed")) if self._always else None
        if self._failing is not None:
            return fail(JournalError(self._failing))
        write = None
        for item, held in zip(items, in_memory, strict=True):
            write = self._add_record(item, held)
        if write is None:
            return None
        return self._added(write, list(zip(items, in_memory, strict=True)))

    def _added(self, write: _Write, added: _Added) -> Deferred[None] | None:
        """Records were added up to ``write``: a Deferred for their
        durability when the policy waits for it (the write's steps run in
        order, so the last one's waiters fire once all are done)."""
        if self._always:
            d = Durable()
            d.cohort = self.cohort
            write.waiters.append((d, added))
            self._writer.urge()
            return d
        self._writer.wake()
        return None

    def _add_record(self, item: Item, in_memory: bool) -> _Write:
        data = item.data
        length = len(data)
        expiry = item.expiry
        item_id = item.id
        record = (
            None
            if _add_record_in_c is None
            else _add_record_in_c(item_id, item.flags, expiry, item.added, data)
        )
        size = _ADD_SIZE + length
        if record is None:
            head = _ADD.pack(
                ADD, item_id, item.flags, _NAN if expiry is None else expiry, item.added
            )
            record = _REC.pack(size, crc32(data, crc32(head))) + head
        segment = self._current
        if segment is None or segment.size >= self._segment_size:
            segment, offset, write = self._append(record, data)
        else:
            # _append's common case, inlined: this is the hottest path
            # (and, under ``always``, so is the first record of a batch).
            current = self._write
            if current is None or current.file is not segment.file:
                write = self._new_write(segment)
            else:
                write = current
            offset = segment.size
            bufs = write.bufs
            bufs.append(record)
            bufs.append(data)
            size += 8
            segment.size = offset + size
            self._size += size
        write.held += length
        self._writer.backlog += length
        if item_id > self._max_native:
            self._max_native = item_id
            if segment.first_id < 0:
                self._first_add(segment, item_id)
            segment.last_id = item_id
        else:
            # Out of id order: the range index cannot find it (nor can
            # replay from the summary).
            self._forwarded[item_id] = segment
            if segment.summary is not None:
                segment.summary.complex = True
        segment.live += 1
        summary = segment.summary
        if summary is not None:
            adds = summary.adds
            if adds % INDEX_EVERY:
                # SummaryBuilder.add's common case, inlined; its ids are the
                # segment's (see ``summary_step``).
                summary.adds = adds + 1
                summary.add_bytes += length
            else:
                summary.add(item_id, length)
        if not in_memory:
            if not self._behind_count:
                self._cursor = (segment.number, offset)
            self._behind_count += 1
            self._behind_bytes += length
        elif self._behind_count:
            # In memory while older items are still on disk: the reader
            # must not hand it out a second time.
            self._skip.add(item_id)
        return write

    def remove(self, item: Item) -> None:
        if self._state:
            return
        if _remove_in_c is not None and _remove_in_c(
            item,
            self._current,
            self._write,
            self._segment_size,
            self._ranged,
            self._segments,
            self._open or self._prefix or self._forwarded,
        ):
            # The common case below, done in C (see ``erq.journal.hot``).
            self._size += _REMOVE_RECORD_SIZE
            self._writer.wake()
            return
        item_id = item.id
        size = len(item.data)
        payload = _REMOVE.pack(REMOVE, item_id, size)
        record = _REC.pack(_REMOVE_SIZE, crc32(payload)) + payload
        segment = self._current
        write = self._write
        if (
            segment is None
            or write is None
            or segment.size >= self._segment_size
            or write.file is not segment.file
        ):
            segment = self._append(record)[0]
        else:
            # _append's common case, inlined: this is every get.
            write.bufs.append(record)
            segment.size += _REMOVE_RECORD_SIZE
            self._size += _REMOVE_RECORD_SIZE
        summary = segment.summary
        if summary is not None:
            if item_id == summary.run_last + 1 and item_id < summary.run_limit:
                # SummaryBuilder.remove's common case, inlined.
                summary.run_last = item_id
                summary.run_bytes += size
            else:
                summary.remove(item_id, size)
        ranged = self._ranged
        first = ranged[0] if ranged else None
        if (
            first is not None
            and first.first_id <= item_id <= first.last_id
            and not self._open
            and not self._prefix
            and not self._forwarded
        ):
            # _forget's common case, inlined: an item of the oldest segment,
            # neither open nor aborted nor forwarded.
            if first.live > 0:
                first.live -= 1
        else:
            self._forget(item_id)
        oldest = self._segments[0] if self._segments else None
        if (
            oldest is not None
            and oldest.live <= oldest.pinned
            and oldest is not self._current
        ):
            # _compact_if_dead, inlined.
            self._compact()
        self._writer.wake()

    def remove_many(self, items: list[Item]) -> None:
        if self._state or not items:
            return
        summary = self._append(
            b"".join(
                [
                    _record(_REMOVE.pack(REMOVE, item.id, len(item.data)))
                    for item in items
                ]
            )
        )[0].summary
        if summary is not None:
            summary.remove_items(items)
        for item in items:
            self._forget(item.id)
        self._compact_if_dead()
        self._wake()

    def retract(self, added: _Added) -> None:
        """Durable adds failed, so their items are not in the queue: record
        their removal after them, so that a later write of the retried ADD
        records brings none of them back (see "Failed writes")."""
        if self._state:
            return
        records = []
        for item, in_memory in added:
            size = len(item.data)
            records.append(_record(_REMOVE.pack(REMOVE, item.id, size)))
            if not in_memory and self._behind_count:
                # The reader must not hand it out.
                self._skip.add(item.id)
                self._behind_count -= 1
                self._behind_bytes -= size
                if not self._behind_count:
                    self._behind_bytes = 0
                    self._cursor = None
                    self._skip.clear()
            self._forget(item.id)
        summary = self._append(b"".join(records))[0].summary
        if summary is not None:
            summary.remove_items([item for item, _ in added])
        self._compact_if_dead()

    def open(self, item: Item) -> None:
        if self._state:
            return
        item_id = item.id
        summary = self._append(_ref_record(OPEN, item_id))[0].summary
        if summary is not None:
            summary.open(item_id)
        if self._prefix and self._prefix.pop(item_id, None) is not None:
            del self._abort_seqs[item_id]
            self._open[item_id] = item
        elif item_id not in self._open:
            self._open[item_id] = item
            segment = self._locate(item_id)
            if segment is not None:
                segment.pinned += 1
        self._wake()

    def abort(self, item: Item) -> None:
        if self._state:
            return
        item_id = item.id
        seq = self._next_seq
        self._next_seq += 1
        summary = self._append(_abort_record(item_id, seq))[0].summary
        if summary is not None:
            summary.abort(item_id, seq)
        if self._open.pop(item_id, None) is not None:
            self._prefix[item_id] = item
            self._abort_seqs[item_id] = seq
        self._wake()

    def flush(self) -> None:
        if self._state:
            return
        summary = self._append(_FLUSH_RECORD)[0].summary
        if summary is not None:
            summary.flush()
        for item_id in self._prefix:
            segment = self._locate(item_id)
            if segment is not None and segment.pinned > 0:
                segment.pinned -= 1
            self._forwarded.pop(item_id, None)
        self._prefix.clear()
        self._abort_seqs.clear()
        for segment in self._segments:
            segment.live = segment.pinned
        self._behind_count = 0
        self._behind_bytes = 0
        self._cursor = None
        self._skip.clear()
        self._generation += 1
        self._compact()
        self._wake()

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Write what is pending, then sync and close this queue's files."""
        if self._closed is not None:
            return _chain(self._closed)
        self.summarize_open_segment()
        self._state = _CLOSED
        self._cancel_sync_timer()
        step = _Close([s.file for s in self._segments], None)
        self._add_step(step)
        self._closed = step.deferred
        self._writer.urge()
        return _chain(step.deferred)

    def summarize_open_segment(self) -> None:
        """The open segment gets a summary too as the journal closes or the
        server stops, so that the next start need not read it either
        (appends after it, a crash after a restart, leave a segment that
        does not match it, and the segment is read)."""
        current = self._current
        if self._state or current is None or self._open_summarized:
            return
        self._open_summarized = True
        self._add_step(summary_step(current, self._firsts, whole=True))

    def erase(self) -> Deferred[None]:
        """Delete the queue's directory and files; nothing is written after
        this.  For ``delete <queue>``."""
        if self._state == _ERASED and self._closed is not None:
            return _chain(self._closed)
        self._state = _ERASED
        self._cancel_sync_timer()
        step = _Close([s.file for s in self._segments], self.directory)
        self._add_step(step)
        self._closed = step.deferred
        self._segments = []
        self._firsts = []
        self._ranged = []
        self._forwarded = {}
        self._current = None
        self._size = 0
        self._writer.urge()
        return _chain(step.deferred)

    # -- internals: what comes back from the writer -----------------------------

    def chunk_done(self, chunk: _Chunk) -> _Chunk | None:
        """A chunk came back from the writer thread.  Returns the pending
        chunk that now holds the steps to retry, if any."""
        error = chunk.error
        if error is None:
            if self._failing is not None:
                self._failing = None
                _log.info(
                    "journal {directory}: writing again", directory=self.directory
                )
            for step in chunk.steps:
                # A sync has nothing to complete, and every durable batch
                # has one.
                if type(step) is not _Sync:
                    step.complete(self)
            return None
        reason = _reason(error)
        if self._failing is None:
            _log.error(
                "journal {directory}: {reason}; sets are refused until a "
                "later batch is written",
                directory=self.directory,
                reason=reason,
            )
        self._failing = reason
        redo: list[_Step] = []
        for step in chunk.steps:
            if step.done:
                step.complete(self)
            elif isinstance(step, _Sync) and step.auto:
                continue
            else:
                if isinstance(step, _Write):
                    step.fail_waiters(self, reason)
                redo.append(step)
        if self._writer.stopping:
            if self._retried_at_stop:
                for step in redo:
                    step.abandon(self, reason)
                return None
            # A batch that failed before the stop came back after it: the
            # disk may have room by now, and this is the last chance to
            # write what was acknowledged and consumed.
            self._retried_at_stop = True
        # Everything that did not make it goes first in the next chunk, in
        # order: nothing journaled is dropped, and deletes and reads still
        # come after the writes they depend on.
        next_chunk = self._get_chunk()
        next_chunk.steps[:0] = redo
        for step in redo:
            if isinstance(step, _Write):
                next_chunk.to_sync[step.file] = None
        self._writer.schedule_retry()
        return next_chunk


def _chain(d: Deferred[None]) -> Deferred[None]:
    """A fresh Deferred that fires like ``d``, so every caller gets its own."""
    result: Deferred[None] = Deferred()

    def passthrough(value: object) -> object:
        if isinstance(value, Failure):
            result.errback(value)
        else:
            result.callback(None)
        return value

    d.addBoth(passthrough)
    # The original's own failure is reported through the chained ones.
    d.addErrback(lambda _: None)
    return result
