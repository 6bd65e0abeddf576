"""The writer's optional C engine (``erq.journal._engine``): which batches
it can run, and the eventfd through which it says that they are done.

Appends without the GIL
-----------------------
A Python thread must take the GIL back after every write and fsync, and the
reactor holds it most of the time: each batch then waits for the reactor to
let go, and the reactor waits for the thread to wake.  So when the C
extension ``erq.journal._engine`` is built (it is optional: without a
compiler the Python loop of ``erq.journal.loop`` does everything), the
same thread spends its idle time inside ``Engine.serve``, which never holds
the GIL.  The commonest batch, appends to open segments and their fsyncs,
goes to it as a plain list of ``(fd, bytes)`` and ``(fd, None)``
operations; the engine takes every such batch queued while it was busy as
one group (their appends in order, then one fdatasync per file, the files
of a group synced at once by up to eight syncer threads beside it: one
fsync after another would cost the sum of their latencies, while the disk
takes several at once for little more than one) and tells the reactor
through an eventfd.  Such batches do not wait for each other: the next one
is queued while one is synced, and the thread starts on it the moment the
fsync returns.

Writing out what is not synced
------------------------------
A file appended to and not synced (``sync_journal = "never"``, between
the syncs of a period, or a batch of removals alone under ``"always"``)
is left to the kernel, except that each time another ``WRITE_OUT`` bytes
have gathered since it was last synced or written out, the batch asks
the engine to start writing the file out (``sync_file_range``, without
waiting; ``(fd, end)`` ops).  The fsync that closes a full segment,
whatever the policy, then finds at most that much left to write, and
does not hold up the appends behind it while a whole segment goes to
disk.  Starting a write-out with every batch instead would send the same
partly filled page to the disk again and again: with a batch every
couple of milliseconds, hundreds of disk writes a second per busy queue,
several times the bytes journaled, for records that no one waits to see
on the disk.

A lone durable write
--------------------
Handing a batch to the thread costs a wake-up of the thread, and its end a
wake-up of the reactor: on a virtual machine each is tens of
microseconds, a good part of a lock-step durable set (one fdatasync is a
couple of hundred).  So when the engine is idle and the batch that leaves
at the end of the reactor's turn is one set and nothing else (a lock-step
producer, with nothing more to send until it is answered, and nobody else
journaling anything), the reactor runs it itself, through ``Engine.run``,
without the GIL, and answers it at once, before anything else (see
``erq.durable``): blocking the reactor for the fdatasync then delays no
one.  The same holds for a batch of one queue that carries the sets of
every connection storing there in lock-step (``whole``: the writer
gathered them, see ``erq.journal.cohort``), whatever else that queue
journaled beside them: none of those connections sends anything before
its answer.  What comes during the fdatasync is read right after it and
goes out as the next batch, group commit as before.  Anything more (the
sets of several queues, or of connections not all in the batch, a run of
sets from a client that pipelines) goes to the thread, so that the
reactor reads and handles the next requests while it is synced.

Where a set's reply may go straight to its client's socket
(``Durable.direct``), the same call sends it, from C, the moment the
fdatasync returns (``Engine.run_and_reply``): the Python that answers a
set (a twentieth of a lock-step durable set here, its code cold after the
fsync) then runs after the reply has left, not before it.

Replies of batches taken back
-----------------------------
The sets of a batch that went to the thread are answered when the reactor
takes the batch back: their replies that may go straight to their sockets
leave then, in one call (``Engine.reply``), before any Python of theirs
runs and before the batch's completions.  That is the moment the usual
way would answer them too, and on the same thread, which closes sockets:
each descriptor is asked for just before the call.  What it saves is the
Python of each reply on its way to the socket, which a batch over many
queues pays once per set, and the replies leave before that Python, not
after it.  With 16 lock-step connections each storing durably on a queue
of its own, one server switching between the two ways every second
(``--idle-poll 0``, so that the reactor's CPU is its work only), the
reactor spent 48-56 us of CPU on each set this way against 50-59 the
usual way, and the 16 connections stored 5-12% more sets a second
(medians of 10 and 16 rounds).  The engine's thread itself never sends:
its batches end while the reactor may be reading a request that a reply
sent then would overtake (see ``erq.durable``).

Shared flushes
--------------
A disk takes one cache flush at a time: sixteen queues' files synced at
once cost nearly sixteen flushes.  Most appends, though, overwrite the
zeros written ahead of them (see "Zeros ahead" in ``erq.journal.files``),
blocks that an earlier fdatasync made durable; such a file needs no
metadata written, only its data and a flush.  The runner tells the engine
so (a "shared" sync, up to ``_SegmentFile.covered``), and the engine writes
those files out and waits for them, then fdatasyncs the others (or one of
them), whose flush covers them all (see ``_engine.c``).  The files it
fdatasyncs start their write-out with the shared ones, not after them:
their data then reaches the disk beside the others', and their fdatasync
is left little but the flush.  Measured by
``benchmarks.limits.batch_seconds`` on one disk, a batch over four files
went from 172-213 us to 133-160, over nine from 226-264 to 190-213.

That is sound only where every fdatasync ends with a flush of the disk's
cache issued after it was called, whatever the file, and where an
overwrite in place needs no metadata: ext4 and xfs.  Copy-on-write file
systems (btrfs, zfs) write an overwrite elsewhere; overlayfs does not pass
sync_file_range to the real file; tmpfs, nfs, fuse and the unknown promise
nothing of the kind.  So the writer asks once, as its engine starts, of
the data directory's file system (``flush_shared`` in ``_engine.c``,
which reads its type with fstatfs); where the answer is no, or there is
no data directory to ask (or ``JournalWriter(shared_flushes=False)``),
the runner asks for no shared sync and every file gets its own
fdatasync.  The engine itself lets a file share a flush only if it is on
the data directory's device (a queue's directory may be a mount of
another disk), and only with an fdatasync on that device.  The writer asks
each file's device once, as it opens it, and tells the engine which
files are on that device, so that the engine need not ask each batch.
Anything else (opening, cutting or closing a file, reads, deletes) goes to
the Python loop, once the engine's batches are done, so records still reach
disk in the order they were made.  A failed group stops the engine; its
batches and those queued behind it are undone (their files cut back on the
next write) and retried on the Python path, which handles failures as
described in ``erq.journal.journal``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol, cast

from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from erq.config import MiB
from erq.durable import DirectReply, Durable
from erq.journal.files import (
    _LINGER_BYTES,
    _SMALL_APPEND,
    _Chunk,
    _SegmentFile,
    _Sync,
    _Write,
)

#: Bytes a file not synced gathers before the engine is asked to start
#: writing it out (see "Writing out what is not synced").
WRITE_OUT = 1 * MiB

try:
    from erq.journal._engine import Engine, flush_shared
except ImportError:  # built without its C extension: the Python loop writes
    Engine = None  # type: ignore[assignment, misc]
    flush_shared = None  # type: ignore[assignment]


def _engine_steps(batch: list[_Chunk]) -> bool:
    """Whether the engine can run this batch: appends to open segment
    files that need no cut, and their fsyncs, of journals not failing.
    (``_EngineRunner.lone`` asks the same of a lone batch's two steps.)"""
    for chunk in batch:
        # The attribute, not the property: this runs once per chunk.
        if chunk.journal._failing is not None:
            return False
        for step in chunk.steps:
            if type(step) is _Write:
                f = step.file
                if f.fd is None or f.needs_cut:
                    return False
                if (
                    step.ahead > f.zeroed
                    and f.offset + _SMALL_APPEND > f.zeroed
                    and _zeroes_ahead(step)
                ):
                    return False
            elif type(step) is _Sync:
                # A new file's first fsync also syncs its directory.
                f = step.file
                if f.fd is None or f.fresh:
                    return False
            else:
                return False
    return True


def _zeroes_ahead(write: _Write) -> bool:
    """Whether the Python loop would write zeros ahead after this write
    (see "Zeros ahead" in ``erq.journal.files``), which the engine does not
    do; asked only near the end of the zeros."""
    f = write.file
    size = sum(map(len, write.bufs))
    return f.offset + size > f.zeroed and size <= _SMALL_APPEND


#: What the engine takes: appends, full syncs (None), shared syncs (False;
#: True if the file is known to be on the engine's device), and write-outs
#: of a file's first bytes up to an end (an int, never a bool).
Ops = list[tuple[int, bytes | bool | int | None]]


class _Engine(Protocol):
    """What the writer needs of the C engine (``erq.journal._engine.Engine``, or a
    test double)."""

    def submit(self, ops: Ops, notify: bool) -> None: ...

    def run(self, ops: Ops) -> int: ...

    def run_and_reply(
        self, ops: Ops, replies: list[tuple[int, bytes]]
    ) -> tuple[int, list[int]]: ...

    def reply(self, replies: list[tuple[int, bytes]]) -> list[int]: ...

    def poll(self, wake: bool) -> list[int]: ...

    def resume(self) -> None: ...

    def interrupt(self) -> None: ...


@implementer(IReadDescriptor)
class _EngineDone:
    """The eventfd through which the engine tells the reactor that batches
    are done: reading it calls ``finished``, which takes them back."""

    def __init__(self, finished: Callable[[], object], fd: int) -> None:
        self.finished = finished
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        self.finished()

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "erq journal writer"


class _EngineRunner:
    """The engine as one of the writer's two ways to run a batch (see
    ``_Runner`` in ``erq.journal.dispatch``): any number of batches at once,
    of appends and fsyncs only, taken back in the order they were sent."""

    def __init__(
        self, engine: _Engine, shares: bool, device: int | None = None
    ) -> None:
        self.engine = engine
        #: Whether files may share a flush (see "Shared flushes"): if not,
        #: every sync it asks for is a full one.
        self.shares = shares
        #: The device whose files may share a flush, if known: the engine is
        #: then told which files are on it (each was asked once, when it
        #: was opened), instead of asking each batch.
        self.device = device
        # The batches it has, oldest first.
        self.batches: deque[list[_Chunk]] = deque()
        # For each, the files it syncs in full and where each sync makes
        # them durable to.
        self.covers: deque[_Covers] = deque()
        #: Batches it ran.
        self.count = 0
        #: Of those, batches the reactor ran itself (``run_now``).
        self.inline = 0
        #: Replies to durable sets that such runs sent themselves.
        self.replied = 0
        #: Replies to durable sets of batches taken back from the thread,
        #: sent as they were (``_reply``).
        self.replied_back = 0
        #: The durable adds of the batches just run: the writer answers
        #: them first, before it completes the batches (see ``erq.durable``).
        self.durables: list[Durable] = []

    def busy(self) -> bool:
        return bool(self.batches)

    def can_run(self, batch: list[_Chunk]) -> bool:
        return _engine_steps(batch)

    def submit(self, batch: list[_Chunk], hurry: bool) -> None:
        """Hand the engine the batch's appends and fsyncs; it wakes the
        reactor when done if something waits for the batch, or if
        ``hurry``."""
        ops, notify, covers = _ops(batch, self.shares, self.device)
        self.batches.append(batch)
        self.covers.append(covers)
        self.count += 1
        self.engine.submit(ops, notify or hurry)

    def lone(self, batch: list[_Chunk], whole: bool = False) -> bool:
        """Whether the reactor had better run this batch itself: the engine
        is idle, and the batch is one set and nothing else, or with
        ``whole`` one queue's records beside the sets of every connection
        in lock-step there (see "A lone durable write"), that the engine
        can run (as ``_engine_steps`` says, asked here of the two steps
        directly)."""
        if self.batches or len(batch) != 1:
            return False
        chunk = batch[0]
        steps = chunk.steps
        if len(steps) != 2 or chunk.journal._failing is not None:
            return False
        write, sync = steps
        if type(write) is not _Write or type(sync) is not _Sync:
            return False
        f = write.file
        synced = sync.file
        return not (
            (
                len(write.waiters) != 1
                # One record: its header and its item.
                or len(write.bufs) != 2
            )
            and not (whole and write.waiters)
            or write.held > _SMALL_APPEND
            or f.fd is None
            or f.needs_cut
            or (
                write.ahead > f.zeroed
                and f.offset + _SMALL_APPEND > f.zeroed
                and _zeroes_ahead(write)
            )
            or synced.fd is None
            or synced.fresh
        )

    def run_now(self, batch: list[_Chunk]) -> list[_Done]:
        """Run the batch on this (the reactor's) thread, while the engine
        is idle; it comes back at once, as ``take_back`` would return it
        (nothing, if the engine took it to run on its thread instead).  The
        replies of its sets that may go at once (``Durable.direct``) leave
        with the run, and are told so before anything else."""
        ops, covers = _lone_ops(batch[0], self.shares)
        write: _Write = batch[0].steps[0]  # type: ignore[assignment]
        replies, direct = _direct_replies(waiter for waiter, _ in write.waiters)
        self.count += 1
        try:
            if direct:
                error, sent = self.engine.run_and_reply(ops, replies)
            else:
                error = self.engine.run(ops)
        except RuntimeError:
            # The engine says it is not idle after all: it takes the batch
            # as any other, and tells the reactor when it is done.
            self.batches.append(batch)
            self.covers.append(covers)
            self.engine.submit(ops, True)
            return []
        self.inline += 1
        if error:
            _undo([batch], error)
        else:
            if direct:
                self.replied += len(direct)
                for reply, count in zip(direct, sent, strict=True):
                    reply.sent(count)
            for waiter, _ in write.waiters:
                self.durables.append(waiter)
            for step in batch[0].steps:
                step.done = True
            for f, end in covers:
                if end > f.covered:
                    f.covered = end
        return [(batch, None)]

    def take_back(self, wake: bool) -> list[_Done]:
        """The batches the engine has finished, in order; with ``wake``,
        have it wake the reactor when it finishes the next.  After a
        failure, the failed batch and those behind it are undone (and come
        back with their errors, latest first, so that each one's retries go
        in front of what is pending and the oldest end up first)."""
        results = self.engine.poll(wake)
        if not results:
            return []
        batches = [self.batches.popleft() for _ in results]
        covers = [self.covers.popleft() for _ in results]
        failed = next((i for i, error in enumerate(results) if error), None)
        done: list[tuple[list[_Chunk], Failure | None]] = []
        durables = self.durables
        first = len(durables)
        for batch, covered in zip(batches[:failed], covers, strict=False):
            _done(batch, covered, durables)
            done.append((batch, None))
        if len(durables) > first:
            self._reply(durables[first:])
        if failed is not None:
            _undo(batches[failed:], results[failed])
            self.engine.resume()
            done.extend((batch, None) for batch in reversed(batches[failed:]))
        return done

    def _reply(self, durables: list[Durable]) -> None:
        """Send the replies of these durable adds, just taken back, that may
        go straight to their sockets (``Durable.direct``), all in one call,
        before any Python of theirs runs (see "Replies of batches taken
        back")."""
        replies, direct = _direct_replies(durables)
        if direct:
            sent = self.engine.reply(replies)
            self.replied_back += len(direct)
            for reply, count in zip(direct, sent, strict=True):
                reply.sent(count)


def _direct_replies(
    durables: Iterable[Durable],
) -> tuple[list[tuple[int, bytes]], list[DirectReply]]:
    """Of these durable adds' replies, those that may go straight to their
    sockets now (``Durable.direct``): each as the engine sends it, and as
    it is told how much of it went."""
    replies: list[tuple[int, bytes]] = []
    direct: list[DirectReply] = []
    for durable in durables:
        reply = durable.direct
        if reply is not None:
            fd = reply.socket()
            if fd >= 0:
                replies.append((fd, reply.reply))
                direct.append(reply)
    return replies, direct


#: The files a batch syncs in full, each with where its bytes end then.
_Covers = list[tuple[_SegmentFile, int]]
#: A batch taken back, with the failure of a crash on the thread.
_Done = tuple[list[_Chunk], Failure | None]


def _ops(
    batch: list[_Chunk], shares: bool, device: int | None = None
) -> tuple[Ops, bool, _Covers]:
    """The engine's ops for a batch: its appends, each write's buffers
    joined, and its syncs, shared (if ``shares``) where the appends only
    overwrite what an earlier sync made durable (see "Shared flushes"),
    with the file known to be on ``device`` or not, if that is known;
    whether something waits for the batch; and the files it syncs in
    full.  Last come the write-outs of files not synced that have gathered
    ``WRITE_OUT`` bytes since they last were (see "Writing out what is not
    synced")."""
    ops: Ops = []
    covers: _Covers = []
    notify = False
    written = 0
    gathered: list[_SegmentFile] = []
    for chunk in batch:
        for step in chunk.steps:
            if type(step) is _Write:
                append = _append_op(step)
                written += len(append[1])
                ops.append(append)
                if step.waiters:
                    notify = True
                f = step.file
                if f.offset - f.written_out >= WRITE_OUT:
                    gathered.append(f)
            else:
                assert type(step) is _Sync
                f = step.file
                fd = f.fd
                assert fd is not None
                f.written_out = f.offset
                if shares and f.offset <= f.covered:
                    on = f.device
                    if on == device:
                        # The engine need not ask where the file is.
                        ops.append((fd, True))
                        continue
                    if device is None or on < 0:
                        # Not known here: the engine asks.
                        ops.append((fd, False))
                        continue
                    # On another device: it cannot share the flush.
                ops.append((fd, None))
                covers.append((f, max(f.offset, f.zeroed)))
    for f in gathered:
        # Not if synced after that append, or already asked for.
        if f.offset - f.written_out >= WRITE_OUT:
            assert f.fd is not None
            ops.append((f.fd, f.offset))
            f.written_out = f.offset
    return ops, notify or written > _LINGER_BYTES, covers


def _append_op(write: _Write) -> tuple[int, bytes]:
    """The engine's op for a write: its buffers joined, into the one copy
    a retry needs (the items' own bytes need not be held as well until the
    batch is back), with where it starts noted and its file's offset moved
    past it."""
    f = write.file
    fd = f.fd
    # ``_engine_steps`` saw every file open.
    assert fd is not None
    data = b"".join(write.bufs)
    write.bufs = [data]
    write.offset_before = offset = f.offset
    f.offset = offset + len(data)
    return fd, data


def _lone_ops(chunk: _Chunk, shares: bool) -> tuple[Ops, _Covers]:
    """``_ops`` of a lone batch (see ``_EngineRunner.lone``), without the
    loop over kinds of step that any other batch needs: its one append,
    then the sync."""
    write, sync = chunk.steps
    assert type(write) is _Write and type(sync) is _Sync
    append = _append_op(write)
    f = sync.file
    fd = f.fd
    assert fd is not None
    f.written_out = f.offset
    if shares and f.offset <= f.covered:
        return [append, (fd, False)], []
    return [append, (fd, None)], [(f, max(f.offset, f.zeroed))]


def _done(batch: list[_Chunk], covers: _Covers, durables: list[Durable]) -> None:
    """A batch the engine ran: every step done, what its syncs made durable
    known, and its durable adds added to ``durables`` (each of its appends
    with waiters is synced in the same batch: see ``Journal.seal``)."""
    for chunk in batch:
        for step in chunk.steps:
            step.done = True
            if type(step) is _Write:
                for waiter, _ in step.waiters:
                    durables.append(waiter)
    for f, end in covers:
        if end > f.covered:
            f.covered = end


def _undo(batches: list[list[_Chunk]], error: int) -> None:
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


def shared_device(data_dir: str | None, shared_flushes: bool | None) -> int | None:
    """The device whose files may share a flush: ``data_dir``'s, if its
    file system allows it (see "Shared flushes"; asked once, as an engine
    starts), or if ``shared_flushes`` says so; ``None``: every file is
    synced in full."""
    if shared_flushes is False or data_dir is None:
        return None
    try:
        fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        shares = flush_shared(fd) if shared_flushes is None else True
        return os.fstat(fd).st_dev if shares else None
    except OSError:
        return None
    finally:
        os.close(fd)
