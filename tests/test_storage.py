"""Tests for erq.storage: a data directory and the journals in it."""

from __future__ import annotations

import os
from typing import Any, cast

from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from erq.config import ConfigError, QueueSettings
from erq.datadir import DataDirectoryInUse
from erq.journal import Journal, JournalWriter, queue_dir
from erq.queue import Item
from erq.status import ServerStatus
from erq.storage import START_HEAD, STATUS_FILE, Storage
from tests.support import FakeReactor, SyncPool, close_writer


class StorageTests(SynchronousTestCase):
    def storage(self, directory: str) -> Storage:
        storage = Storage(FakeReactor(), directory, segment_size=4096)
        pool = SyncPool()
        storage.writer = JournalWriter(storage.reactor, pool)  # type: ignore[arg-type]
        self.addCleanup(close_writer, storage.writer, pool)
        self.addCleanup(storage.release)
        return storage

    def test_one_holder_at_a_time(self) -> None:
        directory = os.path.abspath(self.mktemp())
        first, second = self.storage(directory), self.storage(directory)
        first.hold()
        self.assertRaises(DataDirectoryInUse, second.hold)
        first.release()
        second.hold()

    def test_a_queue_not_journaled_gets_no_journal(self) -> None:
        storage = self.storage(os.path.abspath(self.mktemp()))
        self.assertIsNone(storage.journal("q", QueueSettings(journal=False)))
        self.assertIsInstance(storage.journal("q", QueueSettings()), Journal)

    def test_replay_gives_back_every_queue(self) -> None:
        directory = os.path.abspath(self.mktemp())
        storage = self.storage(directory)
        storage.hold()
        for name in ("b", "a"):
            journal = storage.journal(name, QueueSettings(sync_journal="never"))
            assert journal is not None
            journal.add(Item(1, name.encode(), 0, None, 1.0))
            journal.close()
        storage.release()
        again = self.storage(directory)
        again.hold()
        replayed = list(again.replay(lambda name: QueueSettings(), Logger()))
        self.assertEqual(
            [(name, [i.data for i in r.items]) for name, _, r in replayed],
            [("a", [b"a"]), ("b", [b"b"])],
        )
        self.assertTrue(again.replayed)

    def test_stop_summarizes_the_open_segments(self) -> None:
        """Every queue's open segment gets its summary as the server stops,
        zeros written ahead and all, so that the next start takes every
        segment from its summary; appends after it and a crash leave it
        unmatched, and that segment is read."""
        directory = os.path.abspath(self.mktemp())
        storage = self.storage(directory)
        storage.hold()
        # The queues hold their journals (the storage does not).
        journals = [
            storage.journal(name, QueueSettings(sync_journal="always"))
            for name in ("a", "b")
        ]
        for journal in journals:
            assert journal is not None
            for i in range(1, 201):
                journal.add(Item(i, b"x" * 50, 0, None, 1.0))
        storage.stop()
        again = self.storage(directory)
        again.hold()
        events: list[dict[str, Any]] = []
        replayed = list(
            again.replay(
                lambda name: QueueSettings(),
                Logger(observer=cast(ILogObserver, events.append)),
            )
        )
        self.assertIn(
            "10 of 10 segments taken from their summaries", formatEvent(events[-1])
        )
        for name, journal, state in replayed:
            segments = sorted(
                n for n in os.listdir(queue_dir(directory, name)) if n.endswith(".seg")
            )
            self.assertGreater(len(segments), 1)
            self.assertEqual((state.segments, state.summarized), (len(segments),) * 2)
            self.assertEqual(len(state.items) + state.behind_items, 200)
            assert journal is not None
            journal.add(Item(201, b"y", 0, None, 1.0))
        # A crash: nothing more is written as the server stops.
        again.release()
        last = self.storage(directory)
        last.hold()
        for name, _, state in last.replay(lambda name: QueueSettings(), Logger()):
            segments = sorted(
                n for n in os.listdir(queue_dir(directory, name)) if n.endswith(".seg")
            )
            self.assertEqual(
                (state.segments, state.summarized), (len(segments), len(segments) - 1)
            )
            self.assertEqual(len(state.items) + state.behind_items, 201)

    def test_replay_reads_only_the_head(self) -> None:
        """A deep queue starts with at most START_HEAD bytes in memory,
        whatever its max_memory_size; the rest is counted, to be read back
        as it drains.  A queue no longer journaled takes all of it."""
        directory = os.path.abspath(self.mktemp())
        storage = self.storage(directory)
        storage.hold()
        journal = storage.journal("q", QueueSettings(sync_journal="never"))
        assert journal is not None
        size = 1000
        count = 3 * START_HEAD // size
        for i in range(1, count + 1):
            journal.add(Item(i, b"x" * size, 0, None, 1.0))
        journal.close()
        storage.release()
        # The item that reaches the limit is held too.
        for settings, in_memory in (
            (QueueSettings(max_memory_size=100 * START_HEAD), START_HEAD // size + 1),
            (
                QueueSettings(max_memory_size=START_HEAD // 2),
                START_HEAD // 2 // size + 1,
            ),
            (QueueSettings(journal=False), count),
        ):
            again = self.storage(directory)
            again.hold()
            [(_, _, replayed)] = list(
                again.replay({"q": settings}.__getitem__, Logger())
            )
            again.release()
            self.assertEqual(len(replayed.items), in_memory)
            self.assertEqual(len(replayed.items) + replayed.behind_items, count)
            self.assertEqual(
                replayed.behind_bytes, (count - len(replayed.items)) * size
            )


class StatusFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.storage = Storage(FakeReactor(), self.directory)
        self.path = os.path.join(self.directory, STATUS_FILE)

    def test_none_before_a_first_start(self) -> None:
        self.assertIsNone(self.storage.read_status())

    def test_kept_whole_and_private(self) -> None:
        self.storage.save_status(ServerStatus.QUIESCENT)
        self.storage.save_status(ServerStatus.READONLY)
        self.assertIs(self.storage.read_status(), ServerStatus.READONLY)
        with open(self.path, "rb") as file:
            self.assertEqual(file.read(), b"readonly\n")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(sorted(os.listdir(self.directory)), [STATUS_FILE])

    def test_a_directory_seen_from_elsewhere(self) -> None:
        elsewhere = Storage(FakeReactor(), "not-here")
        elsewhere.save_status(ServerStatus.READONLY, self.directory)
        self.assertIs(elsewhere.read_status(self.directory), ServerStatus.READONLY)

    def test_what_is_not_a_status_names_the_file(self) -> None:
        for data, shown in ((b"sideways\n", '"sideways"'), (b"", '""')):
            with open(self.path, "wb") as file:
                file.write(data)
            with self.assertRaises(ConfigError) as raised:
                self.storage.read_status()
            self.assertEqual(
                str(raised.exception),
                f"status file {self.path}: expected "
                f'"up", "readonly" or "quiescent", got {shown}',
            )

    def test_not_taken_for_a_queue(self) -> None:
        self.storage.save_status(ServerStatus.READONLY)
        self.storage.hold()
        self.addCleanup(self.storage.release)
        self.assertEqual(
            list(self.storage.replay(lambda name: QueueSettings(), Logger())), []
        )
