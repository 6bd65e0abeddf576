"""Tests for erq.storage: a data directory and the journals in it."""

from __future__ import annotations

import os

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from erq.config import QueueSettings
from erq.datadir import DataDirectoryInUse
from erq.journal import Journal, JournalWriter
from erq.queue import Item
from erq.storage import START_HEAD, Storage
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
