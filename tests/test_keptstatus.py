"""Tests for erq.keptstatus: the status decided at start, and kept across
restarts in the data directory."""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from erq.config import Config, ConfigError, ServerSettings
from erq.protocol import QueueFactory
from erq.service import QueueService
from erq.status import ServerStatus
from erq.storage import STATUS_FILE, Storage
from tests.support import FakeReactor


class StatusKeptTests(SynchronousTestCase):
    """The status lives in the data directory, and a restart keeps it."""

    def setUp(self) -> None:
        self.data_dir = os.path.abspath(self.mktemp())
        self.peer = IPv4Address("TCP", "127.0.0.1", 40000)

    def start(
        self,
        status: ServerStatus = ServerStatus.UP,
        data_dir: str | None = "",
        option: ServerStatus | None = None,
    ) -> QueueService:
        """A service started with ``status`` in its settings, and ``option``
        as ``--status``."""
        service = QueueService(
            Config(ServerSettings(status=status)),
            reactor=FakeReactor(),
            data_dir=self.data_dir if data_dir == "" else data_dir,
            overrides={} if option is None else {"status": option},
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def restart(self, service: QueueService, **options: Any) -> QueueService:
        self.successResultOf(service.stopService())
        return self.start(**options)

    def test_kept_across_a_restart(self) -> None:
        service = self.start()
        self.assertIs(service.status, ServerStatus.UP)
        self.assertIsNone(service.kept_status.set(ServerStatus.READONLY, self.peer))
        service = self.restart(service)
        self.assertIs(service.status, ServerStatus.READONLY)
        service.kept_status.set(ServerStatus.QUIESCENT, self.peer)
        self.assertIs(self.restart(service).status, ServerStatus.QUIESCENT)

    def test_the_setting_counts_at_the_first_start_only(self) -> None:
        service = self.start(ServerStatus.QUIESCENT)
        self.assertIs(service.status, ServerStatus.QUIESCENT)
        service = self.restart(service, status=ServerStatus.UP)
        self.assertIs(service.status, ServerStatus.QUIESCENT)
        service.kept_status.set(ServerStatus.READONLY, self.peer)
        service = self.restart(service, status=ServerStatus.UP)
        self.assertIs(service.status, ServerStatus.READONLY)

    def test_the_option_wins_over_what_was_kept(self) -> None:
        service = self.start(ServerStatus.READONLY)
        service = self.restart(service, status=ServerStatus.QUIESCENT)
        self.assertIs(service.status, ServerStatus.READONLY)
        service = self.restart(service, option=ServerStatus.UP)
        self.assertIs(service.status, ServerStatus.UP)
        # And is kept in its place.
        self.assertIs(self.restart(service).status, ServerStatus.UP)

    def test_in_memory_without_a_data_directory(self) -> None:
        service = self.start(ServerStatus.READONLY, data_dir=None)
        self.assertIs(service.status, ServerStatus.READONLY)
        self.assertIsNone(service.kept_status.set(ServerStatus.UP, self.peer))
        self.assertIs(service.status, ServerStatus.UP)

    def test_a_bad_status_file_stops_the_start(self) -> None:
        os.makedirs(self.data_dir)
        path = os.path.join(self.data_dir, STATUS_FILE)
        with open(path, "w") as file:
            file.write("sideways\n")
        service = QueueService(reactor=FakeReactor(), data_dir=self.data_dir)
        with self.assertRaises(ConfigError) as raised:
            service.startService()
        self.assertEqual(
            str(raised.exception),
            f'status file {path}: expected "up", "readonly" or "quiescent",'
            ' got "sideways"; --status replaces it',
        )
        self.assertFalse(service.running)
        # As it does.
        service = self.start(option=ServerStatus.READONLY)
        self.assertIs(service.status, ServerStatus.READONLY)
        with open(path) as file:
            self.assertEqual(file.read(), "readonly\n")

    def test_a_first_status_that_cannot_be_kept_stops_the_start(self) -> None:
        def read_only(
            storage: Storage, status: ServerStatus, data_dir: str | None = None
        ) -> None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        patched = self.patch(Storage, "save_status", read_only)
        service = QueueService(reactor=FakeReactor(), data_dir=self.data_dir)
        with self.assertRaises(ConfigError) as raised:
            service.startService()
        path = os.path.join(self.data_dir, STATUS_FILE)
        self.assertEqual(
            str(raised.exception),
            f"status file {path}: cannot write: Read-only file system",
        )
        # Nothing started, and the directory is free again.
        self.assertFalse(service.running)
        patched.restore()
        self.assertIs(self.start().status, ServerStatus.UP)

    def test_a_status_that_cannot_be_kept_holds_all_the_same(self) -> None:
        service = self.start()

        def full(status: ServerStatus, data_dir: str | None = None) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        assert service.storage is not None
        self.patch(service.storage, "save_status", full)
        client = QueueFactory(service).buildProtocol(None)
        transport = StringTransport(peerAddress=self.peer)
        client.makeConnection(transport)
        client.dataReceived(b"status readonly\r\n")
        self.assertEqual(
            transport.value(),
            b"SERVER_ERROR status not kept for a restart: No space left on device\r\n",
        )
        self.assertIs(service.status, ServerStatus.READONLY)

    def test_decided_once(self) -> None:
        """A second load (twistd's privileged start, then the start) reads
        nothing again and keeps a change made in between."""
        service = self.start(ServerStatus.READONLY)
        service.kept_status.set(ServerStatus.QUIESCENT, "the operator")
        with open(os.path.join(self.data_dir, STATUS_FILE), "w") as file:
            file.write("sideways\n")
        service.kept_status.load()
        self.assertIs(service.status, ServerStatus.QUIESCENT)

    def test_the_same_status_again_changes_nothing(self) -> None:
        service = self.start()
        path = os.path.join(self.data_dir, STATUS_FILE)
        os.remove(path)
        self.assertIsNone(service.kept_status.set(ServerStatus.UP, "the operator"))
        self.assertFalse(os.path.exists(path))
