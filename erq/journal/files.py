"""What the writer thread does to files: every file operation
(``FileOps``), the segment files it keeps open, and the steps of a batch,
run in order for each journal and rolled back when one fails.

The steps are made on the reactor thread (by ``erq.journal.journal``), run
on the writer thread (``_run_batch``), and completed back on the reactor;
only the thread touches the files.

Zeros ahead
-----------
An fsync after an append must also record the file's new size in the file
system's own journal, which here makes it about a third slower than one
after an overwrite.  So where every batch is synced (``always``), the
writer fills the segment with zeros ahead of its appends (up to 1 MiB, and
never past the segment's size), and the appends then overwrite them: one
slow fsync per mebibyte instead of one per batch.  Only the Python loop
writes zeros, after a small append (a big one costs its data more than its
metadata); the engine's appends stay inside them.  Zeros at the end of a
segment are where its records end (a record's length is never zero), both
for replay and for reading back; a segment is cut back to its records when
it is closed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from erq.config import MiB
from erq.datadir import FILE_MODE, make_private_dir, private_opener
from erq.durable import Durable
from erq.items import Item
from erq.journal.names import NAME_FILE
from erq.journal.records import JournalError
from erq.journal.summaries import (
    Summary,
    SummaryBuilder,
    bound_summary,
    summarize_part,
)

if TYPE_CHECKING:
    from erq.journal.journal import Journal
    from erq.journal.segments import _Segment

#: A finished batch that nothing waits on is taken back by the reactor with
#: its next record; past this many bytes written, at once instead.
_LINGER_BYTES = 1 * MiB
#: How far past its appends the writer fills a synced segment with zeros,
#: and the largest append that does so (see "Zeros ahead" above).
_ZERO_AHEAD = 1 * MiB
_SMALL_APPEND = 64 * 1024
_ZEROS = bytes(_ZERO_AHEAD)


class FileOps:
    """Every file operation the writer thread performs.  Tests pass a
    subclass that counts syncs or fails on demand."""

    def open(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def device(self, fd: int) -> int:
        """The device of an open file (-1 if it cannot be told)."""
        try:
            return os.fstat(fd).st_dev
        except OSError:
            return -1

    def fsync(self, fd: int) -> None:
        # fdatasync also flushes the file size, which is what appends change.
        os.fdatasync(fd)

    def truncate(self, fd: int, length: int) -> None:
        """Cut the file at ``length``; the next write goes there."""
        os.ftruncate(fd, length)
        os.lseek(fd, length, os.SEEK_SET)

    def zero(self, fd: int, offset: int, length: int) -> None:
        """Write ``length`` zeros at ``offset``, where the next write goes
        stays where it was."""
        view = memoryview(_ZEROS)[:length]
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def close(self, fd: int) -> None:
        os.close(fd)

    def unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def makedirs(self, path: str) -> None:
        make_private_dir(path)

    def write_file(self, path: str, data: bytes, durable: bool = True) -> None:
        """Replace a small file whole; ``durable``: its data is synced
        before it takes the name (not needed for a file that is checked
        when read, and ignored if torn)."""
        temporary = path + ".tmp"
        # One left by a crash would keep its mode: make a new one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        with open(temporary, "xb", opener=private_opener) as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temporary, path)

    def rmtree(self, path: str) -> None:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass


class _SegmentFile:
    """A segment file as the writer thread sees it.  Made on the reactor
    thread; after that only the writer thread touches it."""

    __slots__ = (
        "path",
        "fd",
        "offset",
        "fresh",
        "needs_cut",
        "zeroed",
        "covered",
        "device",
        "written_out",
    )

    def __init__(self, path: str, offset: int, fresh: bool) -> None:
        self.path = path
        self.fd: int | None = None
        # Where the good bytes end; the next write goes there.
        self.offset = offset
        # Created but its directory entry not yet synced.
        self.fresh = fresh
        # Bytes past ``offset`` may be on disk (a write failed and could not
        # be undone yet): cut them before writing again.
        self.needs_cut = False
        # Where the zeros written ahead of the appends end (see "Zeros
        # ahead"); at or before ``offset``, there are none.
        self.zeroed = 0
        # Where the bytes end that an fdatasync of the engine has made
        # durable, allocation and all: appends before it overwrite only
        # (see "shared" syncs in ``erq.journal.engine``).
        self.covered = 0
        # The device of the file, asked once as it is opened, so that the
        # engine need not ask it each batch; -1: not known.
        self.device = -1
        # Where the bytes end that the engine was last asked to sync or to
        # start writing out (see "Writing out what is not synced" in
        # ``erq.journal.engine``).
        self.written_out = offset


def _cut_file(f: _SegmentFile, fd: int, offset: int, ops: FileOps) -> None:
    ops.truncate(fd, offset)
    f.zeroed = offset
    # The blocks past the cut are gone: written again, they are new.
    f.covered = min(f.covered, offset)
    f.written_out = min(f.written_out, offset)


def _open_segment(f: _SegmentFile, ops: FileOps, files: set[_SegmentFile]) -> int:
    try:
        fd = ops.open(f.path)
    except FileNotFoundError:
        ops.makedirs(os.path.dirname(f.path))
        fd = ops.open(f.path)
    f.fd = fd
    f.device = ops.device(fd)
    # Whatever lies past the good offset (a failed write from before a
    # restart of the writer, a stale file) is not ours.
    f.needs_cut = True
    files.add(f)
    return fd


def _cut_zeros(f: _SegmentFile, fd: int, ops: FileOps) -> None:
    """Drop the zeros past a file's appends, as it is closed."""
    try:
        _cut_file(f, fd, f.offset, ops)
    except OSError:
        # Harmless: replay takes zeros at the end of a segment as its end.
        pass


def _sync_file(f: _SegmentFile, ops: FileOps) -> None:
    if f.fd is None:
        return
    ops.fsync(f.fd)
    f.written_out = f.offset
    if f.fresh:
        ops.fsync_dir(os.path.dirname(f.path))
        f.fresh = False


class _Step:
    """One thing the writer thread does for a journal, in order."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        """Do it on the writer thread; an OSError fails the chunk."""

    def synced_file(self) -> _SegmentFile | None:
        """The file this step makes durable, if any."""
        return None

    def complete(self, journal: Journal) -> None:
        """Back on the reactor thread, after the step ran."""

    def awaited(self) -> bool:
        """On the writer thread, after the step ran: whether something on
        the reactor waits for ``complete`` (so the reactor must be woken)."""
        return False

    def abandon(self, journal: Journal, reason: str) -> None:
        """Back on the reactor thread: the step will never run."""


class _Write(_Step):
    __slots__ = ("file", "bufs", "waiters", "offset_before", "ahead", "held")

    def __init__(self, file: _SegmentFile) -> None:
        # Not ``super().__init__()``: one of these is made per batch.
        self.done = False
        self.file = file
        self.bufs: list[bytes] = []
        # Durable adds waiting for this write and its sync, each with its
        # items (and whether each is held in memory), retracted if it fails.
        self.waiters: list[tuple[Durable, _Added]] = []
        self.offset_before = -1
        # Where zeros written ahead of the appends may reach (the end of the
        # segment), when the file is synced after every batch; 0: none.
        self.ahead = 0
        # Bytes of items in ``bufs``, counted in the writer's backlog.
        self.held = 0

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        f = self.file
        self.offset_before = -1
        fd = f.fd
        if fd is None:
            fd = _open_segment(f, ops, files)
        if f.needs_cut:
            _cut_file(f, fd, f.offset, ops)
            f.needs_cut = False
        data = b"".join(self.bufs)
        self.bufs = [data]
        self.offset_before = f.offset
        ops.write(fd, data)
        f.offset += len(data)
        if f.offset > f.zeroed and len(data) <= _SMALL_APPEND:
            end = min(f.offset + _ZERO_AHEAD, self.ahead)
            if end > f.offset:
                try:
                    ops.zero(fd, f.offset, end - f.offset)
                except OSError:
                    # Only a matter of speed: appends past the zeros are as
                    # good, and replay takes a partial run of zeros too.
                    pass
                f.zeroed = end

    def complete(self, journal: Journal) -> None:
        journal.release_backlog(self.held)
        self.held = 0
        waiters = self.waiters
        self.waiters = []
        for waiter, _ in waiters:
            waiter.callback(None)

    def awaited(self) -> bool:
        return bool(self.waiters)

    def fail_waiters(self, journal: Journal, reason: str) -> None:
        """The durable adds waiting for this write failed: the journal
        records that their items are gone, then their Deferreds fail."""
        waiters = self.waiters
        self.waiters = []
        for _, added in waiters:
            journal.retract(added)
        for waiter, _ in waiters:
            waiter.errback(JournalError(reason))

    def abandon(self, journal: Journal, reason: str) -> None:
        journal.release_backlog(self.held)
        self.held = 0
        self.fail_waiters(journal, reason)


#: Items of one durable add (or run of adds), each with whether the queue
#: holds it in memory.
_Added = Sequence[tuple[Item, bool]]


class _Sync(_Step):
    __slots__ = ("file", "auto")

    def __init__(self, file: _SegmentFile, auto: bool) -> None:
        # As ``_Write``: one per file per batch.
        self.done = False
        self.file = file
        # Added by the sync policy when the batch left; a retry adds its own.
        self.auto = auto

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        _sync_file(self.file, ops)

    def synced_file(self) -> _SegmentFile | None:
        return self.file


class _Finish(_Step):
    """A full segment: sync it (whatever the policy, so that only the last
    segment can ever have a torn tail) and close it."""

    __slots__ = ("file",)

    def __init__(self, file: _SegmentFile) -> None:
        super().__init__()
        self.file = file

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        f = self.file
        if f.fd is None:
            return
        if f.zeroed > f.offset:
            _cut_zeros(f, f.fd, ops)
        _sync_file(f, ops)
        fd = f.fd
        f.fd = None
        files.discard(f)
        ops.close(fd)

    def synced_file(self) -> _SegmentFile | None:
        return self.file


def summary_path(segment_path: str) -> str:
    """Where a segment's summary goes (see ``erq.journal.summaries``)."""
    return segment_path[: -len(".seg")] + ".sum"


class _WriteSummary(_Step):
    """Write the summary of a closed segment beside it, for replay: built
    as its records were appended, so only its ends are read, to bind it to
    the segment.  Only a matter of speed: a summary that cannot be written
    is not written."""

    __slots__ = ("path", "summary")

    def __init__(self, path: str, summary: Summary) -> None:
        super().__init__()
        self.path = path
        self.summary = summary

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        data = bound_summary(self.path, self.summary)
        if data is not None:
            _write_summary(ops, self.path, data)


class _Summarize(_Step):
    """Summarize a closed segment whose records this journal did not see
    appended (one found at start) by reading it, one slice per batch, so
    that no batch waits long for it; the summary is written once the last
    slice is read."""

    __slots__ = ("path", "builder", "whole", "more")

    def __init__(self, path: str, builder: SummaryBuilder, whole: bool = False) -> None:
        super().__init__()
        self.path = path
        self.builder = builder
        # All of it now: the journal is closing.
        self.whole = whole
        self.more = False

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        result = summarize_part(self.path, self.builder)
        while self.whole and result is True:
            result = summarize_part(self.path, self.builder)
        self.more = result is True
        if isinstance(result, Summary):
            data = bound_summary(self.path, result)
            if data is not None:
                _write_summary(ops, self.path, data)

    def awaited(self) -> bool:
        return self.more

    def complete(self, journal: Journal) -> None:
        if self.more and not journal._state:
            journal._add_step(_Summarize(self.path, self.builder))
            journal._wake()


def summary_step(
    segment: _Segment, boundaries: list[int], whole: bool = False
) -> _Step:
    """The step that writes a segment's summary as it closes (or its
    journal does): the one built as its records were appended, if it saw
    them all, or else one read from the segment, a slice per batch (all at
    once when ``whole``)."""
    builder = segment.summary
    segment.summary = None
    if builder is not None and segment.last_id > builder.last_id:
        # The journal keeps the ids of a segment's ADDs; its builder only
        # every so often (see ``Journal._add_record``).
        builder.last_id = segment.last_id
    if builder is not None and builder.end == segment.size:
        return _WriteSummary(segment.file.path, builder.summary(builder.end))
    return _Summarize(segment.file.path, SummaryBuilder(list(boundaries)), whole)


def _write_summary(ops: FileOps, segment_path: str, data: bytes) -> None:
    try:
        # A summary checks itself: one torn by a crash is ignored.
        ops.write_file(summary_path(segment_path), data, durable=False)
    except OSError:
        pass


class _Delete(_Step):
    """Delete a dead segment, once the forwarded copies of its items are
    durable; its summary first, so that none outlives it."""

    __slots__ = ("file", "sync", "sync_dir")

    def __init__(
        self, file: _SegmentFile, sync: _SegmentFile | None, sync_dir: bool
    ) -> None:
        super().__init__()
        self.file = file
        self.sync = sync
        self.sync_dir = sync_dir

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        if self.sync is not None:
            _sync_file(self.sync, ops)
        f = self.file
        if f.fd is not None:
            fd = f.fd
            f.fd = None
            files.discard(f)
            ops.close(fd)
        ops.unlink(summary_path(f.path))
        ops.unlink(f.path)
        if self.sync_dir:
            ops.fsync_dir(os.path.dirname(f.path))

    def synced_file(self) -> _SegmentFile | None:
        return self.sync


class _Mkdir(_Step):
    __slots__ = ("directory", "name", "sync")

    def __init__(self, directory: str, name: str | None, sync: bool) -> None:
        super().__init__()
        self.directory = directory
        self.name = name
        self.sync = sync

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        ops.makedirs(self.directory)
        if self.name is not None:
            data = self.name.encode("ascii") + b"\n"
            ops.write_file(os.path.join(self.directory, NAME_FILE), data)
        if self.sync:
            ops.fsync_dir(self.directory)
            ops.fsync_dir(os.path.dirname(os.path.abspath(self.directory)))


class _Close(_Step):
    """Sync and close files; with ``directory``, then delete the directory
    (erase)."""

    __slots__ = ("files", "directory", "deferred", "error")

    def __init__(self, files: list[_SegmentFile], directory: str | None) -> None:
        super().__init__()
        self.files = files
        self.directory = directory
        self.deferred: Deferred[None] = Deferred()
        self.error: Exception | None = None

    def run(self, ops: FileOps, files: set[_SegmentFile]) -> None:
        for f in self.files:
            fd = f.fd
            if fd is None:
                continue
            try:
                if self.directory is None:
                    if f.zeroed > f.offset:
                        _cut_zeros(f, fd, ops)
                    ops.fsync(fd)
            except OSError as e:
                self.error = e
            finally:
                f.fd = None
                files.discard(f)
                try:
                    ops.close(fd)
                except OSError as e:
                    self.error = e
        if self.directory is not None:
            try:
                ops.rmtree(self.directory)
            except OSError as e:
                self.error = e

    def complete(self, journal: Journal) -> None:
        if self.error is None:
            self.deferred.callback(None)
        else:
            self.deferred.errback(JournalError(_reason(self.error)))

    def abandon(self, journal: Journal, reason: str) -> None:
        self.deferred.errback(JournalError(reason))

    def awaited(self) -> bool:
        return True


class _Chunk:
    """One journal's share of a batch: its steps, in order."""

    __slots__ = ("journal", "directory", "steps", "to_sync", "error")

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        # For the writer thread, which does not touch the journal itself.
        self.directory = journal.directory
        self.steps: list[_Step] = []
        # Files written in this chunk and still open: the sync policy
        # decides at dispatch whether they are synced.
        self.to_sync: dict[_SegmentFile, None] = {}
        self.error: BaseException | None = None


def _run_batch(chunks: list[_Chunk], ops: FileOps, files: set[_SegmentFile]) -> None:
    """The writer thread's whole job for one batch."""
    # Two journals share a directory only when a queue was deleted and made
    # again: the new one must not get ahead of the old one's failed steps
    # (its erase among them).
    failed: set[str] = set()
    for chunk in chunks:
        if chunk.directory in failed:
            chunk.error = JournalError("held back behind a failed write")
            continue
        steps = chunk.steps
        for i, step in enumerate(steps):
            try:
                step.run(ops, files)
            except Exception as e:
                # Usually an OSError (a full disk); anything else is a bug,
                # but its half-written bytes must go just the same.
                chunk.error = e
                _roll_back(steps, i, ops)
                failed.add(chunk.directory)
                break
            step.done = True


def _awaited(batch: list[_Chunk]) -> bool:
    """On the writer thread, after a batch: whether the reactor must take it
    back at once.  Yes if something waits on it (a durable add, a read, a
    close) or a step failed (the retry), and for a big batch, so that its
    bytes are not kept until the next record."""
    written = 0
    for chunk in batch:
        if chunk.error is not None:
            return True
        for step in chunk.steps:
            if step.awaited():
                return True
            if type(step) is _Write:
                written += step.file.offset - step.offset_before
    return written > _LINGER_BYTES


def _roll_back(steps: list[_Step], failed: int, ops: FileOps) -> None:
    """Undo the writes of a failed chunk that were meant to be synced and
    were not, so a retry writes them again onto a clean end of file."""
    cut: dict[_SegmentFile, int] = {}
    failing = steps[failed]
    if isinstance(failing, _Write) and failing.offset_before >= 0:
        cut[failing.file] = failing.offset_before
    for j in range(failed):
        step = steps[j]
        if not isinstance(step, _Write) or not step.done:
            continue
        f = step.file
        sync_at = next(
            (k for k in range(j + 1, len(steps)) if steps[k].synced_file() is f),
            None,
        )
        if sync_at is not None and sync_at >= failed:
            step.done = False
            cut[f] = min(cut.get(f, step.offset_before), step.offset_before)
    for f, offset in cut.items():
        f.offset = offset
        f.needs_cut = True
        if f.fd is not None:
            try:
                _cut_file(f, f.fd, offset, ops)
                f.needs_cut = False
            except OSError:
                pass


def _close_all(files: set[_SegmentFile], ops: FileOps) -> list[str]:
    errors: list[str] = []
    for f in list(files):
        fd = f.fd
        if fd is None:
            continue
        if f.zeroed > f.offset:
            _cut_zeros(f, fd, ops)
        try:
            ops.fsync(fd)
        except OSError as e:
            errors.append(f"{f.path}: {_reason(e)}")
        f.fd = None
        try:
            ops.close(fd)
        except OSError as e:
            errors.append(f"{f.path}: {_reason(e)}")
    files.clear()
    return errors


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        text = error.strerror or errno.errorcode.get(error.errno, str(error.errno))
        return text.lower()
    return str(error) or type(error).__name__
