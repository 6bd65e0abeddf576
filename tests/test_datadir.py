"""Tests for erq.datadir: one server a data directory, private files in it."""

from __future__ import annotations

import os
import re
import stat

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from erq.config import ConfigError
from erq.datadir import (
    LOCK_FILE,
    DataDirectoryInUse,
    lock_data_dir,
    lock_data_dir_shared,
)
from erq.journal import FileOps, queue_dir
from erq.service import QueueService
from tests.support import (
    LOCALHOST,
    TwistdCase,
    TwistdProcess,
    command,
    free_port,
    reactor,
    temporary_directory,
)

#: Longer than a directory name may be, so its queue directory has a name file.
HASHED_NAME = "Q" * 250


def snapshot(directory: str) -> dict[str, bytes]:
    """Every file under ``directory``, by path, with its bytes."""
    files = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                files[path] = f.read()
    return files


def plant_bad_segment(data_dir: str) -> str:
    """A queue directory whose segment a replay would set aside as
    ``.bad``: proof, while it stays, that nothing replayed it."""
    directory = queue_dir(data_dir, "planted")
    os.makedirs(directory)
    path = os.path.join(directory, "00000001.seg")
    with open(path, "wb") as f:
        f.write(b"not a journal header at all")
    return path


async def put(service: QueueService, name: str, data: bytes) -> None:
    """A ``set``, once it is durable."""
    stored = service.delivery.put(name, data, 0, 0)
    assert isinstance(stored, Deferred)
    await stored


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def set_umask(case: SynchronousTestCase, umask: int) -> None:
    """The most common umask, under which a default file is 0644."""
    case.addCleanup(os.umask, os.umask(umask))


class LockTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.data_dir = os.path.abspath(self.mktemp())

    def service(self) -> QueueService:
        """A service on ``self.data_dir``, stopped when the test ends."""
        service = QueueService(reactor=reactor, data_dir=self.data_dir)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    def assert_in_use(self, error: DataDirectoryInUse, holder: str) -> None:
        self.assertEqual(
            str(error), f"data directory {self.data_dir} is in use by {holder}"
        )
        self.assertIsInstance(error, ConfigError)

    async def test_a_second_service_is_refused(self) -> None:
        first = self.service()
        first.startService()
        await put(first, "q", b"kept")
        planted = plant_bad_segment(self.data_dir)
        before = snapshot(self.data_dir)
        # The lock is on the open file, so a second open in this same
        # process conflicts as another process's would.
        second = self.service()
        with self.assertRaises(DataDirectoryInUse) as caught:
            second.startService()
        self.assert_in_use(caught.exception, f"another erq process (pid {os.getpid()})")
        # twistd starts it this way first.
        self.assertRaises(DataDirectoryInUse, second.privilegedStartService)
        self.assertFalse(second.running)
        self.assertIsNone(second.writer)
        self.assertEqual(second.queues, {})
        self.assertEqual(snapshot(self.data_dir), before)
        self.assertTrue(os.path.exists(planted))

    async def test_free_once_the_files_are_closed(self) -> None:
        first = self.service()
        first.startService()
        await put(first, "q", b"kept")
        stopping = first.stopService()
        # The writer still has to close its files: the lock waits for it.
        self.assertFalse(stopping.called)
        self.assertRaises(DataDirectoryInUse, lock_data_dir, self.data_dir)
        await stopping
        second = self.service()
        second.startService()
        queue = second.queue("q")
        assert queue is not None
        self.assertEqual(queue.items, 1)
        await second.stopService()
        # Never removed: a lock file removed under a waiter splits the lock.
        self.assertTrue(os.path.exists(os.path.join(self.data_dir, LOCK_FILE)))

    async def test_a_queue_may_be_named_like_the_lock(self) -> None:
        first = self.service()
        first.startService()
        await put(first, "lock", b"kept")
        await first.stopService()
        second = self.service()
        second.startService()
        queue = second.queue("lock")
        assert queue is not None
        self.assertEqual(queue.items, 1)

    async def test_taken_again_on_restart(self) -> None:
        first = self.service()
        first.startService()
        await first.stopService()
        first.startService()
        self.assertRaises(DataDirectoryInUse, self.service().startService)

    async def test_twistd_start_order_takes_it_once(self) -> None:
        first = self.service()
        first.privilegedStartService()
        first.startService()
        self.assertRaises(DataDirectoryInUse, self.service().startService)
        await first.stopService()
        lock_data_dir(self.data_dir).release()

    def test_lock_file_names_the_server(self) -> None:
        lock = lock_data_dir(self.data_dir)
        self.addCleanup(lock.release)
        with open(os.path.join(self.data_dir, LOCK_FILE)) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")

    def test_refused_while_erq_journal_reads(self) -> None:
        os.makedirs(self.data_dir)
        # No lock file: no server has used the directory, nothing to hold.
        self.assertIsNone(lock_data_dir_shared(self.data_dir))
        lock_data_dir(self.data_dir).release()
        reading = lock_data_dir_shared(self.data_dir)
        assert reading is not None
        self.addCleanup(reading.release)
        other = lock_data_dir_shared(self.data_dir)
        assert other is not None
        other.release()
        with self.assertRaises(DataDirectoryInUse) as caught:
            self.service().startService()
        self.assert_in_use(caught.exception, "another erq process (erq-journal)")


class ModeTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        set_umask(self, 0o022)
        self.data_dir = os.path.abspath(self.mktemp())

    def assert_private(self, data_dir: str) -> None:
        """Directories 0700 and files 0600 below ``data_dir``."""
        seen = 0
        for parent, directories, files in os.walk(data_dir):
            for name in directories:
                path = os.path.join(parent, name)
                self.assertEqual(mode(path), 0o700, path)
            for name in files:
                path = os.path.join(parent, name)
                self.assertEqual(mode(path), 0o600, path)
                seen += 1
        self.assertGreater(seen, 0)

    async def test_what_the_server_makes_is_private(self) -> None:
        service = QueueService(reactor=reactor, data_dir=self.data_dir)
        service.startService()
        for name in ("jobs", "jobs", HASHED_NAME):
            await put(service, name, b"x" * 100)
        await service.stopService()
        directory = queue_dir(self.data_dir, HASHED_NAME)
        self.assertIn("name", os.listdir(directory))
        self.assertEqual(mode(self.data_dir), 0o700)
        self.assert_private(self.data_dir)

        # Damage before the last record: replay saves the cut bytes.
        segment = os.path.join(queue_dir(self.data_dir, "jobs"), "00000001.seg")
        with open(segment, "r+b") as f:
            f.seek(20)
            f.write(b"\xff")
        service = QueueService(reactor=reactor, data_dir=self.data_dir)
        service.startService()
        await service.stopService()
        saved = [n for n in os.listdir(os.path.dirname(segment)) if ".cut-" in n]
        self.assertEqual(len(saved), 1)
        self.assert_private(self.data_dir)

    async def test_an_existing_directory_keeps_its_mode(self) -> None:
        os.makedirs(self.data_dir)
        os.chmod(self.data_dir, 0o750)
        service = QueueService(reactor=reactor, data_dir=self.data_dir)
        service.startService()
        await service.stopService()
        self.assertEqual(mode(self.data_dir), 0o750)

    def test_name_file_left_by_a_crash(self) -> None:
        os.makedirs(self.data_dir)
        path = os.path.join(self.data_dir, "name")
        with open(path + ".tmp", "wb") as f:
            f.write(b"half")
        self.assertEqual(mode(path + ".tmp"), 0o644)
        FileOps().write_file(path, b"q\n")
        self.assertEqual(mode(path), 0o600)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"q\n")


class TwistdLockTests(TwistdCase):
    async def test_a_second_server_is_refused(self) -> None:
        port = free_port()
        first = self.spawn(f"tcp:{port}:interface={LOCALHOST}")
        await self.wait_until_serving(first, port)
        stored = await deferToThread(command, port, b"set q 0 0 4\r\nkept\r\n")
        self.assertEqual(stored, b"STORED\r\n")
        data_dir = os.path.join(self.directory, "queues")
        planted = plant_bad_segment(data_dir)
        before = snapshot(data_dir)

        # Not where the first runs: its pid file would not say a thing.
        elsewhere = temporary_directory(self)
        second = self.spawn(
            f"tcp:{free_port()}:interface={LOCALHOST}", directory=elsewhere
        )
        code = await self.exit_code(second)
        output = self.output(second, elsewhere)
        self.assertNotEqual(code, 0, output)
        line = (
            f"data directory {data_dir} is in use by another erq process"
            f" (pid {self.pid(first)})"
        )
        self.assertRegex(output, re.compile(f"{re.escape(line)}$", re.MULTILINE))
        self.assertEqual(snapshot(data_dir), before)
        self.assertTrue(os.path.exists(planted))

        got = await deferToThread(command, port, b"get q\r\n", b"END\r\n")
        self.assertEqual(got, b"VALUE q 0 4\r\nkept\r\nEND\r\n")
        closed = await deferToThread(command, port, b"shutdown\r\n", b"")
        self.assertEqual(closed, b"")
        self.assertEqual(await self.exit_code(first), 0, self.log(first))

    def output(self, process: TwistdProcess, directory: str) -> str:
        text = process.output.decode("utf-8", "replace")
        log_file = os.path.join(directory, "twistd.log")
        if os.path.exists(log_file):
            with open(log_file, encoding="utf-8", errors="replace") as log:
                text += log.read()
        return text
