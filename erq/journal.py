"""Each queue's journal on disk: records, group commit, replay, compaction.

Also the reading back of items that do not fit in memory (read-behind), the
mapping of queue names to directories, and the ``erq-journal`` tool.

Layout
------
Each queue has its own directory under the data directory (named by
``queue_dir_name``).  It holds segment files ``00000001.seg``,
``00000002.seg``, ... numbered in the order they were started, and, when the
queue's name was given, a ``name`` file holding the queue's real name (the
only way back from a hashed directory name).  Nothing else in the directory
is read by the server.

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

Replay applies the records in order to a model of the queue: the body
(items in ADD order), a head of aborted items, and the open reads.  The
aborted head is ordered by abort seq, latest first (what putting each in
front does), so a forwarded copy goes back to its exact place without the
records of its neighbours.  A REMOVE, OPEN or ABORT naming an unknown id is
ignored (its ADD may have been compacted away).  Open reads found at the end
come back at the head of the queue in id order, which is the order they were
queued in (at-least-once), and ABORT records are written so that the disk
says the same.

Damage
------
A record whose length runs past the end of its file is torn; one whose
checksum does not match is corrupt.  Replay of a segment stops at the first
such record and the file is truncated there.  A torn or corrupt last record
at the end of the last segment (followed by nothing, or by zeros only) is
what a crash mid-write leaves, and is just cut.  Anything else (a bad record
in the middle of a segment, or in any but the last segment) cannot come from
a crash, because a segment is fsynced and closed before the next one starts:
it is bit rot or a stray write.  Then the cut bytes are first saved next to
the segment as ``<segment>.cut-<offset>`` for a human to look at, and replay
goes on with the later segments.  Keeping them loses the least acknowledged
data (every item added after the damaged spot is still there) and order
stays sane: items keep their ADD order, and records about items that were
lost in the cut are ignored as unknown.  What can go wrong is bounded by
what the cut held: items added there are lost, and items removed there may
come back once (at-least-once).  A file whose header is not an erq header is
renamed to ``<segment>.bad`` and skipped.

Writing
-------
One ``JournalWriter`` serves every queue of a server.  The reactor encodes
records and appends them to the pending batch; when no batch is in flight,
the batch goes to the writer's single thread at once, and while one batch is
written and fsynced the next one fills (group commit: one thread hop and one
fsync per file per batch).  The thread touches files only.

The thread leaves a finished batch for the reactor and wakes it (with
``callFromThread``) only when something waits for the batch: a durable add,
a read, a close, a failure to retry, or the reactor itself, which has more
to send or is stopping.  Otherwise the reactor takes the batch back, and
runs its completions in order, when it next journals something (before it
looks at what is in flight).  So lock-step requests cost one wake-up of the
thread each, not also one of the reactor.  When the writer runs its own thread,
its one thread runs a loop fed by a ``SimpleQueue``, cheaper to wake than a
pool job.

Appends without the GIL
-----------------------
A Python thread must take the GIL back after every write and fsync, and the
reactor holds it most of the time: each batch then waits for the reactor to
let go, and the reactor waits for the thread to wake.  So when the C
extension ``_erq_writer`` is built (it is optional: without a compiler the
writer works as above), the same thread spends its idle time inside
``Engine.serve``, which never holds the GIL.  The commonest batch, appends
to open segments and their fsyncs, goes to it as a plain list of
``(fd, bytes)`` and ``(fd, None)`` operations; the engine takes every such batch
queued while it was busy as one group (their appends in order, then one
fdatasync per file) and tells the reactor through an eventfd.  Files it
appends to without syncing it has the kernel start writing out at once
(``sync_file_range``): the fsync that closes a full segment, whatever the
policy, then finds little left to write, and does not hold up the appends
behind it while a whole segment goes to disk.  Such batches do not wait for
each other: the next one is queued while one is synced, and the thread
starts on it the moment the fsync returns.  Anything else (opening, cutting
or closing a file, reads, deletes) goes to the Python loop as before, once
the engine's batches are done, so records still reach disk in the order they
were made.  A failed group stops the engine; its batches and those queued
behind it are undone (their files cut back on the next write) and retried on
the Python path, which handles failures as described below.

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

Backlog
-------
The writer counts the bytes of items journaled and not yet written
(``backlog``).  When a connection stores an item past ``max_backlog`` the
protocol stops reading it and asks ``when_drained`` to be told once half is
written; while anyone waits for that, the thread and the engine wake the
reactor after each batch, as they would for a durable add.  So a disk slower
than the producers bounds the server's memory instead of filling it.

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

Read-behind
-----------
Past its memory limit a queue journals new items with ``in_memory=False``
and forgets them.  The journal keeps only their count, their bytes and a
cursor (segment, offset) at the first of them; ``read_behind`` reads on
the writer thread from there, after the writes before it.  Nothing is kept
per item on the reactor side, however deep the queue.

Compaction
----------
Because a queue is FIFO, its oldest segment becomes garbage once every item
added in it is gone; it is then deleted (on the writer thread, in order with
the writes).  Open or aborted items still in it are first copied forward
with FORWARD records.  Segments are only ever deleted oldest first, since a
segment holds REMOVE records for items of older segments.  Liveness is
counted per segment (native id range plus counts), with a small map for the
forwarded items only.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import errno
import gc
import hashlib
import os
import re
import shutil
import signal
import struct
import sys
import threading
import zlib
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from queue import SimpleQueue
from typing import Protocol, TextIO, cast

from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorCore,
    IReactorFDSet,
    IReactorTime,
    IReadDescriptor,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from erq.config import MiB, SyncPolicy
from erq.datadir import (
    FILE_MODE,
    DataDirectoryInUse,
    lock_data_dir_shared,
    make_private_dir,
    private_opener,
)
from erq.items import Item

try:
    from _erq_writer import Engine
except ImportError:  # built without its C extension: the Python loop writes
    Engine = None  # type: ignore[assignment, misc]

__all__ = [
    "FileOps",
    "Journal",
    "JournalError",
    "JournalWriter",
    "Replayed",
    "list_queue_dirs",
    "main",
    "queue_dir",
    "queue_dir_name",
    "queue_name_from_dir",
]

_log = Logger()

# -- record format -------------------------------------------------------

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
#: How much the writer thread reads at a time when reading items back.
_READ_CHUNK = 1 * MiB
#: A finished batch that nothing waits on is taken back by the reactor with
#: its next record; past this many bytes written, at once instead.
_LINGER_BYTES = 1 * MiB
#: How far past its appends the writer fills a synced segment with zeros,
#: and the largest append that does so (see "Zeros ahead" above).
_ZERO_AHEAD = 1 * MiB
_SMALL_APPEND = 64 * 1024
_ZEROS = bytes(_ZERO_AHEAD)
#: Bytes of items a writer may have journaled and not yet written before
#: connections that store more are paused (see ``JournalWriter.backlog``).
MAX_BACKLOG = 16 * MiB
#: How long a server lets records that nothing waits for gather before
#: handing them to the writer thread: a couple of milliseconds turn one
#: thread wake-up per request into one per hundreds of requests, and widen
#: by no more than that the window in which a crash of the process (not of
#: the machine) loses what ``sync_journal = "never"`` acknowledged.
LINGER = 0.002
#: Longest the reactor waits at shutdown for the writer's last batch; past
#: it the process stops without it (as after a crash: replay recovers).
SHUTDOWN_TIMEOUT = 60.0


def _cancel(call: IDelayedCall | None) -> None:
    """Cancel a delayed call that may be pending, or gone, or absent."""
    if call is not None and call.active():
        call.cancel()


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


# -- queue names and directories -------------------------------------------

# Characters that stand for themselves in a directory name: none of them
# changes under case folding, none of them is special to a filesystem.
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.+")
_HEX = frozenset("0123456789abcdef")
_MAX_PLAIN = 250
_HASHED_PREFIX = 150
NAME_FILE = "name"


def _check_queue_name(name: str) -> None:
    if (
        not 1 <= len(name) <= 250
        or name.startswith(".")
        or any(not "!" <= c <= "~" or c == "/" for c in name)
    ):
        raise ValueError(f"bad queue name {name!r}")


def queue_dir_name(name: str) -> str:
    """The directory name of a queue, safe on any filesystem.

    ``[a-z0-9_.+-]`` stand for themselves, an uppercase letter becomes ``^``
    and its lowercase, anything else ``%`` and two lowercase hex digits.  The
    result is lowercase, so two names never share a directory on a
    case-insensitive filesystem, and it cannot start with ``.`` or hold a
    ``/``.  A name whose encoding would pass 250 bytes is cut to a readable
    prefix plus ``~`` and 32 hex digits of its SHA-256 (``~`` never occurs
    otherwise); only the ``name`` file in the directory gives it back.
    Raises ValueError for a name that is not a valid queue name.
    """
    _check_queue_name(name)
    parts = [
        c if c in _KEEP else "^" + c.lower() if "A" <= c <= "Z" else f"%{ord(c):02x}"
        for c in name
    ]
    encoded = "".join(parts)
    if len(encoded) <= _MAX_PLAIN:
        return encoded
    prefix: list[str] = []
    length = 0
    for part in parts:
        if length + len(part) > _HASHED_PREFIX:
            break
        prefix.append(part)
        length += len(part)
    digest = hashlib.sha256(name.encode("ascii")).hexdigest()[:32]
    return "".join(prefix) + "~" + digest


def queue_name_from_dir(dir_name: str) -> str | None:
    """The queue name a directory name stands for, or ``None`` when it is
    hashed (see ``queue_dir_name``) or not a queue directory at all."""
    if "~" in dir_name:
        return None
    out: list[str] = []
    i = 0
    length = len(dir_name)
    while i < length:
        c = dir_name[i]
        if c == "^":
            if i + 1 >= length or not "a" <= dir_name[i + 1] <= "z":
                return None
            out.append(dir_name[i + 1].upper())
            i += 2
        elif c == "%":
            digits = dir_name[i + 1 : i + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                return None
            out.append(chr(int(digits, 16)))
            i += 3
        elif c in _KEEP:
            out.append(c)
            i += 1
        else:
            return None
    name = "".join(out)
    try:
        canonical = queue_dir_name(name)
    except ValueError:
        return None
    return name if canonical == dir_name else None


def queue_dir(data_dir: str, name: str) -> str:
    """The directory of queue ``name`` under ``data_dir``."""
    return os.path.join(data_dir, queue_dir_name(name))


def _read_name_file(directory: str) -> str | None:
    try:
        with open(os.path.join(directory, NAME_FILE), "rb") as f:
            raw = f.read(1024)
    except OSError:
        return None
    try:
        return raw.decode("ascii").rstrip("\n")
    except UnicodeDecodeError:
        return None


def list_queue_dirs(data_dir: str) -> dict[str, str]:
    """Every queue in ``data_dir``: its real name and its directory."""
    found: dict[str, str] = {}
    try:
        entries = list(os.scandir(data_dir))
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        name = _read_name_file(entry.path)
        if name is not None:
            try:
                if queue_dir_name(name) != entry.name:
                    name = None
            except ValueError:
                name = None
        if name is None:
            name = queue_name_from_dir(entry.name)
        if name is not None:
            found[name] = entry.path
    return found


# -- file operations on the writer thread ----------------------------------


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

    def write_file(self, path: str, data: bytes) -> None:
        temporary = path + ".tmp"
        # One left by a crash would keep its mode: make a new one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        with open(temporary, "xb", opener=private_opener) as f:
            f.write(data)
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

    __slots__ = ("path", "fd", "offset", "fresh", "needs_cut", "zeroed")

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


def _cut_file(f: _SegmentFile, fd: int, offset: int, ops: FileOps) -> None:
    ops.truncate(fd, offset)
    f.zeroed = offset


def _open_segment(f: _SegmentFile, ops: FileOps, files: set[_SegmentFile]) -> int:
    try:
        fd = ops.open(f.path)
    except FileNotFoundError:
        ops.makedirs(os.path.dirname(f.path))
        fd = ops.open(f.path)
    f.fd = fd
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
        super().__init__()
        self.file = file
        self.bufs: list[bytes] = []
        # Durable adds waiting for this write and its sync, each with its
        # items (and whether each is held in memory), retracted if it fails.
        self.waiters: list[tuple[Deferred[None], _Added]] = []
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
        journal._writer.backlog -= self.held
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
            journal._retract(added)
        for waiter, _ in waiters:
            waiter.errback(JournalError(reason))

    def abandon(self, journal: Journal, reason: str) -> None:
        journal._writer.backlog -= self.held
        self.held = 0
        self.fail_waiters(journal, reason)


#: Items of one durable add (or run of adds), each with whether the queue
#: holds it in memory.
_Added = Sequence[tuple[Item, bool]]


class _Sync(_Step):
    __slots__ = ("file", "auto")

    def __init__(self, file: _SegmentFile, auto: bool) -> None:
        super().__init__()
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


class _Delete(_Step):
    """Delete a dead segment, once the forwarded copies of its items are
    durable."""

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
        journal._read_done(self)

    def awaited(self) -> bool:
        return True

    def abandon(self, journal: Journal, reason: str) -> None:
        self.result = JournalError(reason)
        journal._read_done(self)


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


# -- the writer --------------------------------------------------------------


class _Reactor(Protocol):
    """What the writer needs of its reactor."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object
    ) -> IDelayedCall: ...

    def callFromThread(
        self, callable: Callable[..., object], *args: object
    ) -> None: ...


class _Pool(Protocol):
    """What the writer needs of a thread pool (a ThreadPool, or a test
    double)."""

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object] | None,
        func: Callable[..., object],
        *args: object,
    ) -> None: ...


#: A job for the writer thread: what to call with the outcome (on the thread),
#: the function and its arguments.
_Job = tuple[
    Callable[[bool, object], object], Callable[..., object], tuple[object, ...]
]


def _serve(jobs: SimpleQueue[_Job | None], engine: Engine | None) -> None:
    """The writer thread's loop, when the writer runs its own thread: the jobs in
    the order they came, until ``None``.  Handing a job over is one put on a
    C queue, instead of a trip through the pool's coordinator.  With an
    engine, the thread runs the engine's batches until a job is put (and
    the engine interrupted)."""
    while True:
        if engine is not None:
            engine.serve()
        job = jobs.get()
        if job is None:
            return
        on_result, func, args = job
        try:
            result = func(*args)
            ok = True
        except BaseException:
            result = Failure()
            ok = False
        try:
            on_result(ok, result)
        except BaseException:
            _log.failure("journal writer thread: reporting a job failed")


def _engine_steps(batch: list[_Chunk]) -> bool:
    """Whether the engine can run this batch: appends to open segment
    files that need no cut, and their fsyncs, of journals not failing."""
    for chunk in batch:
        if chunk.journal._failing is not None:
            return False
        for step in chunk.steps:
            kind = type(step)
            if kind is _Write:
                write = cast(_Write, step)
                f = write.file
                if f.fd is None or f.needs_cut:
                    return False
                if write.ahead > f.zeroed and f.offset + _SMALL_APPEND > f.zeroed:
                    # It may be time to write zeros ahead (the Python loop
                    # does that).
                    size = sum(map(len, write.bufs))
                    if f.offset + size > f.zeroed and size <= _SMALL_APPEND:
                        return False
            elif kind is _Sync:
                # A new file's first fsync also syncs its directory.
                f = cast(_Sync, step).file
                if f.fd is None or f.fresh:
                    return False
            else:
                return False
    return True


class _Engine(Protocol):
    """What the writer needs of the C engine (``_erq_writer.Engine``, or a
    test double)."""

    def submit(self, ops: list[tuple[int, bytes | None]], notify: bool) -> None: ...

    def poll(self, wake: bool) -> list[int]: ...

    def resume(self) -> None: ...

    def interrupt(self) -> None: ...


@implementer(IReadDescriptor)
class _EngineDone:
    """The eventfd through which the engine tells the reactor that batches
    are done."""

    def __init__(self, writer: JournalWriter, fd: int) -> None:
        self.writer = writer
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        self.writer.engine_finished()

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "erq journal writer"


class _Life(enum.Enum):
    """Where a writer is in its life.

    ==========  ===============================  ==========================
    state       records journaled meanwhile      leaves for
    ==========  ===============================  ==========================
    RUNNING     written (the thread starts       STOPPING on ``stop``
                with the first batch)
    STOPPING    written: the last batches        CLOSING once nothing is
                                                 pending or on the thread
    CLOSING     held for a restart, else         STOPPED when the files
                refused                          are closed (RUNNING again
                                                 if ``start`` came meanwhile)
    STOPPED     refused                          RUNNING on ``start``
    ==========  ===============================  ==========================
    """

    RUNNING = "running"
    STOPPING = "stopping"
    CLOSING = "closing"
    STOPPED = "stopped"


class JournalWriter:
    """Writes the journals of every queue of a server on one thread, with
    group commit.  Records reach disk in exactly the order the reactor made
    them.

    The hand-off
    ------------
    A batch is in one of three places: pending on the reactor
    (``_pending``), on the thread's Python loop (``_in_flight``: at most
    one), or in the C engine (``_engine_batches``: any number, oldest
    first).  Which of them may take the next batch is decided in one place,
    ``_send``:

    - while a batch is on the Python loop, nothing else goes anywhere;
    - while the engine has batches, only a batch the engine can run joins
      them; anything else waits until the engine's batches are back;
    - otherwise the batch goes to the engine if it can run it, else to the
      Python loop.

    Finished batches come back in the order they were sent, one at a time:
    while one batch's completions run (``_completing``), no other batch is
    taken back and nothing is sent (what the completions journal joins the
    next batch).  The one exception is decided before the completions run:
    when something waits in what is pending, it is sent first, so that the
    thread writes it while the reactor answers the batch that came back.
    After the completions, whatever finished meanwhile is taken back, then
    what is pending is sent.  A batch is so never forgotten: it leaves
    ``_in_flight`` or ``_engine_batches`` only in ``_collect`` or ``_reap``,
    which run its completions.
    """

    def __init__(
        self,
        reactor: _Reactor,
        pool: _Pool | None = None,
        file_ops: FileOps | None = None,
        retry_delay: float = 1.0,
        linger: float = 0.0,
        engine: _Engine | None = None,
    ) -> None:
        self.reactor = reactor
        # Without a pool the writer runs its own thread (see ``start``).
        self._pool = pool
        self._thread: threading.Thread | None = None
        self._shutdown_trigger: object | None = None
        self.file_ops = file_ops if file_ops is not None else FileOps()
        self.retry_delay = retry_delay
        #: How long records that nothing waits for (removals, adds that are
        #: not synced) may gather on the reactor before they go to the
        #: thread.  When it is not zero, records that are waited for (a
        #: durable add, a read-back) wait for the end of the reactor's turn,
        #: so that everything every connection asked for in one turn shares
        #: a batch.  Zero sends every record at once.
        self.linger = linger
        self._linger_call: IDelayedCall | None = None
        # Something pending is waited for: send it at the end of the turn.
        self._urgent = False
        # The timer above is set for the end of the turn.
        self._linger_urgent = False
        # The timer went off: what is pending goes now.
        self._released = False
        self._pending: list[_Chunk] = []
        # Something new to write; a retry alone waits for the retry timer or
        # the next record, so a full disk is not hammered in a loop.
        self._fresh = False
        self._retry_call: IDelayedCall | None = None
        # Open segment files; only the writer thread touches this set.
        self._files: set[_SegmentFile] = set()
        self._life = _Life.RUNNING
        # ``start`` came while stopping: start again once the files are
        # closed.
        self._restart = False
        self._stop_waiters: list[Deferred[None]] = []
        # The batch on the Python loop, if any.
        self._in_flight: list[_Chunk] | None = None
        # That batch once the thread has finished it, with the failure of a
        # crash: set on the thread, taken back on the reactor (``_collect``).
        self._finished: tuple[list[_Chunk], Failure | None] | None = None
        # The reactor waits for the batch in flight: the thread must wake it.
        self._waiting = False
        # A batch's completions are running (see "The hand-off").
        self._completing = False
        # The writer thread's jobs, while it runs ``_serve`` (own thread).
        self._jobs: SimpleQueue[_Job | None] | None = None
        #: Batches handed to the thread so far.
        self.batches = 0
        # The C engine, while the thread serves it (or one passed in), and
        # the batches it has, oldest first.
        self._engine: _Engine | None = engine
        self._engine_done: _EngineDone | None = None
        self._engine_batches: deque[list[_Chunk]] = deque()
        #: Batches the engine ran.
        self.engine_batches = 0
        #: Bytes of items journaled and not yet written.  Past
        #: ``max_backlog`` (the disk is slower than what comes in),
        #: connections that store more stop being read until it is down to
        #: half (see ``when_drained``): memory stays bounded however fast
        #: producers are.
        self.backlog = 0
        self.max_backlog = MAX_BACKLOG
        self._drain_waiters: list[Callable[[], object]] = []
        self._watching = False

    # -- life ----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (a pool passed in is the caller's to
        start).  A writer can be started again after ``stop``, even before
        the stop has finished."""
        life = self._life
        if life is _Life.STOPPING or life is _Life.CLOSING:
            # What is journaled meanwhile waits for the files to be closed.
            self._restart = True
            return
        self._life = _Life.RUNNING
        if self._pool is not None or self._thread is not None:
            return
        # The thread is a daemon: a writer stuck on a dead disk must not keep
        # the process alive once the reactor has stopped.  A clean stop waits
        # for it through the shutdown trigger below.
        self._jobs = SimpleQueue()
        self._start_engine()
        self._thread = threading.Thread(
            target=_serve,
            args=(self._jobs, self._engine),
            name="erq-journal",
            daemon=True,
        )
        self._thread.start()
        # The reactor waits for the last batch before it stops.
        if IReactorCore.providedBy(self.reactor) and self._shutdown_trigger is None:
            core = cast(IReactorCore, self.reactor)
            self._shutdown_trigger = core.addSystemEventTrigger(
                "before", "shutdown", self._shutdown
            )

    def _start_engine(self) -> None:
        # Only with the real file operations (tests that fake them see every
        # step) and a reactor that can watch the eventfd.
        if (
            Engine is None
            or type(self.file_ops) is not FileOps
            or not IReactorFDSet.providedBy(self.reactor)
        ):
            return
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._engine = Engine(fd)
        self._engine_done = _EngineDone(self, fd)
        cast(IReactorFDSet, self.reactor).addReader(self._engine_done)

    def _stop_engine(self) -> None:
        done = self._engine_done
        if self._engine is None or done is None:
            return
        self._engine.interrupt()
        self._engine = self._engine_done = None
        cast(IReactorFDSet, self.reactor).removeReader(done)
        os.close(done.fd)

    @property
    def uses_engine(self) -> bool:
        """Whether appends and fsyncs run in the C engine."""
        return self._engine is not None

    def _shutdown(self) -> Deferred[None]:
        self._shutdown_trigger = None
        stopped: Deferred[None] = Deferred()
        self.stop().chainDeferred(stopped)

        def gave_up(failure: Failure) -> None:
            failure.trap(TimeoutError)
            _log.error(
                "journal writer did not finish within {seconds} s; stopping without it",
                seconds=SHUTDOWN_TIMEOUT,
            )

        clock = cast(IReactorTime, self.reactor)
        return stopped.addTimeout(SHUTDOWN_TIMEOUT, clock).addErrback(gave_up)

    def stop(self) -> Deferred[None]:
        """Write what is pending, sync and close every file, stop the
        thread.  Records that arrive after this are refused, until
        ``start``."""
        d: Deferred[None] = Deferred()
        self._restart = False
        if self._life is _Life.STOPPED:
            d.callback(None)
            return d
        self._stop_waiters.append(d)
        if self._life is _Life.RUNNING:
            self._life = _Life.STOPPING
        self._cancel_retry()
        self._fresh = True
        self._kick()
        self._maybe_stopped()
        return d

    def _maybe_stopped(self) -> None:
        if self._life is not _Life.STOPPING or self._completing:
            return
        if self._in_flight is not None or self._engine_batches:
            # Taking the batches back comes here again.
            self._land()
            return
        if self._pending:
            self._fresh = True
            self._kick()
            return
        self._life = _Life.CLOSING
        if self._pool is None and self._jobs is None:
            # The thread never started: no file is open.
            self._closed(_close_all(self._files, self.file_ops))
            return
        self._on_thread(self._closed_on_thread, _close_all, self._files, self.file_ops)

    def _closed_on_thread(self, ok: bool, result: object) -> None:
        self.reactor.callFromThread(self._closed, result)

    def _closed(self, result: object) -> None:
        _cancel(self._linger_call)
        self._linger_call = None
        if isinstance(result, Failure):
            _log.failure("journal writer could not close its files", result)
        elif result:
            _log.error(
                "journal writer: closing files failed: {errors}",
                errors="; ".join(cast(list[str], result)),
            )
        self._life = _Life.STOPPED
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None
            self._stop_engine()
        self._thread = None
        if self._shutdown_trigger is not None:
            core = cast(IReactorCore, self.reactor)
            core.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        waiters = self._stop_waiters
        self._stop_waiters = []
        for waiter in waiters:
            waiter.callback(None)
        if self._restart:
            self._restart = False
            self.start()
        # Anything journaled while the files were being closed is refused,
        # unless the writer started again.
        self._fresh = True
        self._kick()

    # -- sending ---------------------------------------------------------------

    def _wake(self) -> None:
        self._fresh = True
        self._kick()

    def _urge(self) -> None:
        """Something waits for what is pending: send it now."""
        if not self._pending:
            return
        self._urgent = True
        self._fresh = True
        self._kick()

    def _lingered(self) -> None:
        self._linger_call = None
        self._released = True
        self._fresh = True
        self._kick()

    def _kick(self) -> None:
        """Send what is pending if it may go now; during a batch's
        completions it goes once they are done."""
        if not self._completing:
            self._send()

    def _send(self) -> None:
        if not self._pending or not self._fresh:
            return
        life = self._life
        if not self._released and life is _Life.RUNNING and self.linger > 0:
            # Many records per hand-off: a thread wake-up costs more than
            # writing one record.
            call = self._linger_call
            if call is None:
                self._linger_urgent = self._urgent
                delay = 0.0 if self._urgent else self.linger
                self._linger_call = self.reactor.callLater(delay, self._lingered)
            elif self._urgent and not self._linger_urgent:
                self._linger_urgent = True
                call.reset(0.0)
            return
        if self._in_flight is not None:
            # Nothing goes while the Python loop has a batch; taking it back
            # sends what is pending.
            self._land()
            return
        if self._engine_batches:
            # Batches the engine finished go back first, in order (which
            # sends what is pending).
            if self._reap(wake=False):
                return
            if not _engine_steps(self._pending):
                # Only the Python loop can run this, after the engine.
                self._reap(wake=True)
                return
        if life is _Life.CLOSING and self._restart:
            return
        batch = self._pending
        self._pending = []
        self._urgent = self._released = False
        _cancel(self._linger_call)
        self._linger_call = None
        if life is _Life.CLOSING or life is _Life.STOPPED:
            for chunk in batch:
                chunk.journal._seal(chunk)
                for step in chunk.steps:
                    step.abandon(chunk.journal, "journal writer stopped")
            return
        self._fresh = False
        report = False
        for chunk in batch:
            journal = chunk.journal
            journal._seal(chunk)
            if journal._failing is not None:
                # So that "writing again" is said when it is true.
                report = True
        self.batches += 1
        if self._pool is None and self._thread is None:
            self.start()
        engine = self._engine
        if engine is not None and not report and _engine_steps(batch):
            self._to_engine(engine, batch)
            return
        self._in_flight = batch
        self._on_thread(
            partial(self._ran, batch, report),
            _run_batch,
            batch,
            self.file_ops,
            self._files,
        )
        if self._finished is not None:
            # A pool that ran the batch at once.
            self._collect()

    def _on_thread(
        self,
        on_result: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: object,
    ) -> None:
        """Run ``func`` on the writer thread, then ``on_result`` there too."""
        jobs = self._jobs
        if jobs is not None:
            jobs.put((on_result, func, args))
            if self._engine is not None:
                # Out of the engine, to the job.
                self._engine.interrupt()
        else:
            assert self._pool is not None
            self._pool.callInThreadWithCallback(on_result, func, *args)

    def _ran(self, batch: list[_Chunk], report: bool, ok: bool, result: object) -> None:
        """On the writer thread, after the batch: leave it for the reactor,
        and wake the reactor only when something waits for it.  Otherwise the
        reactor takes it back with its next record (``_land``): one thread
        hop per batch instead of two."""
        self._finished = (batch, None if ok else cast(Failure, result))
        # Read after the store above; ``_land`` does the opposite, so one of
        # the two sees the other.
        if self._waiting or report or not ok or self._drain_waiters or _awaited(batch):
            self.reactor.callFromThread(self._collect)

    def _to_engine(self, engine: _Engine, batch: list[_Chunk]) -> None:
        ops: list[tuple[int, bytes | None]] = []
        notify = False
        written = 0
        for chunk in batch:
            for step in chunk.steps:
                if type(step) is _Write:
                    write = cast(_Write, step)
                    f = write.file
                    data = b"".join(write.bufs)
                    # The joined copy is all a retry needs: the items' own
                    # bytes need not be held as well until the batch is back.
                    write.bufs = [data]
                    write.offset_before = f.offset
                    f.offset += len(data)
                    written += len(data)
                    ops.append((cast(int, f.fd), data))
                    if write.waiters:
                        notify = True
                else:
                    ops.append((cast(int, cast(_Sync, step).file.fd), None))
        self._engine_batches.append(batch)
        self.engine_batches += 1
        engine.submit(
            ops, notify or written > _LINGER_BYTES or bool(self._drain_waiters)
        )

    # -- taking batches back ---------------------------------------------------

    def engine_finished(self) -> None:
        """The engine said that batches are done: take them back."""
        self._reap(wake=False)

    def _land(self) -> None:
        """With batches on the thread: take back those it has finished (which
        sends what is pending); have it wake the reactor for the rest."""
        if self._in_flight is None:
            self._reap(wake=True)
            return
        if self._finished is None:
            self._waiting = True
            if self._finished is None:
                return
        self._collect()

    def _collect(self) -> None:
        """On the reactor: take back the batch the Python loop has finished,
        if it was not taken back already."""
        finished = self._finished
        if finished is None or self._completing:
            # Not yet; or after the completions running now.
            return
        self._finished = None
        batch, failure = finished
        self._in_flight = None
        self._waiting = False
        if (
            failure is None
            and self._urgent
            and self._pending
            and self._life is _Life.RUNNING
            and all(chunk.error is None for chunk in batch)
        ):
            # Something waits in what is pending: the thread writes and
            # syncs it while the reactor answers this batch.  (Not after a
            # failure: what is retried must go before what is pending.)
            self._released = True
            self._send()
        self._complete([(batch, failure)])

    def _reap(self, wake: bool) -> bool:
        """On the reactor: take back the batches the engine has finished, in
        order; with ``wake``, have the engine wake the reactor when it
        finishes the next.  Whether any came back."""
        engine = self._engine
        if engine is None or not self._engine_batches or self._completing:
            return False
        results = engine.poll(wake)
        if not results:
            return False
        batches = [self._engine_batches.popleft() for _ in results]
        failed = next((i for i, error in enumerate(results) if error), None)
        done: list[tuple[list[_Chunk], Failure | None]] = []
        for batch in batches[:failed]:
            for chunk in batch:
                for step in chunk.steps:
                    step.done = True
            done.append((batch, None))
        if failed is not None:
            # Everything from the failure on is undone and retried; what
            # came before it is done.  Latest first: each batch's retries go
            # in front of what is pending, so the oldest end up first.
            self._undo_engine(batches[failed:], results[failed])
            engine.resume()
            done.extend((batch, None) for batch in reversed(batches[failed:]))
        self._complete(done)
        return True

    def _undo_engine(self, batches: list[list[_Chunk]], error: int) -> None:
        """Undo the appends of batches the engine failed or did not run: the
        good bytes of each file end where the first of them started."""
        ends: dict[_SegmentFile, int] = {}
        for batch in batches:
            for chunk in batch:
                chunk.error = OSError(error, os.strerror(error))
                for step in chunk.steps:
                    step.done = False
                    if type(step) is _Write:
                        write = cast(_Write, step)
                        if write.offset_before >= 0:
                            f = write.file
                            ends[f] = min(ends.get(f, f.offset), write.offset_before)
                            write.offset_before = -1
        for f, offset in ends.items():
            f.offset = offset
            f.needs_cut = True

    def _complete(self, done: list[tuple[list[_Chunk], Failure | None]]) -> None:
        """Run the completions of batches taken back, in order; then take
        back what finished meanwhile, or send what is pending."""
        self._completing = True
        try:
            for batch, failure in done:
                self._batch_done(batch, failure)
        finally:
            self._completing = False
        if self._finished is not None:
            self._collect()
            return
        if self._engine_batches and self._reap(wake=False):
            return
        self._kick()
        self._maybe_stopped()
        self._watch_backlog()

    def _batch_done(self, batch: list[_Chunk], failure: Failure | None) -> None:
        if failure is not None:
            # A bug on the thread, not an I/O error: fail what did not run.
            _log.failure("journal writer batch crashed", failure)
            for chunk in batch:
                if chunk.error is None and not all(s.done for s in chunk.steps):
                    chunk.error = failure.value
        retried: list[_Chunk] = []
        for chunk in batch:
            try:
                again = chunk.journal._chunk_done(chunk)
            except Exception:
                _log.failure(
                    "journal {directory}: chunk completion failed",
                    directory=chunk.journal.directory,
                )
                continue
            if again is not None:
                retried.append(again)
        if retried:
            # What failed is older than anything pending: it goes first, in
            # the order it had.
            ids = {id(chunk) for chunk in retried}
            self._pending = retried + [c for c in self._pending if id(c) not in ids]

    # -- backlog and retries -----------------------------------------------------

    def when_drained(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the backlog is down to half of
        ``max_backlog`` (at once if it is)."""
        self._drain_waiters.append(callback)
        self._watch_backlog()

    def _watch_backlog(self) -> None:
        """Call the drain callbacks if it is time; if not, take back what
        the thread has finished, and have it wake the reactor when it
        finishes more."""
        if self._watching:
            return
        self._watching = True
        try:
            while self._drain_waiters:
                if self.backlog <= self.max_backlog // 2:
                    waiters = self._drain_waiters
                    self._drain_waiters = []
                    for waiter in waiters:
                        try:
                            waiter()
                        except Exception:
                            _log.failure("journal writer: a drain callback failed")
                    continue
                before = self.backlog
                self._land()
                if self.backlog >= before:
                    # Nothing was back yet: the thread says when it is.
                    break
        finally:
            self._watching = False

    def _schedule_retry(self) -> None:
        if self._retry_call is None and self._life is _Life.RUNNING:
            self._retry_call = self.reactor.callLater(self.retry_delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self._urge()

    def _cancel_retry(self) -> None:
        _cancel(self._retry_call)
        self._retry_call = None

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called and the writer has not started
        again."""
        return self._life is not _Life.RUNNING


# -- one queue's journal ---------------------------------------------------


class _Segment:
    """A segment as the reactor sees it: what is live in it."""

    __slots__ = ("number", "file", "size", "first_id", "last_id", "live", "pinned")

    def __init__(self, number: int, file: _SegmentFile, size: int = 0) -> None:
        self.number = number
        self.file = file
        self.size = size
        # The ids ADDed here (not forwarded) increase, so one range says
        # which items were born here.
        self.first_id = -1
        self.last_id = -1
        # Items born or forwarded here and not gone yet ...
        self.live = 0
        # ... of which open or aborted (these get forwarded).
        self.pinned = 0


class _Index:
    """Which segment holds an item, without an entry per item."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []
        self._ranged: list[_Segment] = []
        # Items whose latest copy is a FORWARD record (or an ADD out of id
        # order): few, and only these get an entry.
        self._forwarded: dict[int, _Segment] = {}

    def _first_add(self, segment: _Segment, item_id: int) -> None:
        segment.first_id = item_id
        self._firsts.append(item_id)
        self._ranged.append(segment)

    def _locate(self, item_id: int) -> _Segment | None:
        if self._forwarded:
            segment = self._forwarded.get(item_id)
            if segment is not None:
                return segment
        ranged = self._ranged
        if ranged:
            segment = ranged[0]
            if segment.first_id <= item_id <= segment.last_id:
                return segment
        i = bisect_right(self._firsts, item_id) - 1
        if i < 0:
            return None
        segment = ranged[i]
        return segment if item_id <= segment.last_id else None


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


_OPEN_STATE = 0
_CLOSED = 1
_ERASED = 2


class Journal(_Index):
    """The journal of one queue, in its own directory.

    Implements ``erq.queue.QueueJournal``.  Every method is called on the
    reactor thread.  For an existing directory call ``replay`` first, once,
    before anything else; a journal that is never replayed starts empty.
    """

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

    # -- what the queue calls ---------------------------------------------

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

    def add(self, item: Item, in_memory: bool = True) -> Deferred[None] | None:
        if self._state:
            return fail(JournalError("journal closed")) if self._always else None
        if self._failing is not None:
            return fail(JournalError(self._failing))
        write = self._add_record(item, in_memory)
        return self._added(write, ((item, in_memory),))

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
        writer = self._writer
        writer._fresh = True
        if self._always:
            d: Deferred[None] = Deferred()
            write.waiters.append((d, added))
            writer._urgent = True
            writer._kick()
            return d
        writer._kick()
        return None

    def _add_record(self, item: Item, in_memory: bool) -> _Write:
        data = item.data
        expiry = item.expiry
        item_id = item.id
        head = _ADD.pack(
            ADD, item_id, item.flags, _NAN if expiry is None else expiry, item.added
        )
        size = _ADD_SIZE + len(data)
        record = _REC.pack(size, zlib.crc32(data, zlib.crc32(head))) + head
        segment = self._current
        write = self._write
        if (
            segment is None
            or write is None
            or segment.size >= self._segment_size
            or write.file is not segment.file
        ):
            segment, offset, write = self._append(record, data)
        else:
            # _append's common case, inlined: this is the hottest path.
            offset = segment.size
            bufs = write.bufs
            bufs.append(record)
            bufs.append(data)
            size += 8
            segment.size = offset + size
            self._size += size
        write.held += len(data)
        self._writer.backlog += len(data)
        if item_id > self._max_native:
            self._max_native = item_id
            if segment.first_id < 0:
                self._first_add(segment, item_id)
            segment.last_id = item_id
        else:
            # Out of id order: the range index cannot find it.
            self._forwarded[item_id] = segment
        segment.live += 1
        if not in_memory:
            if not self._behind_count:
                self._cursor = (segment.number, offset)
            self._behind_count += 1
            self._behind_bytes += len(data)
        elif self._behind_count:
            # In memory while older items are still on disk: the reader
            # must not hand it out a second time.
            self._skip.add(item_id)
        return write

    def remove(self, item: Item) -> None:
        if self._state:
            return
        self._append(_record(_REMOVE.pack(REMOVE, item.id, len(item.data))))
        self._forget(item.id)
        self._compact_if_dead()
        self._wake()

    def remove_many(self, items: list[Item]) -> None:
        if self._state or not items:
            return
        self._append(
            b"".join(
                [
                    _record(_REMOVE.pack(REMOVE, item.id, len(item.data)))
                    for item in items
                ]
            )
        )
        for item in items:
            self._forget(item.id)
        self._compact_if_dead()
        self._wake()

    def _retract(self, added: _Added) -> None:
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
        self._append(b"".join(records))
        self._compact_if_dead()

    def _forget(self, item_id: int) -> None:
        """A removed item no longer keeps its segment alive."""
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

    def open(self, item: Item) -> None:
        if self._state:
            return
        item_id = item.id
        self._append(_ref_record(OPEN, item_id))
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
        self._append(_abort_record(item_id, seq))
        if self._open.pop(item_id, None) is not None:
            self._prefix[item_id] = item
            self._abort_seqs[item_id] = seq
        self._wake()

    def flush(self) -> None:
        if self._state:
            return
        self._append(_FLUSH_RECORD)
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

    def read_behind(self, max_bytes: int) -> Deferred[list[Item]]:
        d: Deferred[list[Item]] = Deferred()
        self._reads.append((max(max_bytes, 1), d))
        self._next_read()
        self._writer._urge()
        return d

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Write what is pending, then sync and close this queue's files."""
        if self._closed is not None:
            return _chain(self._closed)
        self._state = _CLOSED
        self._cancel_sync_timer()
        step = _Close([s.file for s in self._segments], None)
        self._add_step(step)
        self._closed = step.deferred
        self._writer._urge()
        return _chain(step.deferred)

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
        self._writer._urge()
        return _chain(step.deferred)

    def replay(self, max_memory_size: int) -> Replayed:
        """Read every segment and give back the queue's state.

        Synchronous: meant for service start, before the server listens.
        Damaged records are cut off (see the module docstring); open reads
        come back at the head and are journaled as aborted.
        """
        if self._replayed or self._segments or self._chunk is not None:
            raise RuntimeError("replay() must come first, and only once")
        self._replayed = True
        # At least one item in memory, so removals at the head find it.
        replay = _Replay(self.directory, max(max_memory_size, 1), repair=True)
        replay.run()
        self._dir_ready = replay.dir_exists
        if replay.dir_exists and self._name is not None:
            if _read_name_file(self.directory) != self._name:
                self._add_step(_Mkdir(self.directory, self._name, False))
        self._segments = replay.segments
        self._firsts = replay.firsts
        self._ranged = replay.ranged
        self._max_native = replay.max_native
        self._next_number = replay.max_number + 1
        opened = sorted(replay.open.values(), key=_item_id)
        aborted = replay.aborted_head()
        head = opened + aborted
        self._prefix = {item.id: item for item in head}
        self._abort_seqs = {item.id: replay.prefix_seqs[item.id] for item in aborted}
        self._next_seq = replay.max_seq + 1
        self._forwarded = {
            item_id: segment
            for item_id, segment in replay.forwarded.items()
            if item_id in self._prefix or item_id in replay.window
        }
        for item in head:
            segment = self._locate(item.id)
            if segment is not None:
                segment.pinned += 1
        if replay.behind_count and replay.reader is not None:
            self._behind_count = replay.behind_count
            self._behind_bytes = replay.behind_bytes
            self._cursor = (
                replay.segments[replay.reader.index].number,
                replay.reader.pos,
            )
            self._skip = replay.skip
        self._size = sum(s.size for s in self._segments)
        if self._segments and self._segments[-1].size < self._segment_size:
            self._current = self._segments[-1]
        # The open reads are aborted, the first one last: it is the head.
        for item in reversed(opened):
            seq = self._next_seq
            self._next_seq += 1
            self._abort_seqs[item.id] = seq
            self._append(_abort_record(item.id, seq))
        self._compact()
        self._wake()
        return Replayed(
            items=head + list(replay.window.values()),
            behind_items=self._behind_count,
            behind_bytes=self._behind_bytes,
            next_id=replay.max_id + 1,
            damage=replay.damage,
            reopened=len(opened),
        )

    # -- internals: appending -------------------------------------------------

    def _get_chunk(self) -> _Chunk:
        chunk = self._chunk
        if chunk is None:
            chunk = self._chunk = _Chunk(self)
            self._writer._pending.append(chunk)
        return chunk

    def _add_step(self, step: _Step) -> None:
        self._get_chunk().steps.append(step)
        self._write = None

    def _new_write(self, segment: _Segment) -> _Write:
        chunk = self._get_chunk()
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
        writer = self._writer
        writer._fresh = True
        writer._kick()

    def _rotate(self) -> _Segment:
        old = self._current
        if old is not None:
            self._add_step(_Finish(old.file))
            self._get_chunk().to_sync.pop(old.file, None)
        if not self._dir_ready:
            self._add_step(_Mkdir(self.directory, self._name, self._sync != "never"))
            self._dir_ready = True
        number = self._next_number
        self._next_number += 1
        path = os.path.join(self.directory, _segment_name(number))
        segment = _Segment(number, _SegmentFile(path, 0, fresh=True), HEADER_SIZE)
        self._segments.append(segment)
        self._current = segment
        self._new_write(segment).bufs.append(FILE_HEADER)
        self._size += HEADER_SIZE
        if old is not None:
            self._compact()
        return self._current

    # -- internals: compaction --------------------------------------------------

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
            self._forwarded[item.id] = target
            target.live += 1
            target.pinned += 1
            segment.live -= 1
            segment.pinned -= 1

    # -- internals: the writer's side -------------------------------------------

    def _seal(self, chunk: _Chunk) -> None:
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
        if sync != "always":
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

    def _chunk_done(self, chunk: _Chunk) -> _Chunk | None:
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
        self._writer._schedule_retry()
        return next_chunk

    # -- internals: read-behind ---------------------------------------------

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
            self._writer._urgent = True

    def _read_done(self, step: _Read) -> None:
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


def _item_id(item: Item) -> int:
    return item.id


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


# -- reading records -------------------------------------------------------


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
    unpack_rec = _REC.unpack_from
    unpack_add = _ADD.unpack_from
    crc32 = zlib.crc32
    while index < len(files):
        number, path = files[index]
        with open(path, "rb") as f:
            if offset == HEADER_SIZE and f.read(HEADER_SIZE) != FILE_HEADER:
                raise JournalError(f"{path}: bad segment header")
            f.seek(offset)
            buf = b""
            base = offset
            pos = 0
            while True:
                available = len(buf) - pos
                if available < 8:
                    more = f.read(_READ_CHUNK)
                    if not more:
                        if available and not _zeros_from(buf, pos):
                            raise JournalError(f"{path}: torn record at {base + pos}")
                        break
                    buf = buf[pos:] + more
                    base += pos
                    pos = 0
                    continue
                n, crc = unpack_rec(buf, pos)
                if n == 0:
                    # The zeros written ahead: no more records here.
                    break
                if available < 8 + n:
                    more = f.read(max(_READ_CHUNK, 8 + n - available))
                    if not more:
                        raise JournalError(f"{path}: torn record at {base + pos}")
                    buf = buf[pos:] + more
                    base += pos
                    pos = 0
                    continue
                start = pos + 8
                end = start + n
                if crc32(memoryview(buf)[start:end]) != crc:
                    raise JournalError(f"{path}: corrupt record at {base + pos}")
                pos = end
                if buf[start] != ADD:
                    continue
                _, item_id, flags, expiry, added = unpack_add(buf, start)
                if item_id in skip:
                    continue
                items.append(
                    Item(
                        item_id,
                        buf[start + _ADD_SIZE : end],
                        flags,
                        _expiry_out(expiry),
                        added,
                    )
                )
                total += n - _ADD_SIZE
                if len(items) >= count or total >= max_bytes:
                    return items, (number, base + pos)
        index += 1
        offset = HEADER_SIZE
    return items, (number, offset)


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


# -- replay ----------------------------------------------------------------


_NO_SEGMENT = _Segment(0, _SegmentFile("", 0, False))


class _ReplayReader:
    """Replay's second cursor: it reads the items that went behind memory
    back in, as removals make room (like the queue will)."""

    __slots__ = ("replay", "index", "pos")

    def __init__(self, replay: _Replay, index: int, pos: int) -> None:
        self.replay = replay
        self.index = index
        self.pos = pos

    def next_item(self) -> Item | None:
        replay = self.replay
        skip = replay.skip
        while True:
            buf, end = replay.segment_buffer(self.index)
            pos = self.pos
            if pos >= end:
                if self.index >= replay.current_index:
                    return None
                self.index += 1
                self.pos = HEADER_SIZE
                continue
            n, _ = _REC.unpack_from(buf, pos)
            start = pos + 8
            self.pos = start + n
            if buf[start] != ADD:
                continue
            _, item_id, flags, expiry, added = _ADD.unpack_from(buf, start)
            if skip and item_id in skip:
                skip.discard(item_id)
                continue
            if item_id <= replay.window_last:
                continue
            return Item(
                item_id,
                buf[start + _ADD_SIZE : start + n],
                flags,
                _expiry_out(expiry),
                added,
            )


class _Replay(_Index):
    """Applies a queue's records in order to a model of the queue, holding
    at most about ``max_memory`` bytes of items."""

    def __init__(self, directory: str, max_memory: int, repair: bool) -> None:
        super().__init__()
        self.directory = directory
        self.max_memory = max_memory
        # False for the command-line tool: nothing on disk is changed.
        self.repair = repair
        self.dir_exists = False
        self.damage: list[str] = []
        self.segments: list[_Segment] = []
        self.window: dict[int, Item] = {}
        self.mem_bytes = 0
        self.window_last = 0
        # Aborted items queued at the head, and their abort seqs.
        self.prefix: dict[int, Item] = {}
        self.prefix_seqs: dict[int, int] = {}
        self.max_seq = 0
        self.open: dict[int, Item] = {}
        self.behind_count = 0
        self.behind_bytes = 0
        self.reader: _ReplayReader | None = None
        self.skip: set[int] = set()
        self.max_native = 0
        self.max_id = 0
        self.max_number = 0
        self.records = 0
        self.current_index = -1
        self.current_buf = b""
        self.pos = 0
        self._cache: tuple[int, bytes] | None = None

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
            self._run()
        finally:
            if collecting:
                gc.enable()

    def _run(self) -> None:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        self.dir_exists = True
        numbers: list[int] = []
        for name in names:
            match = _SEGMENT_RE.match(name)
            if match:
                numbers.append(int(match.group(1)))
            else:
                match = _QUARANTINE_RE.match(name)
                if match:
                    self.max_number = max(self.max_number, int(match.group(1)))
        numbers.sort()
        if numbers:
            self.max_number = max(self.max_number, numbers[-1])
        for i, number in enumerate(numbers):
            self._segment(number, last=i == len(numbers) - 1)
        self.current_buf = b""
        self._cache = None
        # ADD ids are not tracked in the hot loop's max; do it once here.
        self.max_id = max(self.max_id, self.max_native)

    def _where(self, name: str) -> str:
        return f"queue dir {self.directory} segment {name}"

    def _segment(self, number: int, last: bool) -> None:
        name = _segment_name(number)
        path = os.path.join(self.directory, name)
        with open(path, "rb") as f:
            buf = f.read()
        problem = _header_problem(buf)
        if problem is not None:
            if problem.startswith("unsupported"):
                raise JournalError(f"{self._where(name)}: {problem}")
            if problem == "torn header" and last:
                self.damage.append(
                    f"{self._where(name)}: {problem}, removed the empty segment"
                )
                if self.repair:
                    os.unlink(path)
            else:
                self.damage.append(
                    f"{self._where(name)}: {problem}, set aside as {name}.bad"
                )
                if self.repair:
                    os.replace(path, path + ".bad")
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
                self._cut(segment, name, buf, damage, last)

    def _cut(
        self, segment: _Segment, name: str, buf: bytes, damage: _Damage, last: bool
    ) -> None:
        end = damage.offset
        cut = len(buf) - end
        # What a crash mid-write leaves: the record runs past the end of the
        # file, or into the zeros written ahead.
        tail = last and (
            damage.record_end >= len(buf) or _zeros_from(buf, damage.record_end)
        )
        message = (
            f"{self._where(name)}: {damage.reason} at offset {end}, cut {cut} bytes"
        )
        if not tail:
            saved = f"{name}.cut-{end}"
            message += f" (saved as {saved})"
            if self.repair:
                saved_path = os.path.join(self.directory, saved)
                with open(saved_path, "wb", opener=private_opener) as f:
                    f.write(buf[end:])
                    f.flush()
                    os.fsync(f.fileno())
        self.damage.append(message)
        segment.size = end
        segment.file.offset = end
        if self.repair:
            os.truncate(segment.file.path, end)

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
        # The hot loop.  ADDs, and REMOVEs of items in memory, are done
        # inline with the replay's counters in locals; anything else goes
        # through _slow, with the counters stored before and loaded after.
        self.current_index = index
        self.current_buf = buf
        window = self.window
        max_memory = self.max_memory
        forwarded = self._forwarded
        locate = self._locate
        unpack_rec = _REC.unpack_from
        unpack_add = _ADD.unpack_from
        unpack_remove = _REMOVE.unpack_from
        crc32 = zlib.crc32
        mem_bytes = self.mem_bytes
        behind_count = self.behind_count
        behind_bytes = self.behind_bytes
        window_last = self.window_last
        max_native = self.max_native
        # The segment the last REMOVE hit: the next one is likely there too.
        hint = _NO_SEGMENT
        view = memoryview(buf)
        size = len(buf)
        pos = HEADER_SIZE
        records = 0
        try:
            while pos < size:
                if pos + 8 > size:
                    raise _Damage(pos, "torn record", size)
                n, crc = unpack_rec(buf, pos)
                start = pos + 8
                end = start + n
                if end > size:
                    raise _Damage(pos, "torn record", end)
                if n == 0 or crc32(view[start:end]) != crc:
                    raise _Damage(pos, "corrupt record (checksum mismatch)", end)
                records += 1
                kind = buf[start]
                if kind == ADD and n >= _ADD_SIZE:
                    _, item_id, flags, expiry, added = unpack_add(buf, start)
                    if item_id > max_native and (
                        behind_count or mem_bytes < max_memory
                    ):
                        max_native = item_id
                        if segment.first_id < 0:
                            self._first_add(segment, item_id)
                        segment.last_id = item_id
                        segment.live += 1
                        if behind_count:
                            behind_count += 1
                            behind_bytes += n - _ADD_SIZE
                        else:
                            window[item_id] = Item(
                                item_id,
                                buf[start + _ADD_SIZE : end],
                                flags,
                                None if expiry != expiry else expiry,
                                added,
                            )
                            mem_bytes += n - _ADD_SIZE
                            window_last = item_id
                        pos = end
                        continue
                elif kind == REMOVE and n == _REMOVE_SIZE:
                    _, item_id, item_size = unpack_remove(buf, start)
                    item = window.pop(item_id, None)
                    if item is not None:
                        mem_bytes -= len(item.data)
                        if hint.first_id <= item_id <= hint.last_id and not (
                            forwarded and item_id in forwarded
                        ):
                            hint.live -= 1
                        else:
                            found = locate(item_id)
                            if found is not None:
                                found.live -= 1
                                hint = found
                        if not behind_count or mem_bytes >= max_memory:
                            pos = end
                            continue
                        kind = _REFILL
                self.mem_bytes = mem_bytes
                self.behind_count = behind_count
                self.behind_bytes = behind_bytes
                self.window_last = window_last
                self.max_native = max_native
                self.pos = pos
                self._slow(kind, index, segment, buf, pos, start, end)
                mem_bytes = self.mem_bytes
                behind_count = self.behind_count
                behind_bytes = self.behind_bytes
                window_last = self.window_last
                max_native = self.max_native
                pos = end
        finally:
            self.records += records
            self.mem_bytes = mem_bytes
            self.behind_count = behind_count
            self.behind_bytes = behind_bytes
            self.window_last = window_last
            self.max_native = max_native
            self.pos = pos
            view.release()

    def _slow(
        self,
        kind: int,
        index: int,
        segment: _Segment,
        buf: bytes,
        pos: int,
        start: int,
        end: int,
    ) -> None:
        n = end - start
        if kind == _REFILL:
            self._refill(None)
        elif kind == ADD:
            if n < _ADD_SIZE:
                raise _Damage(pos, "corrupt record (short ADD)", end)
            _, item_id, flags, expiry, added = _ADD.unpack_from(buf, start)
            if item_id <= self.max_native:
                self._odd_add(segment, item_id, flags, expiry, added, buf, start, end)
                return
            # The first item that does not fit in memory.
            self.max_native = item_id
            if segment.first_id < 0:
                self._first_add(segment, item_id)
            segment.last_id = item_id
            segment.live += 1
            self.reader = _ReplayReader(self, index, pos)
            self.behind_count = 1
            self.behind_bytes = n - _ADD_SIZE
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
        self.window[item_id] = item
        self.mem_bytes += len(item.data)

    def _is_behind(self, item_id: int) -> bool:
        return (
            self.behind_count > 0
            and self.window_last < item_id <= self.max_native
            and item_id not in self.skip
        )

    def _refill(self, until: int | None) -> None:
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
        if self._is_behind(item_id):
            # Removed while replay still has it on disk: remember to skip it.
            self.skip.add(item_id)
            self.behind_count -= 1
            self.behind_bytes -= item_size
            found = self._locate(item_id)
            if found is not None:
                found.live -= 1
            if not self.behind_count:
                self._end_behind()

    def _take(self, item_id: int) -> Item | None:
        """An item of the body, taken out of it (read from disk if need be)."""
        item = self.window.pop(item_id, None)
        if item is None and self._is_behind(item_id):
            self._refill(item_id)
            item = self.window.pop(item_id, None)
        if item is not None:
            self.mem_bytes -= len(item.data)
            if self.behind_count and self.mem_bytes < self.max_memory:
                self._refill(None)
        return item

    def _open(self, item_id: int) -> None:
        self.max_id = max(self.max_id, item_id)
        if item_id in self.open:
            return
        item = self.prefix.pop(item_id, None)
        if item is not None:
            del self.prefix_seqs[item_id]
        else:
            item = self._take(item_id)
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
        self.window.clear()
        self.mem_bytes = 0
        for item_id in self.prefix:
            self._forwarded.pop(item_id, None)
        self.prefix.clear()
        self.prefix_seqs.clear()
        self._end_behind()
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
        if item_id in self.open or item_id in self.prefix or item_id in self.window:
            old = self._locate(item_id)
            if old is not None:
                old.live -= 1
            self._forwarded[item_id] = segment
            segment.live += 1
            return
        if self._is_behind(item_id):
            # Cannot happen when the journal was written by erq, but if it
            # does, the forwarded copy wins over the one on disk.
            self.skip.add(item_id)
            self.behind_count -= 1
            self.behind_bytes -= end - start - _FORWARD_SIZE
            old = self._locate(item_id)
            if old is not None:
                old.live -= 1
            if not self.behind_count:
                self._end_behind()
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


# -- the command-line tool ---------------------------------------------------


def _describe(buf: bytes, kind: int, start: int, end: int) -> str:
    if kind in (ADD, FORWARD):
        if kind == ADD:
            _, item_id, flags, expiry, added = _ADD.unpack_from(buf, start)
            data = buf[start + _ADD_SIZE : end]
            state = ""
        else:
            _, item_id, state_code, seq, flags, expiry, added = _FORWARD.unpack_from(
                buf, start
            )
            data = buf[start + _FORWARD_SIZE : end]
            state = " open" if state_code == OPENED else f" queued seq={seq}"
        exp = "-" if expiry != expiry else repr(expiry)
        preview = data[:32]
        more = "..." if len(data) > 32 else ""
        return (
            f"{KIND_NAMES[kind]} id={item_id}{state} flags={flags} expiry={exp}"
            f" added={added!r} bytes={len(data)} data={preview!r}{more}"
        )
    if kind == REMOVE:
        _, item_id, size = _REMOVE.unpack_from(buf, start)
        return f"REMOVE id={item_id} bytes={size}"
    if kind == OPEN:
        _, item_id = _REF.unpack_from(buf, start)
        return f"OPEN id={item_id}"
    if kind == ABORT:
        _, item_id, seq = _ABORT.unpack_from(buf, start)
        return f"ABORT id={item_id} seq={seq}"
    return KIND_NAMES.get(kind, f"kind {kind}")


def _segment_paths(directory: str) -> list[tuple[str, str]]:
    names = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(directory)
        if (m := _SEGMENT_RE.match(name))
    )
    return [(name, os.path.join(directory, name)) for _, name in names]


def _dump(queues: dict[str, str], out: TextIO) -> int:
    for name, directory in sorted(queues.items()):
        out.write(f"queue {name!r} in {directory}\n")
        for segment, path in _segment_paths(directory):
            with open(path, "rb") as f:
                buf = f.read()
            problem = _header_problem(buf)
            if problem is not None:
                out.write(f"{segment} 0 DAMAGE {problem}\n")
                continue
            try:
                for pos, kind, start, end in _records(buf):
                    out.write(f"{segment} {pos} {_describe(buf, kind, start, end)}\n")
            except _Damage as damage:
                out.write(
                    f"{segment} {damage.offset} DAMAGE {damage.reason},"
                    f" {len(buf) - damage.offset} bytes to the end of the file\n"
                )
    return 0


def _check(queues: dict[str, str], out: TextIO) -> int:
    status = 0
    for name, directory in sorted(queues.items()):
        segments = _segment_paths(directory)
        records = 0
        size = 0
        problems: list[str] = []
        for segment, path in segments:
            with open(path, "rb") as f:
                buf = f.read()
            size += len(buf)
            problem = _header_problem(buf)
            if problem is not None:
                problems.append(f"{segment}: {problem}")
                continue
            try:
                for _ in _records(buf):
                    records += 1
            except _Damage as damage:
                problems.append(
                    f"{segment}: {damage.reason} at offset {damage.offset},"
                    f" {len(buf) - damage.offset} bytes would be cut"
                )
        verdict = "damaged" if problems else "ok"
        out.write(
            f"queue {name!r}: {verdict}, {len(segments)} segments,"
            f" {records} records, {size} bytes\n"
        )
        for problem in problems:
            out.write(f"  {problem}\n")
        if problems:
            status = 1
    return status


def _stats(queues: dict[str, str], out: TextIO) -> int:
    for name, directory in sorted(queues.items()):
        replay = _Replay(directory, MiB, repair=False)
        try:
            replay.run()
        except JournalError as e:
            out.write(f"queue {name!r}: {e}\n")
            continue
        queued = replay.aborted_head() + list(replay.window.values())
        items = len(queued) + replay.behind_count
        size = sum(len(item.data) for item in queued) + replay.behind_bytes
        logsize = sum(s.size for s in replay.segments)
        out.write(
            f"queue {name!r}: items={items} bytes={size}"
            f" open={len(replay.open)} segments={len(replay.segments)}"
            f" logsize={logsize} records={replay.records}"
            f" damaged={len(replay.damage)}\n"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``erq-journal dump|check|stats <data_dir> [queue]``: look at the
    journals of a stopped server (read-only).

    A running server's journals change under the reader (a record half
    written reads as damage), so the tool takes the data directory's lock
    shared (see ``erq.datadir``) and refuses, exit status 2, while a server
    holds it; no server starts while the tool reads.  Output cut short by
    its reader (``| head``) ends the tool quietly with status 141, as
    SIGPIPE ends other tools: a ``check`` not read to the end is no ``ok``."""
    parser = argparse.ArgumentParser(
        prog="erq-journal",
        description="Look at erq queue journals. Read-only; refuses to run "
        "while a server uses the data directory.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (
        ("dump", "print every record, one per line"),
        ("check", "verify checksums; exit 1 if anything is damaged"),
        ("stats", "items, bytes and open reads of each queue"),
    ):
        sub = commands.add_parser(command, help=text, description=text)
        sub.add_argument("data_dir", help="the server's data directory")
        sub.add_argument("queue", nargs="?", help="only this queue")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        sys.stderr.write(f"erq-journal: no directory {args.data_dir}\n")
        return 2
    try:
        lock = lock_data_dir_shared(args.data_dir)
    except (DataDirectoryInUse, OSError) as error:
        sys.stderr.write(f"erq-journal: {error}\n")
        return 2
    try:
        return _run(args, sys.stdout)
    except BrokenPipeError:
        # Whatever is still buffered goes nowhere, not into a traceback at
        # exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    finally:
        if lock is not None:
            lock.release()


def _run(args: argparse.Namespace, out: TextIO) -> int:
    queues = list_queue_dirs(args.data_dir)
    if args.queue is not None:
        if args.queue not in queues:
            sys.stderr.write(
                f"erq-journal: no queue {args.queue!r} in {args.data_dir}\n"
            )
            return 2
        queues = {args.queue: queues[args.queue]}
    handlers: dict[str, Callable[[dict[str, str], TextIO], int]] = {
        "dump": _dump,
        "check": _check,
        "stats": _stats,
    }
    status = handlers[args.command](queues, out)
    out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
