"""What every part of a queue's journal shares: its state, the appending
of records to its current segment (starting the next one when it is full),
and its sync policy.

``Journal`` (``erq.journal.journal``) is this class with each of its other
roles added from the module that owns it: compaction, read-behind, replay.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from erq.config import MiB, SyncPolicy
from erq.items import Item
from erq.journal.cohort import Cohort
from erq.journal.files import (
    _Chunk,
    _Finish,
    _Mkdir,
    _SegmentFile,
    _Step,
    _Sync,
    _Write,
    summary_step,
)
from erq.journal.records import FILE_HEADER, HEADER_SIZE, _segment_name
from erq.journal.segments import _Index, _Segment
from erq.journal.summaries import SummaryBuilder
from erq.journal.writer import JournalWriter, _cancel

if TYPE_CHECKING:
    from erq.journal.readbehind import _Read

# A journal's state: open, or closed (``close``) or erased (``erase``), when
# it takes no more records.
_OPEN_STATE = 0
_CLOSED = 1
_ERASED = 2


class _JournalBase(_Index):
    """The state of one queue's journal, and the appending of its records.
    Every method is called on the reactor thread."""

    def __init__(
        self,
        directory: str,
        writer: JournalWriter,
        sync: SyncPolicy = "always",
        segment_size: int = 16 * MiB,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if sync not in ("always", "never") and not (
            isinstance(sync, int | float) and sync >= 0
        ):
            raise ValueError(f"bad sync policy {sync!r}")
        if name is None and "~" in os.path.basename(directory.rstrip(os.sep)):
            # Only the name file leads back from a hashed directory name.
            raise ValueError("a hashed queue directory needs the queue's name")
        self.directory = directory
        self._writer = writer
        self._reactor = writer.reactor
        #: The connections storing here durably in lock-step (see
        #: ``erq.journal.cohort``).
        self.cohort = Cohort(writer.reactor.seconds, writer.gathering.back)
        self._sync = sync
        self._always = sync == "always"
        self._segment_size = max(segment_size, HEADER_SIZE + 1)
        self._name = name
        self._current: _Segment | None = None
        self._next_number = 1
        # Open reads, in the order they were opened.
        self._open: dict[int, Item] = {}
        # Aborted items queued at the head, and the seq of each one's abort
        # (the highest is the head).
        self._prefix: dict[int, Item] = {}
        self._abort_seqs: dict[int, int] = {}
        self._next_seq = 1
        self._max_native = 0
        # Read-behind: counts and where the first item not in memory is.
        self._behind_count = 0
        self._behind_bytes = 0
        self._cursor: tuple[int, int] | None = None
        # Ids after the cursor that are not behind items (rare: removed
        # before a restart, or added in memory out of turn).
        self._skip: set[int] = set()
        self._generation = 0
        self._reads: deque[tuple[int, Deferred[list[Item]]]] = deque()
        self._read_step: _Read | None = None
        self._chunk: _Chunk | None = None
        self._write: _Write | None = None
        self._size = 0
        self._state = _OPEN_STATE
        self._dir_ready = False
        self._replayed = False
        self._compacting = False
        # Why the last batch of this journal failed, until one is written:
        # meanwhile adds are refused at once.
        self._failing: str | None = None
        # The writer is stopping and this journal's failed steps were
        # retried once already: a second failure gives up on them.
        self._retried_at_stop = False
        self._last_sync = self._reactor.seconds()
        self._unsynced = False
        self._sync_call: IDelayedCall | None = None
        self._closed: Deferred[None] | None = None

    @property
    def sync(self) -> SyncPolicy:
        """When adds are durable; a reload may change it."""
        return self._sync

    @sync.setter
    def sync(self, policy: SyncPolicy) -> None:
        self._sync = policy
        self._always = policy == "always"

    @property
    def size(self) -> int:
        """Bytes of the journal on disk (once pending records are written)."""
        return self._size

    @property
    def failing(self) -> str | None:
        """Why the journal's last write failed, until one succeeds again:
        meanwhile it refuses adds."""
        return self._failing

    # -- internals: appending -------------------------------------------------

    def _get_chunk(self) -> _Chunk:
        chunk = self._chunk
        if chunk is None:
            # Only ``Journal``, which adds its roles to this class, is made;
            # no cast, so that this path runs as it did before the split.
            chunk = self._chunk = _Chunk(self)  # type: ignore[arg-type]
            self._writer.enqueue(chunk)
        return chunk

    def _add_step(self, step: _Step) -> None:
        self._get_chunk().steps.append(step)
        self._write = None

    def _new_write(self, segment: _Segment) -> _Write:
        # ``_get_chunk``, inlined: under ``always`` every batch starts here.
        chunk = self._chunk
        if chunk is None:
            chunk = self._chunk = _Chunk(self)  # type: ignore[arg-type]
            self._writer.enqueue(chunk)
        write = _Write(segment.file)
        if self._always:
            # Set now, not as the batch leaves: whether the engine may take
            # a batch must not change on the way.
            write.ahead = self._segment_size
        chunk.steps.append(write)
        chunk.to_sync[segment.file] = None
        self._write = write
        return write

    def _append(
        self, record: bytes, data: bytes | None = None
    ) -> tuple[_Segment, int, _Write]:
        """Queue a record for the current segment.  Never wakes the writer:
        the public method does that last, once its bookkeeping is done."""
        segment = self._current
        if segment is None or segment.size >= self._segment_size:
            segment = self._rotate()
        write = self._write
        if write is None or write.file is not segment.file:
            write = self._new_write(segment)
        offset = segment.size
        write.bufs.append(record)
        size = len(record)
        if data is not None:
            write.bufs.append(data)
            size += len(data)
        segment.size = offset + size
        self._size += size
        return segment, offset, write

    def _wake(self) -> None:
        self._writer.wake()

    def _rotate(self) -> _Segment:
        old = self._current
        if old is not None:
            self._add_step(_Finish(old.file))
            self._get_chunk().to_sync.pop(old.file, None)
            self._add_step(summary_step(old, self._firsts))
        if not self._dir_ready:
            self._add_step(_Mkdir(self.directory, self._name, self._sync != "never"))
            self._dir_ready = True
        number = self._next_number
        self._next_number += 1
        path = os.path.join(self.directory, _segment_name(number))
        segment = _Segment(number, _SegmentFile(path, 0, fresh=True), HEADER_SIZE)
        segment.summary = SummaryBuilder(self._firsts)
        self._segments.append(segment)
        self._current = segment
        self._new_write(segment).bufs.append(FILE_HEADER)
        self._size += HEADER_SIZE
        if old is not None:
            self._compact()
        return self._current

    # -- internals: compaction --------------------------------------------------

    def _compact(self) -> None:
        """Delete dead segments (see ``erq.journal.compaction``, whose
        ``_Compaction`` gives ``Journal`` this method)."""
        raise NotImplementedError

    # -- internals: the sync policy ---------------------------------------------

    def release_backlog(self, size: int) -> None:
        """Bytes of items that are written now, or never will be."""
        self._writer.backlog -= size

    def seal(self, chunk: _Chunk) -> None:
        """The chunk leaves with a batch: add the syncs the policy asks
        for."""
        if self._chunk is chunk:
            self._chunk = None
            self._write = None
        if not chunk.to_sync or self._state == _ERASED:
            return
        sync = self._sync
        if sync == "never":
            return
        if self._always and self._failing is None:
            # Only durable adds wait for an fsync.  Removals, opens and
            # aborts go unsynced (a crash may deliver such an item once
            # more, as documented), so that a get's record never puts an
            # fsync in front of the next set's; the next add's fsync of the
            # same file covers them.  A failing journal syncs whatever it
            # writes: only an fsync shows that the disk takes data again.
            for step in chunk.steps:
                if type(step) is _Write and step.waiters:
                    break
            else:
                return
        elif sync != "always":
            now = self._reactor.seconds()
            interval = float(sync)
            if now - self._last_sync < interval:
                self._unsynced = True
                if self._sync_call is None:
                    self._sync_call = self._reactor.callLater(
                        self._last_sync + interval - now, self._timed_sync
                    )
                return
            self._last_sync = now
            self._unsynced = False
        for f in chunk.to_sync:
            chunk.steps.append(_Sync(f, True))

    def _timed_sync(self) -> None:
        self._sync_call = None
        if self._state or not self._unsynced or self._current is None:
            return
        self._unsynced = False
        self._last_sync = self._reactor.seconds()
        self._add_step(_Sync(self._current.file, False))
        self._wake()

    def _cancel_sync_timer(self) -> None:
        _cancel(self._sync_call)
        self._sync_call = None
