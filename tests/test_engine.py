"""Tests for the journal writer's C engine (``erq.journal._engine``): its
groups and failures on their own, then the writer handing it appends and
fsyncs with a real reactor, and taking its failures back to the Python
loop."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
import socket
import sys
import threading
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from erq.journal import LINGER, Journal, JournalError, JournalWriter
from erq.journal import engine as engine_module
from erq.journal import files as files_module
from erq.queue import Item
from tests.support import poll_until

reactor: Any = _reactor

#: Seconds a test waits for the engine's eventfd before it fails.
DEADLINE = 10.0


def item(i: int) -> Item:
    return Item(i, b"item-%d" % i, 0, None, 1000.0 + i)


def dirty_pages(path: str, fd: int) -> int | None:
    """Pages of an open file not yet written out (cachestat(2), Linux 6.5),
    or ``None`` where that cannot be told: another system, or a file
    system that does not write to a disk."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        return None
    mounts = []
    with open("/proc/mounts") as f:
        for line in f:
            _, point, kind = line.split()[:3]
            if path == point or path.startswith(point.rstrip("/") + "/"):
                mounts.append((len(point), kind))
    if not mounts or max(mounts)[1] not in ("ext4", "xfs", "btrfs"):
        return None

    class Range(ctypes.Structure):
        _fields_ = [("offset", ctypes.c_uint64), ("length", ctypes.c_uint64)]

    class Stat(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_uint64)
            for name in ("cache", "dirty", "writeback", "evicted", "recent")
        ]

    stat = Stat()
    libc = ctypes.CDLL(None, use_errno=True)
    cachestat = 451
    if libc.syscall(cachestat, fd, ctypes.byref(Range(0, 0)), ctypes.byref(stat), 0):
        return None
    return int(stat.dirty)


#: File system types, as fstatfs says them.
EXT4 = 0xEF53
XFS = 0x58465342
TMPFS = 0x01021994


def file_system_type(fd: int) -> int | None:
    """The type of fd's file system, read with fstatfs(2) through libc
    (``f_type`` is the first field of ``struct statfs``), or ``None``
    where that cannot be read."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(512)
    if libc.fstatfs(fd, buffer) != 0:
        return None
    return int(ctypes.c_long.from_buffer(buffer).value) & 0xFFFFFFFF


def shares_flushes(fd: int) -> bool:
    return file_system_type(fd) in (EXT4, XFS)


def engine_class() -> Any:
    if engine_module.Engine is None:
        raise SkipTest("the erq.journal._engine extension is not built here")
    return engine_module.Engine


class EngineTests(TestCase):
    """The engine on a thread of the test's own."""

    def setUp(self) -> None:
        self.notify = os.eventfd(0, os.EFD_CLOEXEC)
        self.addCleanup(os.close, self.notify)
        self.engine = engine_class()(self.notify)
        self.thread = threading.Thread(target=self.engine.serve)
        self.thread.start()
        self.addCleanup(self.stop)
        path = os.path.abspath(self.mktemp())
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.addCleanup(os.close, self.fd)
        self.path = path

    def stop(self) -> None:
        self.engine.interrupt()
        self.thread.join(DEADLINE)
        self.assertFalse(self.thread.is_alive())

    def results(self, count: int) -> list[int]:
        """The outcomes of the next ``count`` jobs, waiting (bounded) for the
        engine's word on the eventfd."""
        found: list[int] = []
        while len(found) < count:
            found += self.engine.poll(True)
            if len(found) >= count:
                break
            ready, _, _ = select.select([self.notify], [], [], DEADLINE)
            self.assertTrue(ready, "the engine did not report")
            os.eventfd_read(self.notify)
        return found

    def test_jobs_append_in_order(self) -> None:
        self.engine.submit([(self.fd, b"one "), (self.fd, None)], True)
        self.engine.submit(
            [(self.fd, b"two "), (self.fd, b"three"), (self.fd, None)], True
        )
        self.assertEqual(self.results(2), [0, 0])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"one two three")

    def test_many_appends_to_several_files(self) -> None:
        # Runs longer than one writev takes, broken by changes of file.
        other_path = os.path.abspath(self.mktemp())
        other = os.open(other_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.addCleanup(os.close, other)
        expected: dict[int, list[bytes]] = {self.fd: [], other: []}
        for job in range(5):
            ops: list[tuple[int, bytes | None]] = []
            for i in range(150):
                fd = other if (i // 70) % 2 else self.fd
                data = b"%d.%d;" % (job, i)
                ops.append((fd, data))
                expected[fd].append(data)
            ops += [(self.fd, None), (other, None)]
            self.engine.submit(ops, True)
        self.assertEqual(self.results(5), [0] * 5)
        for fd, path in ((self.fd, self.path), (other, other_path)):
            with open(path, "rb") as f:
                self.assertEqual(f.read(), b"".join(expected[fd]))

    def test_a_write_out_starts_appends_going_to_disk(self) -> None:
        # A segment is fsynced when it is closed, whatever the policy: that
        # fsync must not find all of it still to be written.
        if dirty_pages(self.path, self.fd) is None:
            raise SkipTest("the kernel cannot say which pages are dirty here")
        self.engine.submit([(self.fd, bytes(4 << 20)), (self.fd, 4 << 20)], True)
        self.assertEqual(self.results(1), [0])
        dirty = dirty_pages(self.path, self.fd)
        assert dirty is not None
        # Of 1024 pages.
        self.assertLess(dirty, 64)

    def test_appends_alone_are_left_to_the_kernel(self) -> None:
        # Writing out every batch would send a partly filled page to the
        # disk again with each one (see "Writing out what is not synced"
        # in erq.journal.engine).
        if dirty_pages(self.path, self.fd) is None:
            raise SkipTest("the kernel cannot say which pages are dirty here")
        self.engine.submit([(self.fd, bytes(4 << 20))], True)
        self.assertEqual(self.results(1), [0])
        dirty = dirty_pages(self.path, self.fd)
        assert dirty is not None
        # Of 1024 pages: the kernel's own write-back takes seconds to come.
        self.assertGreater(dirty, 512)

    def open_files(self, count: int) -> list[tuple[int, str]]:
        """``count`` more files to append to, closed when the test ends."""
        opened = []
        for _ in range(count):
            path = os.path.abspath(self.mktemp())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.addCleanup(os.close, fd)
            opened.append((fd, path))
        return opened

    def test_the_files_of_a_group_are_synced_at_once(self) -> None:
        # One fdatasync after another would cost the sum of their latencies.
        files = self.open_files(5)
        self.assertEqual(self.engine.parallel_groups(), 0)
        self.engine.submit([(fd, b"one") for fd, _ in files], True)
        self.engine.submit([(fd, None) for fd, _ in files], True)
        self.assertEqual(self.results(2), [0, 0])
        # The two jobs may run as one group or two; only the second syncs.
        self.assertEqual(self.engine.parallel_groups(), 1)
        # One file alone is synced on the engine's own thread.
        self.engine.submit([(self.fd, b"x"), (self.fd, None)], True)
        self.assertEqual(self.results(1), [0])
        self.assertEqual(self.engine.parallel_groups(), 1)
        for _, path in files:
            with open(path, "rb") as f:
                self.assertEqual(f.read(), b"one")

    def test_many_groups_of_parallel_syncs(self) -> None:
        # The syncers go back to waiting between groups, and a group ends
        # only once each of its files is synced.
        files = self.open_files(12)
        for round_ in range(40):
            self.engine.submit(
                [(fd, b"%d;" % round_) for fd, _ in files]
                + [(fd, None) for fd, _ in files],
                True,
            )
            self.assertEqual(self.results(1), [0])
        self.assertEqual(self.engine.parallel_groups(), 40)
        expected = b"".join(b"%d;" % round_ for round_ in range(40))
        for _, path in files:
            with open(path, "rb") as f:
                self.assertEqual(f.read(), expected)

    def test_a_failed_sync_among_several_fails_the_group(self) -> None:
        # fdatasync of a pipe fails (EINVAL), whichever thread runs it.
        files = self.open_files(3)
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.addCleanup(os.close, write_end)
        ops: list[tuple[int, bytes | None]] = [(fd, None) for fd, _ in files]
        ops.insert(1, (write_end, None))
        self.engine.submit(ops, True)
        self.assertEqual(self.results(1), [errno.EINVAL])
        # Halted, as after any failure, until resumed; then syncing again.
        self.engine.submit([(fd, None) for fd, _ in files], True)
        self.assertEqual(self.results(1), [errno.ECANCELED])
        self.engine.resume()
        self.engine.submit([(fd, None) for fd, _ in files], True)
        self.assertEqual(self.results(1), [0])

    def test_nothing_runs_after_a_failure_until_resumed(self) -> None:
        read_only = os.open(self.path, os.O_RDONLY)
        self.addCleanup(os.close, read_only)
        self.engine.submit([(read_only, b"refused")], True)
        self.assertEqual(self.results(1), [errno.EBADF])
        # Halted: nothing runs, however good.
        self.engine.submit([(self.fd, b"held back")], True)
        self.assertEqual(self.results(1), [errno.ECANCELED])
        self.engine.resume()
        self.engine.submit([(self.fd, b"again"), (self.fd, None)], True)
        self.assertEqual(self.results(1), [0])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"again")

    def test_a_job_run_at_once_on_the_callers_thread(self) -> None:
        self.assertEqual(self.engine.run([(self.fd, b"now"), (self.fd, None)]), 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"now")
        # Nothing to report, nobody woken.
        self.assertEqual(self.engine.poll(False), [])
        self.assertEqual(select.select([self.notify], [], [], 0)[0], [])
        # Its failure is its caller's; the engine goes on.
        read_only = os.open(self.path, os.O_RDONLY)
        self.addCleanup(os.close, read_only)
        self.assertEqual(self.engine.run([(read_only, b"refused")]), errno.EBADF)
        self.engine.submit([(self.fd, b" later")], True)
        self.assertEqual(self.results(1), [0])

    def test_replies_sent_once_the_job_is_durable(self) -> None:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reply = [(ours.fileno(), b"STORED\r\n")]
        ops = [(self.fd, b"now"), (self.fd, None)]
        self.assertEqual(self.engine.run_and_reply(ops, reply), (0, [8]))
        self.assertEqual(theirs.recv(100), b"STORED\r\n")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"now")
        # A job that fails sends nothing.
        read_only = os.open(self.path, os.O_RDONLY)
        self.addCleanup(os.close, read_only)
        refused = [(read_only, b"refused"), (read_only, None)]
        self.assertEqual(self.engine.run_and_reply(refused, reply), (errno.EBADF, [0]))
        self.assertEqual(select.select([theirs], [], [], 0)[0], [])
        self.assertRaises(
            TypeError, self.engine.run_and_reply, ops, [(ours.fileno(), None)]
        )

    def test_a_reply_goes_as_far_as_its_socket_takes_it(self) -> None:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = b"x" * (8 << 20)
        error, (sent,) = self.engine.run_and_reply(
            [(self.fd, b"a")], [(ours.fileno(), big)]
        )
        # Without blocking: what the buffer took.
        self.assertEqual(error, 0)
        self.assertGreater(sent, 0)
        self.assertLess(sent, len(big))
        # A socket whose peer is gone takes nothing, and the job stands.
        theirs.close()
        self.assertEqual(
            self.engine.run_and_reply([(self.fd, b"b")], [(ours.fileno(), b"x")]),
            (0, [0]),
        )
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"ab")

    def test_replies_of_jobs_taken_back(self) -> None:
        """``reply`` sends replies on its own, as ``run_and_reply`` does
        once its job is durable, whether or not the engine is busy."""
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        full, peer = socket.socketpair()
        self.addCleanup(full.close)
        full.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = b"x" * (8 << 20)
        self.engine.submit([(self.fd, b"queued")], False)
        sent = self.engine.reply(
            [(ours.fileno(), b"STORED\r\n"), (full.fileno(), big), (-1, b"gone")]
        )
        self.assertEqual(sent[0], 8)
        # Without blocking: what the buffer took; nothing to a bad descriptor.
        self.assertGreater(sent[1], 0)
        self.assertLess(sent[1], len(big))
        self.assertEqual(sent[2], 0)
        self.assertEqual(theirs.recv(100), b"STORED\r\n")
        # A socket whose peer is gone takes nothing.
        peer.close()
        self.assertEqual(self.engine.reply([(full.fileno(), b"x")]), [0])
        self.assertEqual(self.engine.reply([]), [])
        self.assertRaises(TypeError, self.engine.reply, [(ours.fileno(), None)])
        self.assertEqual(self.results(1), [0])

    def test_no_job_at_once_while_the_engine_is_not_idle(self) -> None:
        # Halted after a failure, with its outcome taken: still not idle.
        read_only = os.open(self.path, os.O_RDONLY)
        self.addCleanup(os.close, read_only)
        self.engine.submit([(read_only, b"refused")], True)
        self.assertEqual(self.results(1), [errno.EBADF])
        self.assertRaises(RuntimeError, self.engine.run, [(self.fd, b"x")])
        self.engine.resume()
        self.assertEqual(self.engine.run([(self.fd, b"x")]), 0)

    def sharing(self) -> Any:
        """An engine like the test's, but told that the files on the test's
        device may share a flush, serving on a thread of its own."""
        if dirty_pages(self.path, self.fd) is None or not shares_flushes(self.fd):
            raise SkipTest("shared syncs are for ext4 and xfs on Linux")
        return self.serving(os.fstat(self.fd).st_dev)

    def serving(self, shared_device: int) -> Any:
        """An engine like the test's, told that files on ``shared_device``
        may share a flush, serving on a thread of its own in its place."""
        engine = engine_class()(self.notify, shared_device=shared_device)
        self.stop()
        self.engine = engine
        self.thread = threading.Thread(target=engine.serve)
        self.thread.start()
        return engine

    def test_shared_syncs_ride_on_one_flush(self) -> None:
        engine = self.sharing()
        files = self.open_files(4)
        engine.submit(
            [(fd, b"one") for fd, _ in files] + [(fd, False) for fd, _ in files],
            True,
        )
        self.assertEqual(self.results(1), [0])
        # One of them is fdatasynced, and its flush covers the others.
        self.assertEqual(engine.shared_syncs(), 3)
        # Its write-out started with theirs, not once they were on the
        # disk: its write overlaps theirs instead of following them.
        self.assertEqual(engine.started_together(), 4)
        self.assertEqual(self.dirty(files), 0)
        # Beside a full sync, every shared one rides on it.
        engine.submit(
            [(fd, b"two") for fd, _ in files]
            + [(files[0][0], None)]
            + [(fd, False) for fd, _ in files[1:]],
            True,
        )
        self.assertEqual(self.results(1), [0])
        self.assertEqual(engine.shared_syncs(), 6)
        # So did the write-out of the file synced in full.
        self.assertEqual(engine.started_together(), 8)
        self.assertEqual(self.dirty(files), 0)
        # A file alone is fdatasynced: there is no other flush to share.
        engine.submit([(self.fd, b"x"), (self.fd, False)], True)
        self.assertEqual(self.results(1), [0])
        self.assertEqual(engine.shared_syncs(), 6)
        self.assertEqual(engine.started_together(), 8)
        self.assertEqual(self.dirty([(self.fd, self.path)]), 0)
        for _, path in files:
            with open(path, "rb") as f:
                self.assertEqual(f.read(), b"onetwo")

    def dirty(self, files: list[tuple[int, str]]) -> int:
        total = 0
        for fd, path in files:
            dirty = dirty_pages(path, fd)
            assert dirty is not None
            total += dirty
        return total

    def test_what_cannot_share_a_flush_is_synced_in_full(self) -> None:
        # A pipe is on no disk: its shared sync becomes an fdatasync, which
        # fails (EINVAL) as it always does.
        engine = self.sharing()
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.addCleanup(os.close, write_end)
        engine.submit([(self.fd, None), (write_end, False)], True)
        self.assertEqual(self.results(1), [errno.EINVAL])
        self.assertEqual(engine.shared_syncs(), 0)

    def test_no_shared_flush_unless_told_a_device(self) -> None:
        # Made without a device whose files may share a flush (the file
        # system is not ext4 or xfs), the engine syncs every file in full.
        files = self.open_files(4)
        self.engine.submit(
            [(fd, b"one") for fd, _ in files] + [(fd, False) for fd, _ in files],
            True,
        )
        self.assertEqual(self.results(1), [0])
        self.assertEqual(self.engine.shared_syncs(), 0)

    def engine_of_another_device(self) -> Any:
        """The test's engine, told that files share a flush on a device
        that is not the one its files are on."""
        return self.serving(os.fstat(self.fd).st_dev + 1)

    def test_no_shared_flush_for_files_on_another_device(self) -> None:
        # A queue's directory mounted from another disk: the data
        # directory's flush does not cover its files.
        engine = self.engine_of_another_device()
        files = self.open_files(4)
        engine.submit(
            [(fd, b"one") for fd, _ in files] + [(fd, False) for fd, _ in files],
            True,
        )
        self.assertEqual(self.results(1), [0])
        self.assertEqual(engine.shared_syncs(), 0)

    def test_a_file_known_on_the_device_is_not_asked_again(self) -> None:
        # (fd, True) says that the caller asked the file's device once,
        # when it opened it: the engine takes its word (here against the truth,
        # which is how the test sees that it did not ask).
        engine = self.engine_of_another_device()
        files = self.open_files(4)
        engine.submit(
            [(fd, b"one") for fd, _ in files] + [(fd, True) for fd, _ in files],
            True,
        )
        self.assertEqual(self.results(1), [0])
        self.assertEqual(engine.shared_syncs(), 3)
        # Asked for twice: a full sync wins over a shared one, and a file
        # known to be on the device is, however else it is asked for.
        (a, _), (b, _), (c, _), _ = files
        engine.submit(
            [(fd, b"two") for fd in (a, b, c)]
            + [(a, True), (a, None), (b, False), (b, True), (c, True)],
            True,
        )
        self.assertEqual(self.results(1), [0])
        # a in full, on no device the engine knows: of b and c, one is
        # fdatasynced too, and its flush covers the other.
        self.assertEqual(engine.shared_syncs(), 4)
        for _, path in files:
            with open(path, "rb") as f:
                self.assertIn(f.read(), (b"one", b"onetwo"))

    def test_known_on_no_shared_device_is_synced_in_full(self) -> None:
        # An engine told of no device shares no flush, whatever it is told
        # of the files.
        files = self.open_files(4)
        self.engine.submit(
            [(fd, b"one") for fd, _ in files] + [(fd, True) for fd, _ in files],
            True,
        )
        self.assertEqual(self.results(1), [0])
        self.assertEqual(self.engine.shared_syncs(), 0)

    def test_which_file_systems_share_a_flush(self) -> None:
        # ext4 and xfs, as fstatfs tells them apart (read here on its own).
        directory = os.open(os.path.dirname(self.path), os.O_RDONLY)
        self.addCleanup(os.close, directory)
        kind = file_system_type(directory)
        flush_shared = engine_module.flush_shared
        self.assertEqual(flush_shared(directory), kind in (EXT4, XFS))
        if kind == EXT4:
            # This disk, where the tests run.
            self.assertTrue(flush_shared(directory))
        self.assertRaises(OSError, flush_shared, -1)

    def test_tmpfs_shares_no_flush(self) -> None:
        try:
            shm = os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            raise SkipTest("no /dev/shm here") from None
        self.addCleanup(os.close, shm)
        if file_system_type(shm) != TMPFS:
            raise SkipTest("/dev/shm is not a tmpfs here")
        self.assertFalse(engine_module.flush_shared(shm))

    def test_bad_ops_are_refused_on_submit(self) -> None:
        for ops in (
            [(self.fd, "text")],
            [(self.fd,)],
            ["op"],
            [(self.fd, 1.5)],
            [(self.fd, -1)],
        ):
            self.assertRaises(TypeError, self.engine.submit, ops, True)
            self.assertRaises(TypeError, self.engine.run, ops)
        self.assertEqual(self.engine.poll(False), [])


class WriterEngineTests(TestCase):
    """A writer with its own thread, on the real reactor."""

    def setUp(self) -> None:
        engine_class()
        self.dir = os.path.abspath(self.mktemp())

    def writer(self) -> JournalWriter:
        writer = JournalWriter(reactor, retry_delay=0.01)
        writer.start()
        self.addCleanup(writer.stop)
        return writer

    async def opened(self) -> tuple[JournalWriter, Journal]:
        """A writer and an always-synced journal whose first item is durable:
        its file is open (on the Python loop), so appends can go to the
        engine."""
        writer = self.writer()
        journal = Journal(self.dir, writer, sync="always")
        first = journal.add(item(1))
        assert first is not None
        await first
        return writer, journal

    def replayed(self) -> list[bytes]:
        # Replay may journal (a cut, say): the writer needs stopping too.
        journal = Journal(self.dir, self.writer(), sync="never")
        replayed = journal.replay(1 << 30)
        self.assertEqual(replayed.damage, [])
        return [i.data for i in replayed.items]

    async def test_durable_adds_go_through_the_engine(self) -> None:
        writer, journal = await self.opened()
        self.assertTrue(writer._dispatch.uses_engine)
        before = writer._dispatch.engine_batches
        adds = [journal.add(item(i)) for i in range(2, 40)]
        await gatherResults([d for d in adds if d is not None])
        # The first append opened the file on the Python loop; the rest went
        # to the engine.
        self.assertGreater(writer._dispatch.engine_batches, before)
        await journal.close()
        self.assertEqual(self.replayed(), [b"item-%d" % i for i in range(1, 40)])

    def test_the_data_directory_says_whether_files_share_a_flush(self) -> None:
        os.makedirs(self.dir)
        directory = os.open(self.dir, os.O_RDONLY)
        self.addCleanup(os.close, directory)
        expected = shares_flushes(directory)
        for writer, shares in (
            (JournalWriter(reactor, data_dir=self.dir), expected),
            # Told otherwise (or with no data directory to ask): never.
            (JournalWriter(reactor, data_dir=self.dir, shared_flushes=False), False),
            (JournalWriter(reactor), False),
        ):
            writer.start()
            self.addCleanup(writer.stop)
            self.assertTrue(writer._dispatch.uses_engine)
            self.assertEqual(writer._dispatch.shares_flushes, shares)

    async def shared_syncs(self, shared_flushes: bool | None) -> int:
        """Rounds of durable adds to four queues, each round one batch: the
        syncs the engine let share another file's flush."""
        writer = JournalWriter(
            reactor, linger=LINGER, data_dir=self.dir, shared_flushes=shared_flushes
        )
        writer.start()
        self.addCleanup(writer.stop)
        journals = [
            Journal(os.path.join(self.dir, name), writer, sync="always")
            for name in "abcd"
        ]
        for round_ in range(4):
            adds = [journal.add(item(round_)) for journal in journals]
            await gatherResults([d for d in adds if d is not None])
        engine = writer._dispatch.engine
        assert engine is not None
        return int(engine.engine.shared_syncs())  # type: ignore[attr-defined]

    async def test_files_share_a_flush_where_the_file_system_allows(self) -> None:
        os.makedirs(self.dir)
        directory = os.open(self.dir, os.O_RDONLY)
        self.addCleanup(os.close, directory)
        if not shares_flushes(directory):
            raise SkipTest("shared syncs are for ext4 and xfs on Linux")
        self.assertGreater(await self.shared_syncs(None), 0)

    async def test_files_told_not_to_share_a_flush_do_not(self) -> None:
        self.assertEqual(await self.shared_syncs(False), 0)

    async def test_zeros_ahead_keep_appends_in_order(self) -> None:
        # Zeros every few records: appends that need them go to the Python
        # loop, which must wait for the batches the engine has.
        self.patch(files_module, "_ZERO_AHEAD", 1024)
        writer, journal = await self.opened()
        adds = []
        for i in range(2, 2000):
            adds.append(journal.add(item(i)))
            if i % 2 == 0:
                # The end of a turn: a batch leaves.
                await deferLater(reactor, 0, lambda: None)
        await gatherResults([d for d in adds if d is not None])
        self.assertGreater(writer._dispatch.engine_batches, 0)
        await journal.close()
        self.assertEqual(self.replayed(), [b"item-%d" % i for i in range(1, 2000)])

    async def test_a_backlog_in_the_engine_is_said_drained(self) -> None:
        writer, journal = await self.opened()
        journal.sync = "never"
        writer.max_backlog = 1000
        before = writer._dispatch.engine_batches
        for i in range(2, 202):
            journal.add(item(i))
        # The end of the turn: the batch goes to the engine, which does not
        # wake the reactor for records nothing waits for.
        await deferLater(reactor, 0, lambda: None)
        self.assertGreater(writer._dispatch.engine_batches, before)
        self.assertGreater(writer.backlog, 1000)
        drained: Deferred[int] = Deferred()
        writer.when_drained(lambda: drained.callback(writer.backlog))
        self.assertEqual(await drained, 0)
        await journal.close()
        self.assertEqual(self.replayed(), [b"item-%d" % i for i in range(1, 202)])

    async def test_a_batch_in_the_engine_holds_its_records_once(self) -> None:
        writer, journal = await self.opened()
        journal.sync = "never"
        datas = [b"item %d " % i * 50 for i in range(2, 102)]
        for i in range(2, 102):
            journal.add(Item(i, datas[i - 2], 0, None, 1.0), in_memory=False)
        # The end of the turn: the batch goes to the engine, as one copy.
        await deferLater(reactor, 0, lambda: None)
        self.assertEqual(writer._dispatch.on_thread, 1)
        # Referred to by the list only, as bytes nothing else knows are.
        controls = [bytes(400)]
        self.assertEqual(
            {sys.getrefcount(d) for d in datas}, {sys.getrefcount(c) for c in controls}
        )
        await journal.close()

    async def test_stop_takes_back_batches_nothing_waits_for(self) -> None:
        writer, journal = await self.opened()
        journal.sync = "never"
        for i in range(2, 200):
            # No one waits for these: the engine does not wake the reactor.
            self.assertIsNone(journal.add(item(i)))
            # A turn of the reactor, so that batches leave one by one.
            await deferLater(reactor, 0, lambda: None)
        self.assertTrue(writer._dispatch.uses_engine)
        self.assertGreater(writer._dispatch.engine_batches, 0)
        await writer.stop()
        self.assertEqual(self.replayed(), [b"item-%d" % i for i in range(1, 200)])

    async def test_a_failed_append_is_undone_and_retried(self) -> None:
        _, journal = await self.opened()
        segment = journal._current
        assert segment is not None and segment.file.fd is not None
        fd = segment.file.fd
        # Writes to the segment fail with EBADF until its fd is put back.
        writable = os.dup(fd)
        read_only = os.open(segment.file.path, os.O_RDONLY)
        os.dup2(read_only, fd)
        os.close(read_only)
        refused = journal.add(item(2))
        assert refused is not None
        with self.assertRaises(JournalError) as caught:
            await refused
        self.assertEqual(str(caught.exception), "bad file descriptor")
        self.assertTrue(segment.file.needs_cut)
        os.dup2(writable, fd)
        os.close(writable)
        # The retry timer finds the file writable again.
        await poll_until(lambda: journal.failing is None)
        after = journal.add(item(3))
        assert after is not None
        await after
        await journal.close()
        # The refused item went out again with the retry, followed by the
        # record of its removal: nothing is torn, doubled or refused.
        self.assertEqual(self.replayed(), [b"item-1", b"item-3"])
